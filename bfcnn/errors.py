"""Errors that the CLI turns into exit codes: 2 for bad input, 1 for a failure inside a run."""


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
