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


# -- issue 35: D5 and D10 ---------------------------------------------------------------------------------


def _scan(folder: Path) -> Path:
    from support import blob_volume, save

    folder.mkdir(parents=True, exist_ok=True)
    image, affine = blob_volume((16, 14, 10), (1.0, 1.0, 2.0))
    return save(folder / "scan.nii.gz", image, affine)


def _checkpoint(tmp_path: Path) -> Path:
    from support import threshold_config

    from medt3d.models.checkpoint import save_checkpoint
    from medt3d.networks import build_network

    cfg = threshold_config("network.preset=tiny")
    return save_checkpoint(tmp_path / "tiny.pt", network=build_network(cfg), cfg=cfg, epoch=1, iteration=1)


def test_infer_into_its_own_input_folder_is_refused_and_writes_nothing_there(tmp_path: Path, capsys):
    """D5: it exited 0 with 0 cases and left a summary.json among the scans."""
    scans = tmp_path / "scans"
    _scan(scans)
    before = sorted(p.name for p in scans.iterdir())
    code = main(["infer", str(scans), "--model", str(tmp_path / "model.pt"), "--output", str(scans)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and f"output folder {scans} is the input folder" in err and "scans_seg" in err
    assert sorted(p.name for p in scans.iterdir()) == before


def test_a_missing_input_is_bad_input_and_nothing_is_segmented(tmp_path: Path, capsys):
    """D10: a missing input was a failed case, exit code 1."""
    scan = _scan(tmp_path / "scans")
    code = main(["infer", str(scan), str(tmp_path / "nope.nii.gz"), "--model", str(tmp_path / "model.pt"),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "input(s) not found: " in err and "nope.nii.gz" in err and "nothing was segmented" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("code_, name", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_an_output_folder_that_cannot_be_written_is_exit_code_3(tmp_path: Path, monkeypatch, capsys, code_, name):
    """D10: a read-only output folder gave exit code 2 (a PermissionError counted as bad input)."""
    import medt3d.io_utils as io_utils

    def refuse(*args, **kwargs):
        raise OSError(code_, name)

    monkeypatch.setattr(io_utils.tempfile, "NamedTemporaryFile", refuse)
    scan = _scan(tmp_path / "scans")
    code = main(["infer", str(scan), "--model", str(tmp_path / "model.pt"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "system error" in err and "is not writable" in err and name in err and err.count("\n") == 1


def test_a_full_disk_during_infer_stops_the_batch_with_exit_code_3(tmp_path: Path, monkeypatch, capsys):
    """D10: a full disk made every case fail, exit code 1."""
    import medt3d.inference.batch as batch

    calls = []

    def full(*args, **kwargs):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch, "_run_case", full)
    scans = tmp_path / "scans"
    _scan(scans)
    _scan(scans / "more")
    code = main(["infer", str(scans), "--model", str(_checkpoint(tmp_path)), "--output", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "system error" in err and "No space left on device" in err and "Traceback" not in err
    assert len(calls) == 1  # the batch stopped at the first case
