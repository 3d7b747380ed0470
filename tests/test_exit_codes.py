"""Exit codes and one-line messages of the command line: bad input 2, the machine 3, interrupted 130."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path

import pytest

from medt3d.cli import main


def test_a_read_only_file_system_is_one_line_with_exit_code_3(tmp_path: Path, monkeypatch, capsys):
    import medt3d.commands.phantoms as phantoms

    def read_only(folder, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(phantoms, "write_phantom_dataset", read_only)
    assert main(["phantoms", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "medt3d phantoms: system error" in err and "Read-only file system" in err and str(tmp_path / "out") in err


def test_a_full_disk_while_writing_is_exit_code_3(tmp_path: Path, monkeypatch, capsys):
    import medt3d.commands.phantoms as phantoms

    def full(folder, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    monkeypatch.setattr(phantoms, "write_phantom_dataset", full)
    assert main(["phantoms", str(tmp_path / "out")]) == 3
    assert "No space left on device" in capsys.readouterr().err


def test_a_volume_too_large_for_memory_is_exit_code_3(tmp_path: Path, capsys):
    code = main(["phantoms", str(tmp_path / "huge"), "--n-train", "1", "--n-val", "0", "--shape", "100000", "100000",
                 "100000"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "out of memory" in err and "Traceback" not in err


def test_a_bundle_zip_with_a_bad_crc_is_bad_input(tmp_path: Path, capsys):
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("spleen/configs/metadata.json", "{}" * 200)
        zf.writestr("spleen/configs/medt3d.yaml", "data:\n  modality: CT\n" * 20)
        zf.writestr("spleen/models/model.pt", b"\0" * 4000)
    with zipfile.ZipFile(bundle) as zf:
        member = zf.getinfo("spleen/models/model.pt")
    data = bytearray(bundle.read_bytes())
    data[member.header_offset + 30 + len(member.filename) + 100] ^= 0xFF  # inside model.pt: its CRC no longer matches
    bundle.write_bytes(bytes(data))
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    code = main(["infer", str(scan), "--model", str(bundle), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and str(bundle) in err and "damaged zip" in err


def test_interrupt_is_exit_code_130(tmp_path: Path, monkeypatch, capsys):
    import medt3d.commands.phantoms as phantoms

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(phantoms, "write_phantom_dataset", interrupted)
    assert main(["phantoms", str(tmp_path / "out")]) == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--debug"])
def test_debug_shows_the_traceback_instead(tmp_path: Path, monkeypatch, flag):
    import medt3d.commands.phantoms as phantoms

    def read_only(folder, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(phantoms, "write_phantom_dataset", read_only)
    with pytest.raises(OSError, match="Read-only"):
        main([flag, "phantoms", str(tmp_path / "out")])


def test_a_failed_command_removes_the_empty_output_folder_it_made(phantom_dir: Path, tmp_path: Path, capsys):
    import shutil

    import nibabel as nib
    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    mask = sorted((data / "train" / "masks").glob("*.nii*"))[0]
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.full(img.shape, 7, dtype=np.uint8), img.affine), mask)
    run = tmp_path / "new_run"
    assert main(["train", "--data-dir", str(data), "--output", str(run), "--set", "network.preset=tiny"]) == 2
    assert "label values 7 are outside" in capsys.readouterr().err
    assert not run.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["train", "--data-dir", str(data), "--output", str(kept), "--set", "network.preset=tiny"]) == 2
    assert kept.is_dir()  # it was there before: not the command's to remove
