"""Training with MONAI engines on tiny phantoms: checkpoints, resume, tracking, bad input."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny_cfg, tiny_cli_args

from medt3d.cli import build_parser
from medt3d.commands.common import config_from_args
from medt3d.commands.train import FLAG_KEYS
from medt3d.data.datalist import DatasetError
from medt3d.errors import hint_of
from medt3d.models.checkpoint import load_checkpoint
from medt3d.models.loading import load_checkpoint_model as load_model
from medt3d.networks import build_network, gate_parameters
from medt3d.training.engine import train
from medt3d.training.losses import build_loss


def test_amp_on_a_cpu_trains_in_float32_and_says_so(phantom_dir: Path, tmp_path: Path, caplog):
    # MONAI's engines autocast on CUDA only; on a CPU the run must still work, in float32, and say why
    caplog.set_level(logging.INFO, logger="medt3d.train")
    result = train(tiny_cfg("train.amp=true", "train.max_epochs=1"), phantom_dir, tmp_path / "run")
    assert result.epochs_run == 1 and all(np.isfinite(result.losses))
    assert "mixed precision needs CUDA" in caplog.text
    assert "float32" in caplog.text


def test_train_writes_checkpoints_history_and_tracking(phantom_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    result = train(tiny_cfg(tracking=True), phantom_dir, run)
    assert result.epochs_run == 2
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert last["epoch"] == 2 and last["iteration"] == 4
    for key in ("network", "optimizer", "scheduler", "rng", "config"):
        assert last[key] is not None, key
    assert 1 <= best["epoch"] <= 2
    assert best["best_metric"] == pytest.approx(result.best_metric)
    model, cfg = load_model(run / "checkpoints" / "best.pt")
    assert cfg.network.preset == "tiny"
    assert not list((run / "checkpoints").glob(".*tmp*")), "temporary checkpoint files left behind"

    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("val_mean_dice" in h and "lr" in h and h["seconds"] > 0 for h in history)
    # best.pt holds the epoch with the highest validation Dice of the history
    top = max(history, key=lambda h: h["val_mean_dice"])
    assert (best["epoch"], best["best_metric"]) == (top["epoch"], pytest.approx(top["val_mean_dice"]))
    assert (run / "config.yaml").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name("medt3d")
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert len(client.get_metric_history(mlrun.info.run_id, "train_loss")) == 4
    assert len(client.get_metric_history(mlrun.info.run_id, "val_mean_dice")) == 2
    assert len(client.get_metric_history(mlrun.info.run_id, "lr_group_0")) >= 2
    assert mlrun.data.params["train.max_epochs"] == "2"
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"config.yaml", "best.pt"} <= artifacts


@pytest.mark.parametrize("sampling", [(), ("train.iterations_per_epoch=6", "data.cache=none"),
                                      ("train.iterations_per_epoch=3", "patch.num_samples=2", "train.batch_size=2",
                                       "data.cache=none")],
                         ids=["one-pass-per-epoch", "fixed-iterations", "fixed-iterations-two-per-batch"])
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(phantom_dir: Path, tmp_path: Path, monkeypatch,
                                                              sampling):
    import medt3d.training.handlers as handlers

    # several iterations per epoch from 2 cases, uncached: a resumed run must draw the same cases, crops and order
    cfg = tiny_cfg("train.max_epochs=3", *sampling)
    full = train(cfg, phantom_dir, tmp_path / "full")
    iterations = len(full.losses) // 3

    real_save = handlers.save_checkpoint

    def save_then_crash(path, **kwargs):
        real_save(path, **kwargs)
        if Path(path).name == "last.pt" and kwargs["epoch"] == 1:
            raise KeyboardInterrupt("simulated crash right after the epoch-1 checkpoint")

    monkeypatch.setattr(handlers, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, phantom_dir, tmp_path / "split")
    monkeypatch.setattr(handlers, "save_checkpoint", real_save)
    second = train(cfg, phantom_dir, tmp_path / "split", resume=True)
    assert second.epochs_run == 3 and len(second.losses) == 2 * iterations  # epochs 2 and 3 only
    np.testing.assert_allclose(second.losses, full.losses[iterations:], rtol=1e-5, atol=1e-6)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["network"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["network"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    history = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_an_unreadable_checkpoint_is_one_short_line_with_torchs_reason(tmp_path: Path):
    bad = tmp_path / "not_a_checkpoint.pt"
    torch.save({"network": np.arange(3)}, bad)  # a NumPy array: refused by weights_only loading
    with pytest.raises(ValueError) as caught:
        load_checkpoint(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: not a readable checkpoint")
    assert "Weights only load failed" in message  # torch's reason, its first sentence (errors.brief)
    assert "\n" not in message and len(message) < 300 + len(str(bad))  # not torch's whole page
    assert hint_of(message)  # and what to do


def test_a_checkpoint_with_nan_weights_is_refused_by_every_loader(phantom_dir: Path, tmp_path: Path):
    train(tiny_cfg("train.max_epochs=1"), phantom_dir, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    name = next(k for k, v in payload["network"].items() if v.is_floating_point())
    payload["network"][name] = torch.full_like(payload["network"][name], float("nan"))
    poisoned = tmp_path / "poisoned.pt"
    torch.save(payload, poisoned)
    with pytest.raises(ValueError, match=rf"{poisoned}: 1 weight tensor\(s\) hold NaN or Inf \(e.g. {name}\)"):
        load_model(poisoned)


def test_resume_without_checkpoint_is_a_clear_error(phantom_dir: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        train(tiny_cfg(), phantom_dir, tmp_path / "never-ran", resume=True)


def test_a_folder_holding_a_run_is_refused_unless_resume_or_overwrite(phantom_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    first = train(tiny_cfg("train.max_epochs=2"), phantom_dir, run)
    best_before = (run / "checkpoints" / "best.pt").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a training run .*--resume.*--overwrite"):
        train(tiny_cfg("train.max_epochs=1"), phantom_dir, run)
    # nothing of the first run was touched by the refused one
    assert (run / "checkpoints" / "best.pt").read_bytes() == best_before
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2]

    bad = tmp_path / "bad_data"
    shutil.copytree(phantom_dir, bad)
    mask = sorted((bad / "train" / "masks").glob("*.nii*"))[0]
    mask.write_bytes(mask.read_bytes()[:200])  # truncated: the gate refuses the data
    with pytest.raises(DatasetError):
        train(tiny_cfg("train.max_epochs=1"), bad, run, overwrite=True)
    assert (run / "checkpoints" / "best.pt").read_bytes() == best_before  # bad data never cost the old run

    leftover = run / "checkpoints" / ".last.pt.abc123.tmp"  # what kill -9 during a save leaves
    leftover.write_bytes(b"partial")
    second = train(tiny_cfg("train.max_epochs=1", "train.seed=5"), phantom_dir, run, overwrite=True)
    assert second.epochs_run == 1 and first.epochs_run == 2
    assert not leftover.exists()
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["train"]["seed"] == 5
    best = run / "checkpoints" / "best.pt"
    assert not best.exists() or load_checkpoint(best)["epoch"] == 1  # no best.pt of the old run


def test_resume_keeps_the_runs_own_config_and_epochs_unless_overridden(phantom_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(tiny_cfg("train.max_epochs=1"), phantom_dir, run)
    # the config passed now (5 epochs, another lr) is not the run's: resuming keeps the run's own
    again = train(tiny_cfg("train.max_epochs=5", "train.lr=0.5"), phantom_dir, run, resume=True)
    assert again.epochs_run == 1 and again.losses == []
    extended = train(tiny_cfg(), phantom_dir, run, resume=True, overrides=["train.max_epochs=2"])
    assert extended.epochs_run == 2 and len(extended.losses) > 0
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["config"]["train"]["max_epochs"] == 2
    assert last["config"]["train"]["lr"] == tiny_cfg().train.lr


def test_cli_refuses_resume_and_overwrite_together(phantom_dir: Path, tmp_path: Path, capsys):
    from medt3d.cli import main

    code = main(["train", "--data-dir", str(phantom_dir), "--output", str(tmp_path / "r"), "--resume", "--overwrite"])
    assert code == 2
    assert "pass one of them" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_images_with_nan_voxels_are_refused_before_training(phantom_dir: Path, tmp_path: Path):
    import nibabel as nib

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    path = sorted((data / "train" / "images").glob("*.nii*"))[0]
    img = nib.load(path)
    array = np.asarray(img.dataobj, dtype=np.float32)
    array[4:6, 4:6, 4:6] = np.nan  # e.g. a broken reconstruction
    nib.save(nib.Nifti1Image(array, img.affine), path)
    with pytest.raises(DatasetError, match=rf"{path}: 8 NaN and 0 Inf voxel\(s\) of \d+"):
        train(tiny_cfg(), data, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_non_finite_loss_stops_training_without_a_poisoned_checkpoint(phantom_dir: Path, tmp_path: Path,
                                                                        monkeypatch):
    import medt3d.training.objective as training  # the default objective builds the engine's loss

    real_loss = training.build_loss
    calls = {"n": 0}

    class Diverging(torch.nn.Module):
        def __init__(self, cfg) -> None:
            super().__init__()
            self.loss = real_loss(cfg)

        def forward(self, pred, label):
            calls["n"] += 1
            value = self.loss(pred, label)
            return value * float("inf") if calls["n"] == 3 else value  # diverges at the 3rd iteration

    monkeypatch.setattr(training, "build_loss", Diverging)
    run = tmp_path / "run"
    cfg = tiny_cfg("train.max_epochs=3", "train.iterations_per_epoch=2")
    with pytest.raises(ValueError, match=r"stopped at epoch 2, iteration 3: the loss is (inf|nan) \(not finite\)"):
        train(cfg, phantom_dir, run)
    # epoch 1 was saved; nothing of epoch 2 (whose weights saw the non-finite gradient) was
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    history = json.loads((run / "history.json").read_text())  # valid JSON
    assert [h["epoch"] for h in history] == [1]


def test_gates_stay_frozen_for_the_first_epochs(phantom_dir: Path, tmp_path: Path):
    cfg = tiny_cfg("train.max_epochs=1", "train.freeze_gates_epochs=1", "train.max_norm=null")
    fresh = build_network(cfg)
    gate_ids = {id(p) for p in gate_parameters(fresh)}
    gate_names = [n for n, p in fresh.named_parameters() if id(p) in gate_ids]
    assert gate_names, "the network exposes no gate parameters"
    train(cfg, phantom_dir, tmp_path / "frozen")
    trained = load_checkpoint(tmp_path / "frozen" / "checkpoints" / "last.pt")["network"]
    initial = fresh.state_dict()
    for name in gate_names:
        torch.testing.assert_close(trained[name], initial[name])
    others = [n for n, _ in fresh.named_parameters() if n not in gate_names]
    assert any(not torch.equal(trained[n], initial[n]) for n in others), "nothing trained"


def _copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_mask_fails_before_training(phantom_dir: Path, tmp_path: Path):
    data = _copy_dataset(phantom_dir, tmp_path / "data")
    victim = sorted((data / "train" / "masks").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetError) as err:
        train(tiny_cfg(), data, tmp_path / "run")
    assert victim.name.split(".")[0] in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_label_values_out_of_range_fail_before_training(phantom_dir: Path, tmp_path: Path):
    data = _copy_dataset(phantom_dir, tmp_path / "data")
    import nibabel as nib

    mask = sorted((data / "val" / "masks").iterdir())[0]
    img = nib.load(mask)
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(arr, img.affine), mask)
    with pytest.raises(ValueError) as err:
        train(tiny_cfg(), data, tmp_path / "run")
    assert str(mask) in str(err.value) and "7" in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unwritable_output_fails_fast(phantom_dir: Path, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="not writable"):
        train(tiny_cfg(), phantom_dir, blocker / "run")


def test_no_validation_split_uses_a_seeded_split(phantom_dir: Path, tmp_path: Path, caplog):
    data = tmp_path / "flat"
    shutil.copytree(phantom_dir / "train", data / "train")
    shutil.copytree(phantom_dir / "val", data / "train", dirs_exist_ok=True)
    caplog.set_level(logging.INFO, logger="medt3d.train")
    result = train(tiny_cfg("train.max_epochs=1", "data.val_fraction=0.34"), data, tmp_path / "run")
    assert "seeded split" in caplog.text
    assert result.epochs_run == 1


@pytest.mark.parametrize("loss", ["dice_ce", "dice", "weighted_dice", "focal"])
def test_each_loss_trains_on_logits(loss: str):
    extra = [f"train.loss={loss}"]
    if loss in ("weighted_dice", "focal"):
        extra.append("train.class_weights=[0.1, 1.0, 1.0, 2.0]")
    cfg = tiny_cfg(*extra)
    fn = build_loss(cfg)
    logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 1, 8, 8, 8))
    value = fn(logits, target)
    value.backward()
    assert torch.isfinite(value) and logits.grad is not None and logits.grad.abs().sum() > 0
    perfect = fn(torch.nn.functional.one_hot(target[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 20, target)
    assert perfect < value


def test_weighted_dice_needs_weights():
    with pytest.raises(ValueError, match="class_weights"):
        build_loss(tiny_cfg("train.loss=weighted_dice"))


def test_plain_flags_mean_the_same_as_set():
    parser = build_parser()
    a = parser.parse_args(["train", "--config", "demo", "--data-dir", "x", "--output", "y", "--epochs", "3",
                           "--batch-size", "4", "--lr", "0.01", "--device", "cpu", "--network", "unet"])
    b = parser.parse_args(["train", "--config", "demo", "--data-dir", "x", "--output", "y",
                           "--set", "train.max_epochs=3", "--set", "train.batch_size=4", "--set", "train.lr=0.01",
                           "--set", "train.device=cpu", "--set", "network.name=unet"])
    cfg_a = config_from_args(a, {key: getattr(a, flag) for flag, key in FLAG_KEYS.items()})
    cfg_b = config_from_args(b, {key: getattr(b, flag) for flag, key in FLAG_KEYS.items()})
    assert cfg_a == cfg_b
    assert cfg_a.train.max_epochs == 3 and cfg_a.network.name == "unet" and cfg_a.train.lr == 0.01
    assert isinstance(a, argparse.Namespace)


def _run_cli(args: list[str], tmp_path: Path, timeout: int = 600, **kw):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, encoding="utf-8", errors="replace", **kw)


def test_torchrun_two_cpu_processes_train_with_ddp(phantom_dir: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    proc = _run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medt3d",
                     "train", "--data-dir", str(phantom_dir), "--output", str(run), "--device", "cpu",
                     *tiny_cli_args("train.max_epochs=1")], tmp_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1
    # two training cases shared by two ranks with batch size 1: one iteration per rank and epoch
    assert ckpt["iteration"] == 1
    assert all(not k.startswith("module.") for k in ckpt["network"]), "DDP wrapper leaked into the checkpoint"
    assert out.count("training medt3d") == 1, "only rank 0 should log"


def test_killed_run_resumes_from_last_checkpoint(phantom_dir: Path, tmp_path: Path):
    import signal
    import time

    run = tmp_path / "killed"
    args = ["-m", "medt3d", "train", "--data-dir", str(phantom_dir), "--output", str(run),
            *tiny_cli_args("train.max_epochs=50")]
    proc = _run_cli(args, tmp_path)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[0] if proc.poll() is not None else "no checkpoint in time"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(last)["epoch"]  # whole, loadable after kill -9
    assert 1 <= done < 50
    resumed = _run_cli(["-m", "medt3d", "train", "--data-dir", str(phantom_dir), "--output", str(run),
                        *tiny_cli_args(f"train.max_epochs={done + 1}"), "--resume"], tmp_path)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"resuming {run} from epoch {done}" in out
    assert "nvImageCodec" not in out  # MONAI's notice about a GPU decoder medt3d does not use
    assert load_checkpoint(last)["epoch"] == done + 1
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, done + 2))


def test_the_outcome_is_one_sensible_line_once(phantom_dir: Path, tmp_path: Path, monkeypatch, caplog, capsys):
    """D16: "best val_mean_dice -1.0000 at epoch -1" was printed, twice (a log line and the command's print)."""
    import medt3d.training.engine as engine
    from medt3d.cli import main

    caplog.set_level(logging.INFO, logger="medt3d")
    result = train(tiny_cfg("train.max_epochs=1", "train.val_interval=0"), phantom_dir, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if "done in" in r.getMessage()]
    assert len(lines) == 1 and "-1.0000" not in lines[0] and "epoch -1" not in lines[0]
    assert "no validation val_mean_dice after 1 epoch(s)" in lines[0] and str(result.last_checkpoint) in lines[0]
    validated = engine.TrainResult(tmp_path / "run", 0.8125, 3, 4)
    assert validated.outcome().startswith("best val_mean_dice 0.8125 at epoch 3; model ")

    monkeypatch.setattr(engine, "train", lambda *args, **kwargs: result)
    assert main(["train", "--config", "demo", "--data-dir", str(phantom_dir), "--output", str(tmp_path / "r2")]) == 0
    assert "best" not in capsys.readouterr().out  # the command adds no second line
