"""The MedT3D-vs-baseline comparison (equal wall-clock budgets) and the budget-following schedule."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
from support import TINY, tiny_cfg

from medt3d.bench.compare import BUDGET_EPOCHS, budget_overrides, compare_models, self_validation_datalist
from medt3d.data.datalist import build_datalist
from medt3d.models.checkpoint import load_checkpoint
from medt3d.training.engine import train
from medt3d.training.optim import TrainingClock, build_scheduler, lr_factor


def test_lr_factor_warms_up_then_follows_the_budget_that_runs_out_first():
    assert lr_factor(0, warmup=4, total=104) == pytest.approx(1 / 5)
    assert lr_factor(3, warmup=4, total=104) == pytest.approx(4 / 5)
    assert lr_factor(4, warmup=4, total=104) == pytest.approx(1.0)
    assert lr_factor(54, warmup=4, total=104) == pytest.approx(0.5)  # half the steps
    assert lr_factor(104, warmup=4, total=104) == pytest.approx(0.0, abs=1e-12)
    # the time budget is ahead of the steps: the cosine follows the time
    assert lr_factor(5, warmup=4, total=104, time_fraction=0.5) == pytest.approx(0.5)
    assert lr_factor(5, warmup=4, total=104, time_fraction=1.0) == pytest.approx(0.0, abs=1e-12)
    # and the other way round
    assert lr_factor(54, warmup=4, total=104, time_fraction=0.1) == pytest.approx(0.5)


def test_scheduler_decays_with_the_clock_and_a_resumed_clock_counts_earlier_sessions():
    cfg = tiny_cfg("train.max_epochs=1000", "train.warmup_epochs=0", "train.max_seconds=100")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    clock = TrainingClock(100.0, spent_s=75.0)  # a resumed run that has spent 3/4 of its budget
    scheduler = build_scheduler(cfg, optimizer, iterations_per_epoch=1, clock=clock)
    optimizer.step()
    scheduler.step()
    expected = 0.5 * (1 + math.cos(math.pi * clock.fraction()))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-3)
    assert optimizer.param_groups[0]["lr"] < 0.16  # 0.146 at 3/4; far below the steps' schedule (~1.0)
    assert TrainingClock(None).fraction() == 0.0


def test_a_budgeted_run_stops_on_time_and_records_its_seconds(phantom_dir: Path, tmp_path: Path):
    result = train(tiny_cfg(*budget_overrides("medt3d", 4.0)[1:], "train.val_interval=0"), phantom_dir,
                   tmp_path / "run")
    assert 1 <= result.epochs_run < BUDGET_EPOCHS
    last = load_checkpoint(result.last_checkpoint)
    assert 0.0 < last["train_seconds"] < 8.0  # the stop rule allows one epoch past the budget at most
    # without validation there is no best.pt, and the last checkpoint is the model
    assert not result.best_checkpoint.exists() and result.model_checkpoint == result.last_checkpoint


def test_cpu_clock_counts_work_and_not_waiting():
    wall, cpu = TrainingClock(10.0), TrainingClock(10.0, kind="cpu")
    wall.start()
    cpu.start()
    time.sleep(0.4)  # another process, or the host, has the cores
    assert wall.spent() >= 0.4
    assert cpu.spent() < 0.1
    waited = cpu.spent()
    end = time.process_time() + 0.2
    while time.process_time() < end:  # work: 0.2 s of CPU on one thread
        pass
    assert cpu.spent() - waited == pytest.approx(0.2 / torch.get_num_threads(), rel=0.5)
    with pytest.raises(ValueError, match="sundial"):
        TrainingClock(10.0, kind="sundial")


def test_a_run_on_the_cpu_clock_does_not_spend_its_budget_while_the_process_waits(
        phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pause = 0.6  # an epoch has at least two iterations, so the waiting passes the budget however fast they run
    step = torch.optim.AdamW.step

    def slow_step(self, *args, **kwargs):  # every iteration waits, as under a busy host
        time.sleep(pause)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", slow_step)
    budget = 1.0
    started = time.monotonic()
    result = train(tiny_cfg(*budget_overrides("medt3d", budget)[1:], "train.clock=cpu", "train.val_interval=0"),
                   phantom_dir, tmp_path / "run")
    wall = time.monotonic() - started
    last = load_checkpoint(result.last_checkpoint)
    waited = pause * last["iteration"]
    assert waited > budget  # on the wall clock the waiting alone would have spent the budget
    assert last["train_seconds"] < 2 * budget  # the stop rule allows one epoch past the budget at most
    assert last["train_seconds"] <= wall - 0.8 * waited  # the waiting was not counted


def test_compare_trains_each_network_on_the_same_budget(phantom_dir: Path, tmp_path: Path):
    budget = 3.0
    # UNet needs more than one voxel at its 1/16 bottleneck
    overrides = [*TINY, "patch.roi_size=[32, 32, 16]"]
    report = compare_models(phantom_dir, tmp_path, ["medt3d", "unet"], budget, "demo", overrides)
    assert report["budget_s_per_network"] == budget
    assert set(report["results"]) == {"medt3d", "unet"}
    for name, row in report["results"].items():
        assert row["epochs_run"] >= 1 and row["iterations"] >= row["epochs_run"]
        assert row["train_seconds"] < budget + 60  # stops after the epoch that would overrun (plus setup)
        assert set(row["eval_per_class_dice"]) == {"organ_a", "organ_b", "organ_c"}
        assert (tmp_path / name / "evaluation" / "metrics.csv").is_file()
        assert load_checkpoint(row["checkpoint"])["train_seconds"] < 2 * budget  # one epoch past at most
    assert report["results"]["unet"]["params_m"] > report["results"]["medt3d"]["params_m"]


def test_compare_refuses_data_with_nothing_to_score_before_training(phantom_dir: Path, tmp_path: Path):
    # the phantoms' training cases alone, and no validation (so none held out): refused before any training
    train_only = tmp_path / "train_only.json"
    train_only.write_text(json.dumps({"train": build_datalist(phantom_dir).train}))
    with pytest.raises(ValueError, match="no validation case to score"):
        compare_models(train_only, tmp_path / "out", ["medt3d", "unet"], 3.0, "demo", [*TINY, "train.val_interval=0"])
    assert not (tmp_path / "out").exists()


def test_self_validation_datalist_validates_on_the_training_scans(phantom_dir: Path, tmp_path: Path):
    path = self_validation_datalist(phantom_dir, tmp_path)
    datalist = build_datalist(path)
    original = build_datalist(phantom_dir)
    assert [c["image"] for c in datalist.train] == [c["image"] for c in original.cases]
    assert [c["image"] for c in datalist.val] == [c["image"] for c in original.cases]
    assert {c["name"] for c in datalist.val} == {f"{c['name']}-as-val" for c in original.cases}


def test_self_validation_datalist_leaves_the_test_cases_out(phantom_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    shutil.copytree(data / "val", data / "test")  # the held-out test case of a train/val/test folder
    for sub in ("images", "masks"):
        for f in (data / "test" / sub).iterdir():
            f.rename(f.with_name("held_out_" + f.name))
    original = build_datalist(data)
    assert original.test, "the folder layout should give a test case"
    datalist = build_datalist(self_validation_datalist(data, tmp_path / "out"))
    trained = {c["image"] for c in datalist.train} | {c["image"] for c in datalist.val}
    assert trained == {c["image"] for c in [*original.train, *original.val]}
    assert not trained & {c["image"] for c in original.test}
