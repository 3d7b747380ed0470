"""Which exceptions are a user's mistake (a bad file, a bad value) rather than a bug: the one list of them.

The command line prints these as one line with exit code 2; pipelines and batch runs pass them
through unwrapped, so that the message naming the file reaches the user.
"""

from __future__ import annotations

__all__ = ["USER_ERRORS"]

USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError,
)
