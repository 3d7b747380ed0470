"""Error messages say what is wrong, name the file or value, and say what to do (issue 35, D11); a bug
shows as a bug, not as the user's mistake (issue 31, item 7).

The convention (medt3d/errors.py, docs/troubleshooting.md): a user's mistake is an ``InputError``, printed
as ``medt3d COMMAND: error: ...`` with exit code 2; its message names the file, key or value and holds a
what-to-do clause (:func:`medt3d.errors.hint_of`). The machine's faults are exit code 3 with a hint too.
Any other exception is a bug: its traceback, a line saying so, exit code 1.
"""

from __future__ import annotations

import ast
import errno
import gzip
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dicom_utils import write_dicom_series
from support import blob_volume, save

from medt3d.cli import main
from medt3d.errors import HINT_VERBS, ConfigError, InputError, bad_file, hint_of

MEDT3D = Path(__file__).resolve().parents[1] / "medt3d"
#: The project's error types (and the OS's for a missing path) whose messages the static test reads.
PROJECT_ERRORS = {"InputError", "ConfigError", "FolderLockedError", "UnsafeZipError", "DatasetError",
                  "FileNotFoundError", "NotADirectoryError", "IsADirectoryError"}


# -- the convention itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("message, hint", [
    ("a.nii: truncated; copy or export it again", "copy or export it again"),
    ("x: bad header: export the file again", "export the file again"),
    ("big; if the scan is real, raise infer.max_voxels", "if the scan is real, raise infer.max_voxels"),
    ("two series. Pick one with --series-uid UID", "Pick one with --series-uid UID"),
    ("cfg.yaml: unknown key 'a'; known keys here: [b]", None),
    ("pass this first; nothing to do", None),  # the first clause is the problem, never the hint
])
def test_hint_of_finds_the_what_to_do_clause(message: str, hint: str | None):
    assert hint_of(message) == hint


def test_project_errors_are_value_errors_so_old_callers_still_catch_them():
    import medt3d

    assert issubclass(InputError, ValueError) and issubclass(ConfigError, InputError)
    assert medt3d.InputError is InputError  # what a caller of the Python API catches
    err = bad_file("/data/scan.nii", ValueError("buffer is too small\nmore detail"), "export it again")
    assert isinstance(err, InputError)
    assert str(err) == "/data/scan.nii: ValueError: buffer is too small; export it again"


