"""Folder locks: one ``train`` or ``infer`` per run or output folder at a time (issue 35, D15).

A lock is a small file created with ``O_EXCL`` that names its holder (pid@host, command, start time).
A second job on the same folder is refused with that holder in the message (exit code 2). A lock left
by a process of this machine that is gone (``kill -9``, a crash) is taken over; one of another machine
(a shared disk) is never taken over: its message says which file to delete once that job is known to
be gone.

The shards of one batch (``medt3d infer --shard I/N``) share an output folder: each locks its own
shard, and a whole-folder job (``train``, an unsharded ``infer``) excludes every shard. Each side
creates its own lock first and then looks for the other kind, so two jobs can both be refused, never
both admitted. :func:`merge_lock` serialises the writing of a folder's cohort tables with ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medt3d.errors import InputError

__all__ = ["FOLDER_LOCK", "FolderLock", "FolderLockedError", "merge_lock", "shard_lock_name"]

#: the lock of a job that holds the whole folder
FOLDER_LOCK = ".medt3d.lock"
_SHARD_GLOB = ".medt3d.shard-*.lock"
_MERGE_LOCK = ".medt3d.merge.lock"


def shard_lock_name(index: int, count: int) -> str:
    """The lock file of shard ``index`` of ``count`` (1-based)."""
    return f".medt3d.shard-{index}-of-{count}.lock"


class FolderLockedError(InputError):
    """Another live job holds the folder (exit code 2)."""


def _alive_here(holder: dict[str, Any]) -> bool | None:
    """Whether the holder's process runs: True/False on this machine, None for another machine's."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or garbage: treated as a holder of unknown liveness below
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    return (f"{holder.get('command', 'medt3d')} (pid {holder.get('pid', '?')}@{holder.get('host', '?')}, "
            f"started {holder.get('started', '?')})")


class FolderLock:
    """A held lock on ``folder`` (``name``: :data:`FOLDER_LOCK` or :func:`shard_lock_name`); :meth:`release` it.

    Args:
        folder: the run or output folder (must exist).
        name: the lock file's name in ``folder``.
        command: what the holder runs, for other jobs' messages (e.g. ``medt3d infer``).

    Raises:
        FolderLockedError: a live job holds the folder (or, for a whole-folder lock, any shard of it; for a
            shard lock, the whole folder), named in the message.
    """

    def __init__(self, folder: str | Path, name: str = FOLDER_LOCK, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.held = False
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(),
                       "command": command or " ".join(["medt3d", *sys.argv[1:2]]),
                       "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._take(self.path)
        try:
            others = (sorted(self.folder.glob(_SHARD_GLOB)) if name == FOLDER_LOCK
                      else [self.folder / FOLDER_LOCK])
            for other in others:
                self._refuse_if_live(other)
        except BaseException:
            self.release()
            raise

    def _take(self, path: Path) -> None:
        for _ in range(5):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._refuse_if_live(path)
                continue  # a dead holder's lock was removed: try again
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.holder, f)
            self.held = True
            return
        raise FolderLockedError(f"could not lock {self.folder}: {path} keeps reappearing; another job is starting "
                                "there: wait for it, or choose another output folder")

    def _refuse_if_live(self, path: Path) -> None:
        """Raise when ``path`` is held by a live (or another machine's) job; remove it when its holder is gone."""
        holder = _read_holder(path)
        if holder is None:
            return
        if not holder:  # unreadable: a lock being written right now, or a corrupt one
            age = time.time() - path.stat().st_mtime if path.exists() else 0.0
            if age < 10.0:
                raise FolderLockedError(f"{self.folder} is being locked by another job ({path}): wait for it, "
                                        "or choose another output folder")
            alive: bool | None = False
        else:
            alive = _alive_here(holder)
        if alive is False:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        where = "" if alive else (f"; it runs on another machine: if it is gone, delete {path}")
        raise FolderLockedError(f"{self.folder} is in use by {_describe(holder)}{where}: wait for it to finish, "
                                "or choose another output folder")

    def release(self) -> None:
        """Remove the lock file if this process still holds it (idempotent)."""
        if not self.held:
            return
        self.held = False
        holder = _read_holder(self.path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            # on a disk gone read-only the file stays: the next job finds its holder gone and takes it over
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def merge_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s merge lock (``flock`` on ``.medt3d.merge.lock``) for the block: one writer of the
    cohort tables at a time; released by the system even if the process is killed."""
    path = Path(folder) / _MERGE_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                break
            except InterruptedError:
                continue
            except OSError as err:  # a file system without flock: go on unlocked rather than fail the batch
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                    break
                raise
        yield
    finally:
        os.close(fd)
