"""The trainer's own ignite handlers and the progress they share.

Small ignite handlers for what MONAI's handlers do not cover: fixed-name atomic checkpoints
that load with weights_only=True, gradient clipping after (unscaled) backward, gate freezing,
per-epoch reseeding, and a JSON history for the curves.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents

from medt3d.config import Config
from medt3d.distributed import DistInfo, unwrap
from medt3d.io_utils import atomic_write_text
from medt3d.models.checkpoint import save_checkpoint
from medt3d.models.layout import RunLayout
from medt3d.networks import gate_parameters
from medt3d.training.optim import TrainingClock
from medt3d.training.seeding import EpochSeeding
from medt3d.training.tracking import loss_of

logger = logging.getLogger("medt3d.train")

KEY_METRIC = "val_mean_dice"


def finite_or_null(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History records with non-finite numbers as ``null``: JSON has no NaN (a metric of an empty class)."""
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()} for r in records]



class RunState:
    """Progress shared by the handlers (best metric survives a resume)."""

    def __init__(self, clock: TrainingClock, best_metric: float = -1.0, best_epoch: int = -1,
                 history: list | None = None) -> None:
        self.clock = clock  # seconds spent on this run, earlier sessions included; drives the time budget
        self.best_metric = best_metric
        self.best_epoch = best_epoch
        self.history: list[dict[str, Any]] = history or []
        self.losses: list[float] = []  # every iteration of this process, this session
        self.epoch_start = 0  # index in ``losses`` where the current epoch began
        self.session_epochs = 0  # epochs completed by this process since it started (or resumed)
        self.epoch_started_at = time.time()
        self.failure: str | None = None  # why training stopped early with an error (a non-finite loss)
        self.terms: dict[str, list[float]] = {}  # the objective's named loss terms, this epoch's iterations


def attach_handlers(trainer: SupervisedTrainer, evaluator: SupervisedEvaluator, cfg: Config, run_dir: Path,
                     state: RunState, info: DistInfo, scheduler: Any, reseed: EpochSeeding,
                     terms: Callable[[], dict[str, float]] = dict) -> None:
    """Attach reseeding, gate freezing, clipping, loss collection, checkpoints and the time budget.

    ``terms`` gives the named parts of the last step's loss (the objective's); their epoch means go
    into each ``history.json`` record and the trainer's metrics.
    """
    network = trainer.network
    gates = gate_parameters(unwrap(network))

    @trainer.on(Events.EPOCH_STARTED)
    def _reseed(engine: Engine) -> None:
        reseed(engine.state.epoch)
        frozen = engine.state.epoch <= cfg.train.freeze_gates_epochs
        for p in gates:
            p.requires_grad_(not frozen)
        state.epoch_start = len(state.losses)
        state.terms = {}
        state.epoch_started_at = time.time()

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def _clip(engine: Engine) -> None:
        if cfg.train.max_norm is None:
            return
        if engine.scaler is not None and engine.amp:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), cfg.train.max_norm)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _collect_loss(engine: Engine) -> None:
        loss = loss_of(engine.state.output)
        if not math.isfinite(loss):
            # stop here, before a checkpoint of poisoned weights exists; Training.run raises it
            state.failure = (f"training stopped at epoch {engine.state.epoch}, iteration {engine.state.iteration}: "
                             f"the loss is {loss} (not finite). Images with NaN or Inf voxels, or a learning rate "
                             f"too high for this data (train.lr={cfg.train.lr}), cause this; no checkpoint of this "
                             "epoch was saved; check the images with medt3d inspect, or lower train.lr")
            engine.terminate()
            return
        state.losses.append(loss)
        for name, value in terms().items():
            state.terms.setdefault(name, []).append(float(value))

    # ValidationHandler is attached before this, so the epoch's metric is known here.
    @trainer.on(Events.EPOCH_COMPLETED)
    def _checkpoint(engine: Engine) -> None:
        if state.failure is not None:
            return
        epoch = engine.state.epoch
        metric = evaluator.state.metrics.get(KEY_METRIC) if evaluator.state.epoch == epoch else None
        epoch_losses = state.losses[state.epoch_start:]
        record = {"epoch": epoch, "loss": sum(epoch_losses) / max(1, len(epoch_losses)),
                  "lr": float(engine.optimizer.param_groups[0]["lr"]),
                  "seconds": round(time.time() - state.epoch_started_at, 3)}  # training + validation
        for name, values in state.terms.items():  # the objective's loss terms, e.g. distillation's
            record[name] = engine.state.metrics[name] = sum(values) / len(values)
        if metric is not None:
            record[KEY_METRIC] = float(metric)
        state.history.append(record)
        state.session_epochs += 1
        improved = metric is not None and float(metric) > state.best_metric
        if improved:
            state.best_metric, state.best_epoch = float(metric), epoch
        if not info.is_main:
            return
        layout = RunLayout(run_dir)
        common = {"network": unwrap(network), "cfg": cfg, "epoch": epoch, "iteration": engine.state.iteration,
                  "optimizer": engine.optimizer, "scheduler": scheduler, "best_metric": state.best_metric,
                  "best_epoch": state.best_epoch, "train_seconds": state.clock.spent()}
        # history first: after a crash between the two writes, resume drops epochs newer than last.pt
        atomic_write_text(layout.history, json.dumps(finite_or_null(state.history), indent=1, allow_nan=False))
        if improved:
            save_checkpoint(layout.best, **common, metrics={KEY_METRIC: float(metric)})
        save_checkpoint(layout.last, **common)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _time_budget(engine: Engine) -> None:
        budget = cfg.train.max_seconds
        if budget is None:
            return
        elapsed = state.clock.spent()
        per_epoch = (elapsed - state.clock.spent_before) / max(1, state.session_epochs)
        if elapsed + per_epoch > budget:
            logger.info("stopping after epoch %d: train.max_seconds=%s would be exceeded", engine.state.epoch, budget)
            engine.terminate()
