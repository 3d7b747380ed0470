"""The project's error types, which exceptions are a user's mistake rather than a bug, and the exit codes.

medt3d raises :class:`InputError` (or a subclass) for every mistake of its user: a bad or missing file, a
bad value, a config key, a wrong use of the command line or API. Where a library (nibabel, pydicom,
SimpleITK, PyYAML, zipfile...) refuses a user's file, the error is caught where the file is read and raised
again as an :class:`InputError` naming the file (:func:`bad_file`). The command line prints these as one
line with exit code 2; pipelines and batch runs pass them through unwrapped, so that the message naming
the file reaches the user. Any other exception (a plain ``ValueError``, ``KeyError``, ``TypeError``...) is
a bug in medt3d: the command line shows its traceback and exits with 1.

Faults of the machine (a read-only or full disk, a folder without write permission, no memory) are one
line with exit code 3 (:func:`is_environment_error`).

Message convention (checked by tests/test_error_messages.py, documented in docs/troubleshooting.md): a
message is one line that says what is wrong, naming the file, key or value involved, then what to do: a
clause after ``"; "`` (or ``": "``, ``". "``) that starts with an imperative verb of :data:`HINT_VERBS`
(optionally after "or", "then", or an "if ...," condition), e.g. ``"scan.nii.gz: the header claims 8 MB
but the file holds 2 MB; copy or export the file again"``.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

__all__ = ["EXIT_BAD_INPUT", "Terminated", "EXIT_BUG", "EXIT_CASES_FAILED", "EXIT_ENVIRONMENT",
           "EXIT_INTERRUPTED", "ENVIRONMENT_ERRORS", "FULL_OR_READ_ONLY", "HINT_VERBS", "USER_ERRORS",
           "ConfigError", "InputError", "bad_file", "brief", "hint_of", "is_environment_error"]

#: Exit codes of every command (documented in docs/troubleshooting.md).
EXIT_CASES_FAILED = 1  # some cases of a batch failed (the others were written)
EXIT_BUG = 1  # an exception that is not a user's or the machine's: a bug in medt3d (traceback shown)
#: how a bug in medt3d is named to the user (the command line's last line, a failed case's error)
INTERNAL_ERROR = "internal error (a bug in medt3d, not in your input)"
EXIT_BAD_INPUT = 2  # bad input or usage: a file, a value, a config key
EXIT_ENVIRONMENT = 3  # the machine: read-only or full disk, other OS errors, out of memory
EXIT_INTERRUPTED = 130  # Ctrl-C, or SIGTERM (a scheduler's stop)


class InputError(ValueError):
    """A user's mistake: a bad or unreadable input file, a bad value or option, a wrong use (exit code 2).

    The message names the file, key or value and ends with what to do after ``"; "`` (module docstring).
    A subclass of ``ValueError``, so that ``except ValueError`` in callers keeps catching it.
    """


class ConfigError(InputError):
    """A configuration value is unknown, of the wrong type, or impossible."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same cleanup runs (exit code 130)."""


#: What the command line reports as the user's mistake (exit code 2, or 3 for ``PermissionError``): the
#: project's own :class:`InputError`, and a path the user named that is missing or of the wrong kind (a file
#: where a folder is needed, or the other way round).
#: A plain ``ValueError`` is not here: it is a bug unless medt3d raised it as an :class:`InputError`.
USER_ERRORS: tuple[type[Exception], ...] = (
    InputError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError,
)

#: Faults of the machine rather than of the input (checked after :data:`USER_ERRORS`).
ENVIRONMENT_ERRORS: tuple[type[BaseException], ...] = (OSError, MemoryError)

#: errno values of a disk that cannot take what is written: full, over quota, read-only
FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

#: Verbs a what-to-do clause of a message starts with (the message convention above).
HINT_VERBS = frozenset({
    "add", "ask", "check", "choose", "convert", "copy", "delete", "disable", "download", "drop", "enable",
    "export", "finish", "fix", "free", "give", "grant", "install", "keep", "label", "leave", "list", "load",
    "lower", "make", "move", "name", "pass", "pick", "predict", "put", "quote", "raise", "re-export", "reduce",
    "reinstall", "remove", "rename", "replace", "report", "rerun", "resample", "retrain", "run", "save",
    "select", "set", "split", "start", "train", "unpack", "update", "upgrade", "use", "wait", "write",
})

_CLAUSE = re.compile(r"[;:.]\s+")
_CONDITION = re.compile(r"^(?:(?:or|and|then|else|otherwise|instead|either)\s+|(?:if|when|for)\b[^,]*,\s*)",
                        re.IGNORECASE)


def hint_of(message: str) -> str | None:
    """The what-to-do clause of an error message (the first clause after ``"; "``, ``": "`` or ``". "`` that
    starts with one of :data:`HINT_VERBS`), or ``None`` when it has none."""
    for clause in _CLAUSE.split(str(message))[1:]:
        text = clause.strip()
        while (m := _CONDITION.match(text)) is not None and m.end() > 0:
            text = text[m.end():]
        words = text.split(None, 1)
        if words and words[0].lower().strip("(`'\"") in HINT_VERBS:
            return clause.strip()
    return None


def brief(err: BaseException) -> str:
    """A library's exception in a few words for a one-line message: its type and the first sentence of its
    text (torch, pydicom and nibabel explain at length), at most 200 characters."""
    lines = str(err).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    first = re.split(r"(?<=[a-z0-9)])\.\s", text, maxsplit=1)[0].rstrip(".")
    first = first if len(first) <= 200 else first[:197] + "..."
    name = type(err).__name__
    return f"{name}: {first}" if first and name not in first else (first or name)


def bad_file(path: str | Path, err: BaseException | str, hint: str) -> InputError:
    """A library's refusal of a user's file as an :class:`InputError`: ``"PATH: WHAT; HINT"``.

    Raise it ``from None`` where the file is read, so that no library traceback reaches the user.
    """
    return InputError(f"{path}: {err if isinstance(err, str) else brief(err)}; {hint}")


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
