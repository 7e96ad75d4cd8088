"""Errors that the CLI turns into exit codes: 2 for bad input, 1 for a failure inside a run."""

from pathlib import Path


class BfcnnError(Exception):
    """Bad input from the user (config, path, argument): exit code 2, short message, no traceback."""

    exit_code = 2


class ConfigError(BfcnnError):
    """A config that does not validate. Holds every problem found, each with its path."""

    def __init__(self, problems):
        self.problems = list(problems) if not isinstance(problems, str) else [problems]
        super().__init__("\n".join(self.problems))


class UnknownComponentError(BfcnnError):
    pass


class DuplicateComponentError(BfcnnError):
    pass


class MissingDependencyError(BfcnnError):
    """A component needs an optional dependency that is not installed; the message says what to install."""


class RunError(Exception):
    """A failure inside a run (not the user's input): exit code 1."""

    exit_code = 1


def output_folder(path) -> Path:
    """Create the folder where results go (parents too); a path that cannot be one is bad input, not a bug."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:  # the folder, or one of its parents, is a file
        raise BfcnnError(f"cannot create the output folder {path}: {error.filename} is a file") from None
    except NotADirectoryError:
        raise BfcnnError(f"cannot create the output folder {path}: a folder above it is a file") from None
    except OSError as error:  # no permission, read-only file system
        raise BfcnnError(f"cannot create the output folder {path}: {error.strerror}") from None
    return path
