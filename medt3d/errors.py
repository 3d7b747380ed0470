"""Which exceptions are a user's mistake (a bad file, a bad value) rather than a bug, and the exit codes.

The command line prints these as one line with exit code 2; pipelines and batch runs pass them
through unwrapped, so that the message naming the file reaches the user. Faults of the machine
(a read-only or full disk, no memory) are one line with exit code 3.
"""

from __future__ import annotations

import zipfile

__all__ = ["EXIT_BAD_INPUT", "EXIT_CASES_FAILED", "EXIT_ENVIRONMENT", "EXIT_INTERRUPTED", "ENVIRONMENT_ERRORS",
           "USER_ERRORS"]

#: Exit codes of every command (documented in the README).
EXIT_CASES_FAILED = 1  # some cases of a batch failed (the others were written)
EXIT_BAD_INPUT = 2  # bad input or usage: a file, a value, a config key
EXIT_ENVIRONMENT = 3  # the machine: read-only or full disk, other OS errors, out of memory
EXIT_INTERRUPTED = 130  # Ctrl-C

USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, zipfile.BadZipFile,
)

#: Faults of the machine rather than of the input (checked after :data:`USER_ERRORS`).
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (OSError, MemoryError)
