"""Faults during training (issue 35, D1 and D4): a resume that changes settings under MLflow tracking,
Ctrl-C, a full disk while saving a checkpoint, and a failing MLflow store: one line and the documented
exit code, never a traceback."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
from ignite.engine import Events
from support import TINY, tiny_cfg

from medt3d.cli import main
from medt3d.errors import EXIT_ENVIRONMENT, EXIT_INTERRUPTED
from medt3d.training.engine import build_training, train
from medt3d.training.tracking import RUN_KEY_TAG


class _InterruptAfterEpoch:
    """Ctrl-C (KeyboardInterrupt) after the checkpoint of ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def attach(self, engine) -> None:
        @engine.on(Events.EPOCH_COMPLETED)
        def _stop(e) -> None:
            if e.state.epoch == self.epoch:
                raise KeyboardInterrupt


def _client(run: Path):
    import mlflow

    return mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")


def _runs(run: Path) -> list:
    client = _client(run)
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments], order_by=["attributes.start_time ASC"])


def test_resuming_an_interrupted_run_with_changed_settings_under_mlflow(phantom_dir: Path, tmp_path: Path, caplog):
    """D1: the interrupted session's MLflow run is unfinished; resuming it with --lr, a new seed and more
    epochs raised MLflow's "Changing param values is not allowed" (a traceback, exit 1)."""
    caplog.set_level(logging.INFO, logger="medt3d")
    run = tmp_path / "run"
    cfg = tiny_cfg("train.max_epochs=2", tracking=True)
    with pytest.raises(KeyboardInterrupt):
        build_training(cfg, phantom_dir, run, train_handlers=[_InterruptAfterEpoch(1)]).run()
    assert [r.info.status for r in _runs(run)] == ["RUNNING"]  # what made the resume crash
    assert any("holds epoch 1: continue with medt3d train --resume" in r.getMessage() for r in caplog.records)

    result = train(cfg, phantom_dir, run, resume=True,
                   overrides=["train.lr=0.01", "train.seed=7", "train.max_epochs=3"])
    assert result.epochs_run == 3
    (only,) = _runs(run)  # the same MLflow run, continued and closed
    assert only.info.status == "FINISHED" and only.data.tags[RUN_KEY_TAG]
    params = only.data.params
    assert params["train.lr"] == "0.003" and params["resume1.train.lr"] == "0.01"
    assert params["resume1.train.seed"] == "7" and params["resume1.train.max_epochs"] == "3"
    assert "resume1.train.batch_size" not in params  # unchanged settings are not logged again
    said = [r.getMessage() for r in caplog.records if "logged as resume1." in r.getMessage()]
    assert len(said) == 1 and "train.lr 0.003 -> 0.01" in said[0]

    # a second interrupted resume that changes the lr again: resume2.*
    with pytest.raises(KeyboardInterrupt):
        build_training(cfg, phantom_dir, run, resume=True, overrides=["train.max_epochs=5"],
                       train_handlers=[_InterruptAfterEpoch(4)]).run()
    train(cfg, phantom_dir, run, resume=True, overrides=["train.max_epochs=5", "train.lr=0.02"])
    runs = _runs(run)
    assert len(runs) == 2 and runs[1].data.tags["medt3d.resumed_from"] == runs[0].info.run_id
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert runs[1].data.params["resume1.train.lr"] == "0.02"


def test_two_run_folders_of_one_name_sharing_a_tracking_store_stay_apart(phantom_dir: Path, tmp_path: Path):
    """Another tracking URI shared by two runs called ``run``: each has its own MLflow run."""
    uri = f"sqlite:///{(tmp_path / 'shared.db').resolve()}"
    cfg = tiny_cfg("train.max_epochs=1", tracking=True)
    with pytest.raises(KeyboardInterrupt):  # leaves a RUNNING run called "run"
        build_training(cfg, phantom_dir, tmp_path / "a" / "run", tracking_uri=uri,
                       train_handlers=[_InterruptAfterEpoch(1)]).run()
    train(tiny_cfg("train.max_epochs=1", "train.lr=0.05", tracking=True), phantom_dir, tmp_path / "b" / "run",
          tracking_uri=uri)
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.data.params["train.lr"] for r in runs) == ["0.003", "0.05"]


def _cli(phantom_dir: Path, run: Path, *extra: str) -> list[str]:
    args = ["train", "--config", "demo", "--data-dir", str(phantom_dir), "--output", str(run)]
    for item in [*TINY, "tracking.tensorboard=false", "train.max_epochs=1", *extra]:
        args += ["--set", item.replace(" ", "")]
    return args


@pytest.fixture
def stderr_records():
    """Every log record of the run, to check that none carries a traceback."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    loggers = [logging.getLogger(), logging.getLogger("medt3d.stats"), logging.getLogger("ignite")]
    for lg in loggers:
        lg.addHandler(handler)
    yield records
    for lg in loggers:
        lg.removeHandler(handler)


def _no_traceback(records: list[logging.LogRecord], err: str) -> None:
    assert "Traceback" not in err
    assert not [r.getMessage() for r in records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("fault, code, line", [
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "medt3d train: interrupted"),
    (OSError(errno.ENOSPC, "No space left on device"), EXIT_ENVIRONMENT,
     "medt3d train: system error: [Errno 28] writing the run folder"),
])
def test_ctrl_c_and_a_full_disk_while_saving_a_checkpoint(phantom_dir: Path, tmp_path: Path, monkeypatch, capsys,
                                                         stderr_records, fault, code, line):
    """D4: Ctrl-C and a full disk inside training: one line and exit 130 or 3, no traceback."""
    import medt3d.training.handlers as handlers

    def save(*args, **kwargs):
        raise fault

    monkeypatch.setattr(handlers, "save_checkpoint", save)
    assert main(_cli(phantom_dir, tmp_path / "run", "tracking.mlflow=false")) == code
    err = capsys.readouterr().err
    assert line in err and err.count("medt3d train:") == 1
    _no_traceback(stderr_records, err)


def test_torch_save_on_a_full_disk_is_exit_3_naming_the_run(phantom_dir: Path, tmp_path: Path, monkeypatch, capsys,
                                                          stderr_records):
    """D4 as the chaos run met it: ``torch.save`` reports a full disk as a RuntimeError ("unexpected pos"),
    which was a traceback and exit 1; on a disk with (here: seemingly) no space left it is ENOSPC, exit 3."""
    import torch

    import medt3d.io_utils as io_utils

    def short_write(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 11392 vs 11280")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(io_utils, "_FULL_BELOW", 1 << 62)  # every disk counts as full
    run = tmp_path / "run"
    assert main(_cli(phantom_dir, run, "tracking.mlflow=false")) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "system error: [Errno 28] writing the run folder" in err and "no space left on the disk of" in err
    assert "no checkpoint was saved yet" in err and err.count("medt3d train:") == 1
    assert not list((run / "checkpoints").glob("*")), "no checkpoint, whole or partial"
    _no_traceback(stderr_records, err)


def test_a_failing_mlflow_store_is_one_line(phantom_dir: Path, tmp_path: Path, monkeypatch, capsys, stderr_records):
    """D4 on D1: an MLflow error (here a refused param) is one line with exit code 3, not a traceback."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def refuse(self, *args, **kwargs):
        raise MlflowException("Changing param values is not allowed")

    monkeypatch.setattr(MlflowClient, "log_batch", refuse)
    assert main(_cli(phantom_dir, tmp_path / "run", "tracking.mlflow=true")) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "system error: MLflow tracking (sqlite:///" in err and "tracking.mlflow=false" in err
    _no_traceback(stderr_records, err)
