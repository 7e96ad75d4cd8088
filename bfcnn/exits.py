"""What a command's outcome becomes: exit code 0 on success, 2 for bad input (BfcnnError: a short message, no
traceback), 1 for a failure inside a run (RunError, or a bug: then with its traceback), 130 when interrupted."""

from __future__ import annotations

import os
import sys
import traceback

from .errors import BfcnnError, RunError


def guarded(fn) -> int:
    """Run a command (fn) after the process setup every command shares, and map what it raises onto exit codes."""
    from .devices import keep_freed_memory

    keep_freed_memory()
    try:
        result = fn()
        return result if isinstance(result, int) else 0
    except BfcnnError as error:
        print(f"bfcnn: error: {error}", file=sys.stderr)
        return 2
    except RunError as error:
        print(f"bfcnn: run failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bfcnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bfcnn schema | head`: the reader left; say nothing, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE, what a shell reports for a tool a closed pipe stopped
    except Exception:  # a bug, not bad input: keep the traceback for the report
        traceback.print_exc()
        return 1
