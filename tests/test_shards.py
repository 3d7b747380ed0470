"""A batch many jobs share (issue 35, item 3; D13, D15): ``infer --shard I/N`` and the merged cohort
tables, folder locks naming their holder, and SIGTERM handled like Ctrl-C in ``train`` and ``infer``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import TINY, tiny_cfg

from medt3d.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from medt3d.inference.shards import parse_shard, select_shard, shard_of
from medt3d.locks import FOLDER_LOCK, FolderLock, FolderLockedError, shard_lock_name
from medt3d.training.engine import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Eight phantom scans and a tiny model trained one epoch on them: (images folder, checkpoint)."""
    from medt3d.data.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("cohort")
    data = write_phantom_dataset(root / "data", n_train=8, n_val=0, shape=(24, 24, 16))
    result = train(tiny_cfg("train.max_epochs=1", "train.val_interval=0", "train.iterations_per_epoch=1"),
                   data, root / "run")
    return data / "train" / "images", result.model_checkpoint


def _infer(images: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medt3d", "infer", str(images), "--model", str(model),
                             "--output", str(out), "--no-progress", *extra], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, encoding="utf-8", errors="replace")


def _visible(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if not p.name.startswith(".")}


def _comparable(summary: dict) -> dict:
    drop = {"seconds", "rank"}
    cases = [{**{k: v for k, v in c.items() if k not in drop},
              "outputs": {k: Path(v).name for k, v in c["outputs"].items()}} for c in summary["cases"]]
    return {**{k: v for k, v in summary.items() if k not in ("cases", "shards", "shard")}, "cases": cases}


def test_shards_are_stable_and_cover_the_cohort_once():
    names = [f"case_{i:03d}" for i in range(200)]

    class C:
        def __init__(self, name: str) -> None:
            self.name = name

    parts = [select_shard([C(n) for n in names], (i, 4)) for i in range(1, 5)]
    assert sorted(c.name for p in parts for c in p) == names and all(parts)
    assert shard_of("case_007", 4) == shard_of("case_007", 4)  # by name: another cohort does not move it
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "1/0", "x", "1-4"):
        with pytest.raises(ValueError, match="1 <= I <= N"):
            parse_shard(bad)


def test_four_shard_jobs_at_once_equal_one_unsharded_run(cohort, tmp_path: Path):
    """Done when: four ``infer --shard i/4`` jobs started at once on one folder give one run's outputs."""
    from medt3d.cli import main

    images, model = cohort
    # the unsharded reference in this process (a command line costs 10 s of importing MONAI)
    assert main(["infer", str(images), "--model", str(model), "--output", str(tmp_path / "whole"),
                 "--no-progress"]) == 0
    out = tmp_path / "shared"
    jobs = [_infer(images, model, out, "--shard", f"{i}/4") for i in range(1, 5)]
    logs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 4, logs
    assert sum("merged" in log for log in logs) >= 1

    expected, got = _visible(tmp_path / "whole"), _visible(out)
    assert sorted(got) == sorted(expected)
    import nibabel as nib
    import numpy as np

    for name in expected:
        if name.endswith(".nii.gz"):
            assert np.array_equal(np.asarray(nib.load(got[name]).dataobj), np.asarray(nib.load(expected[name]).dataobj))
        elif name.endswith((".csv", ".txt", ".ctbl")):
            assert got[name].read_text() == expected[name].read_text(), name
    merged = json.loads((out / "summary.json").read_text())
    assert merged["shards"] == {"count": 4, "merged": [1, 2, 3, 4], "missing": []}
    assert merged["n_cases"] == 8 and merged["done"] == 8 and merged["exit_code"] == 0
    plain = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert _comparable(merged) == {**_comparable(plain), "output": merged["output"]}
    assert not list(out.glob(".medt3d*.lock")) or list(out.glob(".medt3d*.lock")) == [out / ".medt3d.merge.lock"]

    # --merge rewrites the same summary from the shards' records
    (out / "summary.json").unlink()
    assert main(["infer", "--merge", str(out)]) == 0
    assert _comparable(json.loads((out / "summary.json").read_text())) == _comparable(merged)


