from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from medt3d.io_utils import atomic_dir, atomic_write_text, check_writable_dir


def test_atomic_write_gives_normal_permissions_and_no_leftovers(tmp_path: Path):
    target = tmp_path / "out" / "a.nii.gz"
    atomic_write_text(target, "x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["a.nii.gz"]


def test_failed_atomic_dir_leaves_nothing(tmp_path: Path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "bundle") as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_dir_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match="not writable"):  # a file in the way: bad input, exit code 2
        check_writable_dir(blocker / "sub")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_dir_and_its_files_follow_the_umask(tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "bundle") as tmp:
            (tmp / "models").mkdir()
            (tmp / "models" / "model.pt").write_bytes(b"w")
            atomic_write_text(tmp / "docs" / "README.md", "x")
    finally:
        os.umask(old)
    root = tmp_path / "bundle"
    for path in [root, root / "models", root / "docs"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask, path
    for path in [root / "models" / "model.pt", root / "docs" / "README.md"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


_KILLED_EXPORT = """
import os, signal, sys
from medt3d.io_utils import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "models").mkdir()
    (tmp / "models" / "model.pt").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_partial_folder_left_by_kill_9_is_obviously_temporary_and_removed_by_the_next_run(tmp_path: Path):
    """D14 (issue 35): kill -9 during export left a hidden .exp9.* partial bundle for good."""
    import subprocess
    import sys

    target = tmp_path / "exp9"
    killed = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(target)], check=False)
    assert killed.returncode == -9
    partials = [p.name for p in tmp_path.iterdir()]
    assert len(partials) == 1 and partials[0].startswith(".exp9.partial.") and not target.exists()
    alive = tmp_path / f".exp9.partial.{os.getpid()}@{socket.gethostname()}.keep"  # a running export's
    alive.mkdir()
    other = tmp_path / ".exp9.partial.1@another-host.keep"  # another machine's, on a shared disk
    other.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "LICENSE").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["exp9", alive.name, other.name])
    assert (target / "LICENSE").read_text() == "ok"
