"""Atomic file writing: outputs and checkpoints appear whole or not at all."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "atomic_save", "atomic_write_text", "atomic_write_bytes", "check_writable_dir",
           "leftover_temp_files"]

logger = logging.getLogger("medt3d.io_utils")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds.

    The temporary file keeps ``target``'s suffix(es) (e.g. ``.nii.gz``) so that writers which
    pick a format from the file name still work. On error the temporary file is removed and
    ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp_path, target)
    except BaseException as err:
        full = _full_disk_error(err, target)
        tmp_path.unlink(missing_ok=True)
        if full is not None:
            raise full from err
        raise


#: below this many free bytes, a writer's failure is taken for the disk's
_FULL_BELOW = 1 << 20


def _full_disk_error(err: BaseException, target: Path) -> OSError | None:
    """An ``OSError(ENOSPC)`` naming ``target`` when a writer failed with its own error on a full disk.

    ``torch.save`` reports a short write as ``RuntimeError: [enforce fail at inline_container.cc] ...
    unexpected pos``, not as an OS error; without this a full disk was a traceback and exit code 1.
    """
    if not isinstance(err, Exception) or isinstance(err, OSError):
        return None
    try:
        free = shutil.disk_usage(target.parent).free
    except OSError:
        return None
    if free >= _FULL_BELOW:
        return None
    reason = " ".join(str(err).split())[:200]
    return OSError(errno.ENOSPC, f"no space left on the disk of {target.parent} ({free // 1024} KiB free) while "
                                 f"writing {target.name} ({type(err).__name__}: {reason}); free space and rerun")


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial."


def _remove_stale_partials(target: Path) -> None:
    """Delete the partial folders of ``target`` that a killed process of this machine left (``kill -9``)."""
    prefix = _partial_prefix(target)
    for path in target.parent.glob(f"{prefix}*@*"):
        pid_text, _, rest = path.name[len(prefix):].partition("@")
        if rest[: rest.rfind(".")] != socket.gethostname() or not pid_text.isdigit():
            continue  # another machine's (a shared disk): its process may still be writing
        try:
            os.kill(int(pid_text), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's process, running
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed %s, a partial %s left by a killed process", path, target.name)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; move it onto ``target`` if the block succeeds.

    ``target`` must be absent or an empty folder. On error the temporary folder is removed, so a
    folder of outputs appears whole or not at all. The folder and what was written into it get the
    permissions the umask gives (``mkdtemp`` makes a private folder). The temporary folder is named
    ``.<target>.partial.<pid>@<host>.<random>``; partial folders of ``target`` whose process is gone
    (killed with ``kill -9``) are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    prefix = f"{_partial_prefix(target)}{os.getpid()}@{socket.gethostname()}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield tmp
        mask = _umask()
        for path in [tmp, *tmp.rglob("*")]:
            if not path.is_symlink():
                path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
        if target.exists():
            target.rmdir()
        tmp.replace(target)
    except BaseException as err:
        full = _full_disk_error(err, target)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from err
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_save(target: str | Path, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` then move the result onto ``target``."""
    with atomic_path(target) as tmp:
        save(tmp)


def check_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it is writable, failing fast with a clear message.

    Raises:
        OSError: the folder cannot be created or written, with the system's errno (a ``PermissionError``
            for a missing permission; a read-only or full disk keeps its own).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        code = err.errno if err.errno is not None else errno.EACCES
        raise OSError(code, f"output folder {path} is not writable: {err.strerror or err}; free space or choose "
                            "a writable folder") from None
    return path


def leftover_temp_files(folder: str | Path, before: float | None = None) -> list[Path]:
    """The hidden ``.NAME.*.tmp*`` files :func:`atomic_path` makes, left in ``folder`` by a killed process.

    Args:
        folder: where to look (not recursively); a missing folder has none.
        before: only files last modified before this time (``time.time()``), so that a run does not
            take the temporary files other processes of the same run are writing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in folder.glob(".*.tmp*")
            if p.is_file() and (before is None or p.stat().st_mtime < before)]