def test_a_folder_in_use_is_refused_naming_its_holder_and_a_dead_holder_is_taken_over(tmp_path: Path):
    """D15: a second job on a folder gets exit 2 naming pid@host and start time; a stale lock is taken over."""
    held = FolderLock(tmp_path, command="medt3d train")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(FolderLockedError, match=rf"in use by medt3d train \(pid {os.getpid()}@"
                                                    rf"{socket.gethostname()}, started 20"):
            FolderLock(tmp_path)
        with pytest.raises(FolderLockedError, match="in use by medt3d train"):  # a shard of a held folder
            FolderLock(tmp_path, shard_lock_name(1, 2))
        held.release()
        shard = FolderLock(tmp_path, shard_lock_name(1, 2))
        FolderLock(tmp_path, shard_lock_name(2, 2)).release()  # shards share a folder
        with pytest.raises(FolderLockedError):  # a whole-folder job waits for the shards
            FolderLock(tmp_path)
        shard.release()
        # a live process's lock is respected; once it is dead (kill -9), its lock is taken over
        (tmp_path / FOLDER_LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                        "command": "medt3d infer", "started": "then"}))
        with pytest.raises(FolderLockedError, match=f"pid {sleeper.pid}@"):
            FolderLock(tmp_path)
        sleeper.kill()
        sleeper.wait()
        FolderLock(tmp_path).release()
        assert not (tmp_path / FOLDER_LOCK).exists()
        (tmp_path / FOLDER_LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
        with pytest.raises(FolderLockedError, match="another machine: if it is gone, delete"):
            FolderLock(tmp_path)
    finally:
        sleeper.kill()


def test_a_second_train_on_a_run_folder_in_use_exits_2(phantom_dir: Path, tmp_path: Path, capsys):
    from medt3d.cli import main

    run = tmp_path / "run"
    run.mkdir()
    lock = FolderLock(run, command="medt3d train")
    args = ["train", "--config", "demo", "--data-dir", str(phantom_dir), "--output", str(run)]
    try:
        assert main(args) == EXIT_BAD_INPUT
    finally:
        lock.release()
    assert f"is in use by medt3d train (pid {os.getpid()}@" in capsys.readouterr().err


def _wait_for(path_check, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while not path_check() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert path_check(), proc.communicate()[0] if proc.poll() is not None else "timed out"


def test_sigterm_during_infer_writes_a_summary_and_exits_130(cohort, tmp_path: Path):
    """D13: a scheduler's SIGTERM: the case in progress leaves no file, summary.json says what ran, exit 130."""
    images, model = cohort
    out = tmp_path / "out"
    job = _infer(images, model, out, "--tta", "--roi-size", "8", "8", "8", "--overlap", "0.75")
    _wait_for(lambda: len(list(out.glob("*_seg.json"))) >= 1, job)
    job.send_signal(signal.SIGTERM)
    log = job.communicate(timeout=120)[0]
    assert job.returncode == EXIT_INTERRUPTED, log
    assert "medt3d infer: terminated (SIGTERM)" in log and "Traceback" not in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["exit_code"] == EXIT_INTERRUPTED
    done = {p.name[: -len("_seg.json")] for p in out.glob("*_seg.json")}
    assert {c["case"] for c in summary["cases"] if c["status"] == "done"} == done
    assert set(summary["not_run"]) | done == {p.name[: -len(".nii.gz")] for p in images.glob("*.nii.gz")}
    assert not list(out.glob(".*.tmp*")) and not (out / FOLDER_LOCK).exists()
    assert {p.name[: -len("_seg.nii.gz")] for p in out.glob("*_seg.nii.gz")} == done  # no label without sidecar


def test_sigterm_during_train_keeps_the_last_checkpoint_and_exits_130(phantom_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "medt3d", "train", "--config", "demo", "--data-dir", str(phantom_dir),
            "--output", str(run)]
    for item in [*TINY, "tracking.mlflow=true", "tracking.tensorboard=false", "train.max_epochs=200"]:
        args += ["--set", item.replace(" ", "")]
    job = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, encoding="utf-8")
    _wait_for(lambda: (run / "checkpoints" / "last.pt").exists(), job)
    job.send_signal(signal.SIGTERM)
    log = job.communicate(timeout=120)[0]
    assert job.returncode == EXIT_INTERRUPTED, log
    assert "medt3d train: terminated (SIGTERM)" in log and "Traceback" not in log
    assert "continue with medt3d train --resume" in log
    assert not (run / FOLDER_LOCK).exists() and not list((run / "checkpoints").glob(".*.tmp*"))


def test_records_of_an_earlier_batch_in_the_folder_are_not_merged(tmp_path: Path):
    """A shard record left by an earlier batch (another model or other cases) does not complete this one."""
    from medt3d.inference.shards import summarize, write_cohort

    def shard_summary(case: str, sha: str, index: int) -> dict:
        result = {"case": case, "input": case, "status": "done", "error": None, "outputs": {}, "failed_outputs": {}}
        return summarize([result], {"sha256": sha}, tmp_path, {}, 1, shard=(index, 2))

    cohort = ["a", "b"]
    write_cohort(tmp_path, shard_summary("b", "old-model", 2), (2, 2), cohort=cohort)
    assert "shards" not in write_cohort(tmp_path, shard_summary("a", "new-model", 1), (1, 2), cohort=cohort)
    assert not (tmp_path / "summary.json").exists()
    merged = write_cohort(tmp_path, shard_summary("b", "new-model", 2), (2, 2), cohort=cohort)
    assert merged["shards"]["missing"] == [] and merged["model"]["sha256"] == "new-model"
    assert [c["case"] for c in json.loads((tmp_path / "summary.json").read_text())["cases"]] == ["a", "b"]
