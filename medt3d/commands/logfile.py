"""The log file a command writes into its run or output folder (``OUTPUT/<command>.log``).

Every command that writes a run or output folder also logs there, so that after a run a user can tell
what ran: the command line, then every log record (time, level, logger, message), appended across
runs (a resumed training adds to its ``train.log``). The folder is often created by the command itself,
part way through; :class:`FolderLogHandler` (a :class:`logging.FileHandler` that opens its file only
once the folder exists) keeps the records until then. Commands whose folder must be new or empty
(``export``, ``phantoms``), or that existed without a log of the command, get it only when the command
has succeeded (never into an input folder named by mistake). Only rank 0 of a ``torchrun`` job writes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["FolderLogHandler", "LOG_FOLDERS", "attach_log", "detach_log", "log_folder"]

#: the argument naming each command's run or output folder; ``export`` and ``phantoms`` create theirs
#: whole (it must be new or empty), so their log is written when they end
LOG_FOLDERS = {"train": "output", "distill": "output", "evaluate": "output", "infer": "output", "score": "output",
               "export": "output", "phantoms": "out", "demo": "output"}
_AT_END = ("export", "phantoms")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class FolderLogHandler(logging.FileHandler):
    """A FileHandler whose folder may not exist yet: records wait in memory until it does.

    Args:
        path: the log file (appended to).
        at_end: keep every record until :meth:`close` (for a folder that must stay empty until then).
    """

    def __init__(self, path: Path, at_end: bool = False) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter(_FORMAT))
        self.at_end = at_end
        self.waiting: list[logging.LogRecord] = []
        self.previous_level = logging.NOTSET  # the medt3d logger's level before the command
        self.unwritable = False  # the file could not be opened (a read-only or full disk): records are dropped

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record, or keep it while the folder does not exist (or until the end).

        A log file that cannot be opened never fails the command (logging's FileHandler raises from its
        open, outside its own error handling): the command's own writes to that folder report the disk
        with their exit code, and the records still reach the console.
        """
        if self.unwritable:
            return
        try:
            self._emit(record)
        except OSError:
            self.unwritable = True
            self.waiting.clear()

    def _emit(self, record: logging.LogRecord) -> None:
        folder = Path(self.baseFilename).parent
        if self.at_end or not folder.is_dir():
            self.waiting.append(record)
            return
        if self.stream is not None and not os.path.exists(self.baseFilename):
            self.stream.close()  # the folder was replaced (--overwrite): open the file again
            self.stream = None  # type: ignore[assignment]
        for waiting in self.waiting:
            super().emit(waiting)
        self.waiting.clear()
        super().emit(record)

    def close(self) -> None:
        """Write what waits if the folder exists by now, then close the file."""
        if self.waiting and Path(self.baseFilename).parent.is_dir() and not self.unwritable:
            self.at_end = False
            try:
                for record in self.waiting:
                    super().emit(record)
            except OSError:
                self.unwritable = True
        self.waiting.clear()
        super().close()


def log_folder(args: argparse.Namespace) -> Path | None:
    """The run or output folder the command writes, or None (a command without one, or none given)."""
    name = getattr(args, "command", None)
    if name == "score" and getattr(args, "pred_dir", None):
        return Path(args.output) if args.output else Path(args.pred_dir) / "score"
    if name == "infer" and getattr(args, "merge", None):
        return Path(args.merge)
    value = getattr(args, LOG_FOLDERS.get(name, ""), None) if name in LOG_FOLDERS else None
    return Path(value) if isinstance(value, (str, Path)) else None


def attach_log(args: argparse.Namespace, argv: list[str] | None) -> FolderLogHandler | None:
    """Start the command's log file in its folder (on the root logger); None where it has none."""
    folder = log_folder(args)
    if folder is None or os.environ.get("RANK", "0") != "0":
        return None
    path = folder / f"{args.command}.log"
    # live only in a folder this command creates, or that holds its log already (a resumed run): a folder
    # that exists without one (an input folder given by mistake, a folder that must be empty) gets the log
    # only when the command has succeeded
    handler = FolderLogHandler(path, at_end=args.command in _AT_END or (folder.exists() and not path.exists()))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    project = logging.getLogger("medt3d")
    handler.previous_level = project.level
    if project.getEffectiveLevel() > logging.INFO:  # an embedding program (or pytest) left the root at WARNING
        project.setLevel(logging.INFO)
    line = " ".join(["medt3d", *(sys.argv[1:] if argv is None else argv)])
    handler.handle(logging.makeLogRecord({"name": "medt3d", "levelno": logging.INFO, "levelname": "INFO",
                                          "msg": "command: %s", "args": (line,)}))  # the file only, not the console
    return handler


def detach_log(handler: FolderLogHandler | None, succeeded: bool) -> None:
    """Stop the log file: what waits is written if the command succeeded (else dropped), then it closes."""
    if handler is None:
        return
    logging.getLogger().removeHandler(handler)
    logging.getLogger("medt3d").setLevel(handler.previous_level)
    if not succeeded and handler.at_end:
        handler.waiting.clear()
    handler.close()
