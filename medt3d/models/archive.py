"""Zip a bundle folder, and unpack a bundle zip without letting it write outside its target folder.

``zipfile.extractall`` sanitises names, but silently (a member ``../x`` lands somewhere else than
its name says) and a zip may hold symlinks; a bundle from elsewhere is refused outright instead
when any member is absolute, climbs out with ``..``, is a link or a special file, or collides.
"""

from __future__ import annotations

import errno
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from medt3d.errors import InputError
from medt3d.io_utils import atomic_dir, atomic_path

__all__ = ["UnsafeZipError", "check_zip_members", "unpack_bundle", "zip_bundle"]

#: Largest total unpacked size accepted (a guard against zip bombs).
MAX_UNPACKED_BYTES = 8 * 2**30
#: A member larger than :data:`BOMB_MIN_BYTES` that inflates more than this many times is a zip bomb
#: (weights, configs and ONNX files of a bundle compress a few times at most).
MAX_INFLATION = 100
BOMB_MIN_BYTES = 16 * 2**20


class UnsafeZipError(InputError):
    """A zip member would be written outside the target folder, or is not a plain file or folder."""


def zip_bundle(bundle_dir: str | Path, zip_path: str | Path | None = None) -> Path:
    """Write ``bundle_dir`` as a zip whose members sit under the bundle's folder name (model-zoo layout).

    Args:
        bundle_dir: the exported bundle.
        zip_path: target file; default ``<bundle_dir>.zip``.

    Returns:
        The zip's path (written atomically).
    """
    bundle_dir = Path(bundle_dir)
    zip_path = Path(zip_path) if zip_path is not None else bundle_dir.with_name(bundle_dir.name + ".zip")
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle_dir.rglob("*")):
            if path.is_symlink():
                raise InputError(f"{path}: bundles must not contain symbolic links; replace it with the file it points to")
            if path.is_file():
                zf.write(path, arcname=str(PurePosixPath(bundle_dir.name) / path.relative_to(bundle_dir).as_posix()))
    return zip_path


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\\" in name or "\x00" in name:
        return "has a backslash or NUL in its name"
    pure = PurePosixPath(name)
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in pure.parts:
        return "climbs out of the folder with '..'"
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a plain file or folder"
    return None


def check_zip_members(zip_path: str | Path) -> list[zipfile.ZipInfo]:
    """Every member of ``zip_path``, after checking that all are safe to unpack.

    The sizes checked (the total, and each member's inflation) are those the zip declares; the unpacking
    reads no member past its declared size (``zipfile`` stops there and checks the CRC).

    Raises:
        UnsafeZipError: naming the zip and each bad member with what is wrong with it.
        ValueError: the file is not a zip.
    """
    zip_path = Path(zip_path)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
    except zipfile.BadZipFile as err:
        raise InputError(f"{zip_path}: not a zip file ({err}); download or export the bundle again") from None
    problems = [f"{m.filename!r} {why}" for m in members if (why := _member_problem(m))]
    seen: set[str] = set()
    for m in members:
        key = m.filename.rstrip("/").lower()
        if key in seen:
            problems.append(f"{m.filename!r} appears twice")
        seen.add(key)
    for m in members:
        if m.file_size > BOMB_MIN_BYTES and m.file_size > MAX_INFLATION * max(m.compress_size, 1):
            problems.append(f"{m.filename!r} inflates {m.file_size // max(m.compress_size, 1)}-fold "
                            f"({m.compress_size:,} bytes to {m.file_size / 2**20:.0f} MiB), a zip bomb: export or "
                            "download the bundle again from its source")
    if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
        problems.append(f"unpacks to more than {MAX_UNPACKED_BYTES / 2**30:.0f} GiB")
    if problems:
        raise UnsafeZipError(f"{zip_path}: refusing to unpack: " + "; ".join(problems)
                             + "; use a bundle written by medt3d export")
    return members


def unpack_bundle(zip_path: str | Path, dest: str | Path, only: Sequence[str] | None = None) -> Path:
    """Unpack a bundle zip into the new folder ``dest`` and return the bundle folder inside it.

    Nothing is written unless every member is safe (see :func:`check_zip_members`) and the disk
    holds what is unpacked; the files go to a temporary folder beside ``dest`` that is renamed into
    place when complete.

    Args:
        zip_path: the bundle zip.
        dest: a new (or empty) folder.
        only: unpack just the members whose path ends with one of these (``configs/medt3d.yaml``):
            what loading needs, not the whole bundle.

    Returns:
        The bundle root: ``dest/<name>`` when the zip holds one top folder (model-zoo layout), else ``dest``.

    Raises:
        UnsafeZipError: a member is absolute, climbs out with ``..``, is a link or a special file.
        ValueError: ``dest`` exists and is not empty, the file is not a zip, or a member is damaged.
        OSError: (ENOSPC) the disk has less free space than the members need.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest} already exists and is not empty; unpack into a new folder")
    members = check_zip_members(zip_path)
    if only is not None:
        members = [m for m in members if any(PurePosixPath(m.filename).as_posix().endswith(o) for o in only)]
    needed = sum(m.file_size for m in members)
    parent = dest.parent if dest.parent.exists() else Path(tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"unpacking {zip_path} needs {needed / 2**20:.0f} MiB, {parent} has "
                      f"{free / 2**20:.0f} MiB free")
    with atomic_dir(dest) as tmp:
        root = tmp.resolve()
        with zipfile.ZipFile(zip_path) as zf:
            for m in members:
                target = (root / m.filename).resolve()
                if root != target and root not in target.parents:  # second line of defence
                    raise UnsafeZipError(f"{zip_path}: member {m.filename!r} would be written outside {dest}; "
                                         "use a bundle written by medt3d export")
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(m) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # nothing is left: atomic_dir
                    raise InputError(f"{zip_path}: damaged zip, member {m.filename!r} cannot be read "
                                     f"({err}); download or export the bundle again") from None
    tops = {PurePosixPath(m.filename).parts[0] for m in members if PurePosixPath(m.filename).parts}
    if len(tops) == 1 and (dest / next(iter(tops))).is_dir():
        return dest / next(iter(tops))
    return dest
