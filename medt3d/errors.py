"""Which exceptions are a user's mistake (a bad file, a bad value) rather than a bug, and the exit codes.

The command line prints these as one line with exit code 2; pipelines and batch runs pass them
through unwrapped, so that the message naming the file reaches the user. Faults of the machine
(a read-only or full disk, a folder without write permission, no memory) are one line with exit code 3
(:func:`is_environment_error`).
"""

from __future__ import annotations

import errno
import zipfile

__all__ = ["EXIT_BAD_INPUT", "Terminated", "EXIT_CASES_FAILED", "EXIT_ENVIRONMENT", "EXIT_INTERRUPTED", "ENVIRONMENT_ERRORS",
           "FULL_OR_READ_ONLY", "USER_ERRORS", "is_environment_error"]

#: Exit codes of every command (documented in docs/troubleshooting.md).
EXIT_CASES_FAILED = 1  # some cases of a batch failed (the others were written)
EXIT_BAD_INPUT = 2  # bad input or usage: a file, a value, a config key
EXIT_ENVIRONMENT = 3  # the machine: read-only or full disk, other OS errors, out of memory
EXIT_INTERRUPTED = 130  # Ctrl-C, or SIGTERM (a scheduler's stop)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same cleanup runs (exit code 130)."""

USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, zipfile.BadZipFile,
)

#: Faults of the machine rather than of the input (checked after :data:`USER_ERRORS`).
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (OSError, MemoryError)

#: errno values of a disk that cannot take what is written: full, over quota, read-only
FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def is_environment_error(err: BaseException) -> bool:
    """Whether ``err`` is the machine's fault (exit code 3): out of memory, a full or read-only disk, a
    missing permission, or another OS error that names no bad input.

    ``PermissionError`` stays in :data:`USER_ERRORS` (pipelines pass it through unwrapped, naming the
    file) but is the machine's: the command line gives it exit code 3.
    """
    if isinstance(err, (MemoryError, PermissionError)):
        return True
    if isinstance(err, OSError) and err.errno in FULL_OR_READ_ONLY:
        return True
    return isinstance(err, ENVIRONMENT_ERRORS) and not isinstance(err, USER_ERRORS)