def _message_text(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The literal text of a message expression, each formatted value as ``{}``; None when unknowable."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value.value, ast.Name) and value.value.id in constants:
                parts.append(constants[value.value.id])
            else:
                parts.append("{}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message_text(node.left, constants), _message_text(node.right, constants)
        return None if left is None and right is None else (left or "{}") + (right or "{}")
    if isinstance(node, ast.Call):
        return "{}"
    return None


def _raises_without_hint(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                 for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
            continue
        func = node.exc.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name not in PROJECT_ERRORS:
            continue
        text = _message_text(node.exc.args[0], constants)
        # a message built elsewhere, or one whose clause is a value that may carry the hint, is checked at run time
        if text is None or re.search(r"(^|[;:.]\s+)\{\}", text) or text.endswith("{}") or hint_of(text):
            continue
        found.append(f"{path.relative_to(MEDT3D.parent)}:{node.lineno}: {text[:120]!r}")
    return found


def test_every_literal_message_of_a_project_error_says_what_to_do():
    """Each raise of InputError (and the other project types) whose text is written out in the source has
    a what-to-do clause that starts with one of HINT_VERBS."""
    missing = [line for path in sorted(MEDT3D.rglob("*.py")) for line in _raises_without_hint(path)]
    assert not missing, f"messages without a what-to-do clause ({sorted(HINT_VERBS)}):\n" + "\n".join(missing)


# -- the command line: bad input is exit code 2 with a message that names it and says what to do -------------


def _scan(folder: Path, name: str = "scan.nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image, affine = blob_volume((16, 14, 10), (1.0, 1.0, 2.0))
    return save(folder / name, image, affine)


def _truncated_nifti(folder: Path) -> Path:
    whole = _scan(folder, "whole.nii.gz")
    raw = gzip.decompress(whole.read_bytes())
    path = folder / "cut.nii.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    whole.unlink()
    return path


def _not_dicom_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "IM0001.dcm").write_bytes(b"not a DICOM file at all" * 10)
    return folder


def _two_series(folder: Path) -> Path:
    image, _ = blob_volume((16, 16, 12), (1.0, 1.0, 2.0))
    write_dicom_series(folder, image.astype(np.int16), (1, 1, 2), np.eye(3), (0, 0, 0), series_uid="1.2.3.4.1",
                       prefix="a_", modality="CT")
    write_dicom_series(folder, image.astype(np.int16), (1, 1, 2), np.eye(3), (0, 0, 50), series_uid="1.2.3.4.2",
                       prefix="b_", modality="CT")
    return folder


def _series_with_a_gap(folder: Path) -> Path:
    image, _ = blob_volume((16, 16, 12), (1.0, 1.0, 2.0))
    write_dicom_series(folder, image.astype(np.int16), (1, 1, 2), np.eye(3), (0, 0, 0), modality="CT",
                       skip_slices=[5])
    return folder


def _bad_yaml(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "broken.yaml"
    path.write_text("train:\n  max_epochs: [1, 2\n  lr: 0.1\n")
    return path


def _not_a_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "garbage.pt"
    path.write_bytes(b"\x80\x02 this is not a torch file" * 20)
    return path


def _full_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("not yours")
    return folder


# (id, argv builder from tmp_path and phantom_dir, what the message must name)
CASES = [
    ("unknown config key", lambda t, d: ["train", "--data-dir", str(d), "--output", str(t / "run"),
                                         "--set", "train.epochs=3"], lambda t, d: "train.epochs"),
    ("bad config value", lambda t, d: ["train", "--data-dir", str(d), "--output", str(t / "run"),
                                       "--set", "train.max_epochs=zero"], lambda t, d: "zero"),
    ("--set without =", lambda t, d: ["train", "--data-dir", str(d), "--output", str(t / "run"),
                                      "--set", "maxepochs"], lambda t, d: "maxepochs"),
    ("missing config file", lambda t, d: ["train", "--config", str(t / "nope.yaml"), "--data-dir", str(d),
                                          "--output", str(t / "run")], lambda t, d: str(t / "nope.yaml")),
    ("config that is not YAML", lambda t, d: ["train", "--config", str(_bad_yaml(t)), "--data-dir", str(d),
                                              "--output", str(t / "run")], lambda t, d: str(t / "broken.yaml")),
    ("missing input", lambda t, d: ["infer", str(t / "nope.nii.gz"), "--model", str(t / "m.pt"),
                                    "--output", str(t / "out")], lambda t, d: str(t / "nope.nii.gz")),
    ("missing model", lambda t, d: ["infer", str(_scan(t / "scans")), "--model", str(t / "m.pt"),
                                    "--output", str(t / "out")], lambda t, d: str(t / "m.pt")),
    ("not a checkpoint", lambda t, d: ["export", "--model", str(_not_a_checkpoint(t)), "--output", str(t / "b")],
     lambda t, d: str(t / "garbage.pt")),
    ("bad --roi-size", lambda t, d: ["infer", str(_scan(t / "scans")), "--model", str(t / "m.pt"), "--output",
                                     str(t / "out"), "--roi-size", "32", "32"], lambda t, d: "--roi-size"),
    ("bad --shard", lambda t, d: ["infer", str(_scan(t / "scans")), "--model", str(t / "m.pt"), "--output",
                                  str(t / "out"), "--shard", "5/4"], lambda t, d: "5/4"),
    ("output is the input folder", lambda t, d: ["infer", str(_scan(t / "scans").parent), "--model",
                                                 str(t / "m.pt"), "--output", str(t / "scans")],
     lambda t, d: str(t / "scans")),
    ("corrupt NIfTI", lambda t, d: ["inspect", str(_truncated_nifti(t / "in"))], lambda t, d: str(t / "in" / "cut.nii.gz")),
    ("DICOM folder with no series", lambda t, d: ["inspect", str(_not_dicom_folder(t / "dicom"))],
     lambda t, d: str(t / "dicom")),
    ("two DICOM series in one folder", lambda t, d: ["inspect", str(_two_series(t / "study"))],
     lambda t, d: "1.2.3.4.2"),
    ("DICOM series with a missing slice", lambda t, d: ["inspect", str(_series_with_a_gap(t / "gap"))],
     lambda t, d: str(t / "gap")),
    ("phantoms into a folder that holds files", lambda t, d: ["phantoms", str(_full_folder(t / "full"))],
     lambda t, d: str(t / "full")),
    ("output below a file", lambda t, d: ["phantoms", str(_scan(t / "s") / "sub")], lambda t, d: "scan.nii.gz"),
]


def _assert_clear(err: str, named: str) -> str:
    """``err`` is ``medt3d CMD: error: ...`` on one line (or a list of problems, each on its own line, after a
    first line that says what to do), names ``named`` and holds a what-to-do clause."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and ": error: " in lines[0], err
    assert len(lines) == 1 or all(line.startswith("  - ") for line in lines[1:]), err
    assert named in err, f"{named!r} not named in: {err}"
    assert hint_of(lines[0].split(": error: ", 1)[1]), f"no what-to-do clause in: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_exit_code_2_naming_it_and_saying_what_to_do(case, tmp_path: Path, phantom_dir: Path, capsys):
    _, argv, named = case
    code = main(argv(tmp_path, phantom_dir))
    err = capsys.readouterr().err
    assert code == 2, err
    _assert_clear(err, named(tmp_path, phantom_dir))


def test_bad_training_data_lists_each_file_after_a_line_that_says_what_to_do(tmp_path: Path, phantom_dir: Path,
                                                                              capsys):
    import shutil

    import nibabel as nib
    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    masks = sorted((data / "train" / "masks").glob("*.nii*"))
    img = nib.load(masks[0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.uint8), img.affine), masks[0])  # wrong shape
    images = sorted((data / "train" / "images").glob("*.nii*"))
    raw = gzip.decompress(images[1].read_bytes())
    images[1].write_bytes(gzip.compress(raw[: len(raw) // 2]))  # truncated
    code = main(["train", "--data-dir", str(data), "--output", str(tmp_path / "run"), "--set", "network.preset=tiny"])
    err = capsys.readouterr().err
    assert code == 2, err
    _assert_clear(err, masks[0].name)
    assert images[1].name in err


@pytest.mark.parametrize("fault", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_a_fault_of_the_machine_is_exit_code_3_with_what_to_do(fault: int, tmp_path: Path, monkeypatch, capsys):
    import medt3d.commands.phantoms as phantoms

    def fail(folder, *args, **kwargs):
        raise (PermissionError if fault == errno.EACCES else OSError)(fault, "refused", str(folder))

    monkeypatch.setattr(phantoms, "write_phantom_dataset", fail)
    assert main(["phantoms", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(tmp_path / "out") in err
    assert hint_of(err.split(": ", 2)[2]), err


def test_out_of_gpu_memory_is_exit_code_3_not_a_bug(tmp_path: Path, monkeypatch, capsys):
    import torch

    import medt3d.commands.phantoms as phantoms

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore text")

    monkeypatch.setattr(phantoms, "write_phantom_dataset", oom)
    assert main(["phantoms", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory" in err and "Traceback" not in err and hint_of(err)


# -- a bug is a bug ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bug", [ValueError("operands could not be broadcast together"), KeyError("spacing"),
                                 TypeError("unsupported operand"), zipfile.BadZipFile("internal zip"),
                                 RuntimeError("applying transform")])
def test_an_exception_raised_by_a_bug_is_not_reported_as_bad_input(bug: Exception, tmp_path: Path, monkeypatch,
                                                                   capsys):
    """A plain ValueError (or KeyError...) from deep in a library or from medt3d's own code is a bug: its
    traceback and a line saying so, exit code 1, never exit code 2 as if the user's input were wrong."""
    import medt3d.commands.phantoms as phantoms

    def buggy(*args, **kwargs):
        raise bug

    monkeypatch.setattr(phantoms, "write_phantom_dataset", buggy)
    code = main(["phantoms", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" in err and type(bug).__name__ in err
    assert err.strip().splitlines()[-1].startswith("medt3d phantoms: internal error (a bug in medt3d")
    assert not (tmp_path / "out").exists()  # the empty output folder is still removed


def test_the_same_command_with_a_bad_input_is_still_exit_code_2(tmp_path: Path, monkeypatch, capsys):
    import medt3d.commands.phantoms as phantoms

    def bad(folder, *args, **kwargs):
        raise InputError(f"{folder}: the value 7 is refused; pass another one")

    monkeypatch.setattr(phantoms, "write_phantom_dataset", bad)
    assert main(["phantoms", str(tmp_path / "out")]) == 2
    _assert_clear(capsys.readouterr().err, str(tmp_path / "out"))


def test_a_library_value_error_while_reading_a_scan_is_the_scan_s_error(tmp_path: Path, monkeypatch, capsys):
    """Where a library refuses a user's file, medt3d names the file (exit code 2), whatever it raised."""
    import nibabel

    def refuse(*args, **kwargs):
        raise ValueError("buffer is too small for requested array")

    monkeypatch.setattr(nibabel, "load", refuse)
    scan = _scan(tmp_path / "in")
    code = main(["inspect", str(scan)])
    err = capsys.readouterr().err
    assert code == 2, err
    _assert_clear(err, str(scan))
    assert "buffer is too small" in err


def test_a_bug_while_reading_a_case_is_not_listed_as_the_case_s_problem(tmp_path: Path, monkeypatch, capsys):
    """The loops that gather every case's problems catch InputError, not ValueError: a bug in them stops
    with its traceback (exit code 1) instead of being blamed on a scan."""
    import medt3d.data.fingerprint as fingerprint

    def buggy(*args, **kwargs):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(fingerprint, "_read_case", buggy)
    scan = _scan(tmp_path / "in")
    code = main(["inspect", str(scan)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" in err and "internal error" in err and "could be read" not in err
