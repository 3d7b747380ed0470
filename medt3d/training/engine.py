"""Training with MONAI engines: SupervisedTrainer + SupervisedEvaluator with ignite handlers.

``train(cfg, data_dir, output)`` checks the data before anything runs, builds the pipeline from
the config, trains with per-iteration warm-up/cosine schedule, validates by sliding window every
``train.val_interval`` epochs, and keeps ``checkpoints/last.pt`` and ``checkpoints/best.pt``
(atomic). ``resume=True`` continues from ``last.pt`` and reproduces the uninterrupted run's losses,
because every epoch reseeds its randomness from (seed, epoch, rank).

:func:`build_training` is the one place the engines are assembled: ``medt3d train`` runs it, and so
do an exported bundle's ``configs/train.json`` and ``configs/multi_gpu_train.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    EarlyStopHandler,
    LrScheduleHandler,
    MeanDice,
    ValidationHandler,
    from_engine,
)
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import AsDiscreted, Compose
from monai.utils import set_determinism
from torch.nn.parallel import DistributedDataParallel

from medt3d.config import Config, save_config
from medt3d.data.datalist import Datalist
from medt3d.data.datasets import build_dataset
from medt3d.data.folds import write_splits
from medt3d.data.transforms import build_train_transforms, build_val_transforms
from medt3d.devices import resolve_device
from medt3d.distributed import (
    DistInfo,
    cleanup_distributed,
    init_distributed,
    shard,
    wait_for_all_ranks,
)
from medt3d.errors import FULL_OR_READ_ONLY, InputError
from medt3d.inference.inferer import build_sliding_window_inferer
from medt3d.io_utils import check_writable_dir
from medt3d.locks import FOLDER_LOCK, FolderLock
from medt3d.models.checkpoint import load_checkpoint, restore_rng
from medt3d.models.layout import RunLayout
from medt3d.networks import build_network
from medt3d.training.batches import patch_batch, plain_batch
from medt3d.training.handlers import KEY_METRIC, RunState, attach_handlers
from medt3d.training.objective import SupervisedObjective, TrainingObjective
from medt3d.training.optim import TrainingClock, build_optimizer, build_scheduler
from medt3d.training.run_data import prepare_datalist
from medt3d.training.run_folder import MIN_FREE_DISK_MB, check_output, clear_run_folder, refuse_another_run
from medt3d.training.seeding import EpochSampler, EpochSeeding
from medt3d.training.tracking import (
    progress_handlers,
    tracking_failure,
    tracking_handlers,
    tracking_uri_of,
)

__all__ = ["KEY_METRIC", "MIN_FREE_DISK_MB", "TrainResult", "Training", "build_training", "patch_batch", "train"]

logger = logging.getLogger("medt3d.train")


@dataclass
class TrainResult:
    """Where a training run put its outputs and how it went."""

    run_dir: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    losses: list[float] = field(default_factory=list)

    @property
    def best_checkpoint(self) -> Path:
        """Path of the best checkpoint."""
        return RunLayout(self.run_dir).best

    @property
    def last_checkpoint(self) -> Path:
        """Path of the last checkpoint."""
        return RunLayout(self.run_dir).last

    @property
    def model_checkpoint(self) -> Path:
        """The checkpoint to use: the best one, or the last one of a run that never validated."""
        return self.best_checkpoint if self.best_checkpoint.is_file() else self.last_checkpoint

    def outcome(self) -> str:
        """One line on the best validation, or why there is none, and where the checkpoint to use is."""
        if self.best_epoch >= 1:
            return f"best {KEY_METRIC} {self.best_metric:.4f} at epoch {self.best_epoch}; model {self.model_checkpoint}"
        return (f"no validation {KEY_METRIC} after {self.epochs_run} epoch(s) (no validation cases, or "
                f"train.val_interval not reached); model: the last epoch's weights, {self.model_checkpoint}")


# --------------------------------------------------------------------------- main entry


def train(cfg: Config, data_dir: str | Path, output: str | Path, resume: bool = False,
          tracking_uri: str | None = None, overwrite: bool = False, overrides: Sequence[str] = ()) -> TrainResult:
    """Train a network on ``data_dir`` and write the run to ``output``.

    Args:
        cfg: the resolved config.
        data_dir: a data folder or datalist JSON (any layout ``build_datalist`` knows).
        output: the run folder (checkpoints, config.yaml, history.json, tensorboard, mlflow.db).
        resume: continue from ``output/checkpoints/last.pt`` with the run's own config (embedded in the
            checkpoint, epochs included); ``cfg`` is not used, only ``overrides`` change it.
        tracking_uri: MLflow tracking URI; default is ``sqlite:///<output>/mlflow.db``.
        overwrite: replace a run already in ``output`` (without it, and without ``resume``, such a
            folder is refused).
        overrides: ``section.key=value`` settings applied on top of the run's config when resuming
            (``train.max_epochs=N`` extends or cuts the run); already part of ``cfg`` otherwise.

    Returns:
        A TrainResult with the best metric and the per-iteration losses of this process.

    Raises:
        ValueError: ``output`` holds another run and neither ``resume`` nor ``overwrite`` is set.
    """
    return build_training(cfg, data_dir, output, resume=resume, tracking_uri=tracking_uri, overwrite=overwrite,
                          overrides=overrides).run()


@dataclass
class Training:
    """The assembled engines of one training run, ready to :meth:`run`.

    Attributes:
        cfg: the config the run uses (the checkpoint's own when resuming).
        run_dir: the run folder.
        trainer: MONAI's SupervisedTrainer, with every medt3d handler attached.
        evaluator: the sliding-window SupervisedEvaluator that validation runs.
        train_dataset: the (cached) training dataset, this rank's share.
        datalist: the training and validation cases.
        info: rank and world size of this process.
        state: the progress the handlers share (clock, best metric, history, losses).
        tracking_uri: the MLflow tracking URI (None without MLflow).
        lock: the run folder's lock (rank 0), released when :meth:`run` ends.
    """

    cfg: Config
    run_dir: Path
    trainer: SupervisedTrainer
    evaluator: SupervisedEvaluator
    train_dataset: Any
    datalist: Datalist
    info: DistInfo
    state: RunState
    tracking_uri: str | None = None
    lock: FolderLock | None = None

    def run(self) -> TrainResult:
        """Train until ``train.max_epochs``, the time budget or early stopping; leave the process group.

        Raises:
            KeyboardInterrupt: Ctrl-C or SIGTERM (the command line's exit code 130), after a line on what is kept.
            OSError: a full or read-only disk, or the MLflow store failing (a :class:`TrackingError`), as one
                line that names the run folder and how to continue.
        """
        try:
            start = time.time()
            self.state.clock.start()
            if self.trainer.state.epoch < self.cfg.train.max_epochs:
                self.trainer.run()
            if self.state.failure is not None:
                raise InputError(self.state.failure)
            result = TrainResult(run_dir=self.run_dir, best_metric=self.state.best_metric,
                                 best_epoch=self.state.best_epoch, epochs_run=self.trainer.state.epoch,
                                 losses=self.state.losses)
            if self.info.is_main:  # the one line on the outcome (the train command prints no other)
                logger.info("done in %.0f s: %s", time.time() - start, result.outcome())
            wait_for_all_ranks()  # no rank tears the process group down while another still uses it
        except KeyboardInterrupt:
            if self.info.is_main:
                logger.warning("training interrupted in epoch %d; %s", self.trainer.state.epoch, self._kept())
            raise
        except Exception as err:
            failure = tracking_failure(err, self.tracking_uri)
            if failure is not None:
                raise failure from None
            if isinstance(err, OSError) and err.errno in FULL_OR_READ_ONLY:
                raise OSError(err.errno, f"writing the run folder {self.run_dir} failed: "
                                         f"{err.strerror or err} ({err.filename or 'a checkpoint'}); "
                                         f"{self._kept()} after freeing space") from None
            raise
        finally:
            if self.lock is not None:
                self.lock.release()
            cleanup_distributed()
        return result

    def _kept(self) -> str:
        """What a stopped run keeps, and how to continue it."""
        last = RunLayout(self.run_dir).last
        if not last.is_file():
            return f"no checkpoint was saved yet: rerun with --overwrite (or another --output than {self.run_dir})"
        try:
            epoch = f"epoch {load_checkpoint(last)['epoch']}"
        except Exception:  # noqa: BLE001 - only for the message
            epoch = "the last complete epoch"
        return f"{last} holds {epoch}: continue with medt3d train --resume --output {self.run_dir}"


def build_training(cfg: Config, data_dir: str | Path, output: str | Path, resume: bool = False,
                   tracking_uri: str | None = None, train_handlers: Sequence[Any] = (),
                   val_handlers: Sequence[Any] = (), distributed: bool | None = None, max_epochs: int | None = None,
                   device: str | torch.device | None = None, inferer: Inferer | None = None,
                   overwrite: bool = False, overrides: Sequence[str] = (),
                   objective: TrainingObjective | None = None) -> Training:
    """Check the data and assemble the trainer and evaluator of ``medt3d train``, without running them.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), the process joins the group and trains its share
    with DistributedDataParallel; only rank 0 writes.

    Args:
        cfg: the resolved config.
        data_dir: a data folder or datalist JSON.
        output: the run folder.
        resume: continue from ``output/checkpoints/last.pt`` with the run's own config (see :func:`train`).
        tracking_uri: MLflow tracking URI for ``tracking.mlflow``.
        train_handlers: more handlers to attach to the trainer (anything with ``attach(engine)``;
            ``None`` entries are skipped), after medt3d's own: a bundle's ``train#handlers``.
        val_handlers: the same for the evaluator: a bundle's ``validate#handlers``.
        distributed: ``True`` refuses to run outside ``torchrun``; ``None`` joins a torchrun group if there is one.
        max_epochs: overrides ``train.max_epochs`` (also when resuming).
        overwrite: replace a run already in ``output`` (otherwise refused unless resuming).
        overrides: ``section.key=value`` settings applied to the run's config when resuming.
        device: overrides ``train.device`` (under torchrun, CUDA ranks use their local GPU).
        inferer: the trainer's inferer (default: MONAI's ``SimpleInferer``, the whole patch at once).
        objective: what a step optimises (default: :class:`~medt3d.training.objective.SupervisedObjective`
            of the run's config); distillation passes its own (:mod:`medt3d.training.distill`).

    Raises:
        ValueError: ``distributed=True`` without torchrun, ``output`` holding another run, or bad data
            (every problem, each naming its file).
        FileNotFoundError: ``resume`` without ``last.pt``.
    """
    if distributed and "RANK" not in os.environ:
        raise InputError("distributed training runs under torchrun (RANK and WORLD_SIZE are not set); run it with "
                         "torchrun, e.g. python -m torch.distributed.run --nproc_per_node=2 ...")
    run_dir = Path(output)
    device = resolve_device(cfg.train.device if device is None else str(device))
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    lock = None
    try:
        if info.is_main:  # one training per run folder (D15); released when the run ends
            lock = FolderLock(check_writable_dir(run_dir), FOLDER_LOCK, command="medt3d train")
        resume_payload = None
        if resume:
            cfg, resume_payload = _resumed(run_dir, overrides)
        if info.is_main:
            refuse_another_run(run_dir, resume, overwrite)
        if max_epochs is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_epochs=int(max_epochs)))
        objective = (objective or SupervisedObjective(cfg)).to(device)
        training = _build(cfg, data_dir, run_dir, resume_payload, tracking_uri, device, info, train_handlers,
                          val_handlers, inferer or SimpleInferer(), overwrite, objective)
        training.lock = lock
        return training
    except BaseException:
        if lock is not None:
            lock.release()
        cleanup_distributed()
        raise


def _resumed(run_dir: Path, overrides: Sequence[str]) -> tuple[Config, dict[str, Any]]:
    """The checkpoint to resume from and the run's own config, with ``overrides`` on top."""
    from medt3d.config import apply_overrides, config_from_dict

    payload = load_checkpoint(RunLayout(run_dir).last)
    source = f"{payload['path']} (embedded config{', with overrides' if overrides else ''})"
    return config_from_dict(apply_overrides(payload["config"], overrides), source=source), payload


@dataclass
class _Loaders:
    """The data side of a run: this rank's training dataset, both loaders and the per-epoch reseeding."""

    train_dataset: Any
    train: DataLoader
    val: DataLoader
    iterations: int
    reseed: EpochSeeding


def _build(cfg: Config, data_dir: str | Path, run_dir: Path, resume_payload: dict[str, Any] | None,
           tracking_uri: str | None, device: torch.device, info: DistInfo, train_handlers: Sequence[Any],
           val_handlers: Sequence[Any], inferer: Inferer, overwrite: bool, objective: TrainingObjective) -> Training:
    """Assemble the run in order: checked data, loaders, network, optimiser, engines, resumed state, handlers."""
    resume = resume_payload is not None
    datalist = _checked_data(cfg, data_dir, run_dir, info, resume, overwrite, objective.accepts_unlabelled)
    loaders = _loaders(cfg, datalist, run_dir, info, objective.accepts_unlabelled)
    network = _network(cfg, device, info, resume_payload)
    optimizer = build_optimizer(cfg, network)
    clock = TrainingClock(cfg.train.max_seconds, resume_payload.get("train_seconds", 0.0) if resume else 0.0,
                          kind=cfg.train.clock)
    scheduler = build_scheduler(cfg, optimizer, loaders.iterations, clock)
    trainer, evaluator = _engines(cfg, device, info, network, optimizer, scheduler, loaders, inferer, objective)
    state = RunState(clock)
    if resume_payload is not None:
        _restore(resume_payload, run_dir, optimizer, scheduler, state, trainer)
    # ignite makes the run's first DataLoader iterator before its first EPOCH_STARTED: seed it as that epoch's
    loaders.reseed(trainer.state.epoch + 1)
    attach_handlers(trainer, evaluator, cfg, run_dir, state, info, scheduler, loaders.reseed, objective.terms)
    if cfg.train.early_stopping_patience is not None:
        EarlyStopHandler(patience=cfg.train.early_stopping_patience,
                         score_function=lambda e: e.state.metrics[KEY_METRIC], trainer=trainer).attach(evaluator)
    if info.is_main:
        tracking_handlers(cfg, run_dir, tracking_uri, trainer, evaluator, resume=resume)
        progress_handlers(trainer, evaluator)
        _log_start(cfg, device, info, datalist, loaders.iterations)
    for handlers, engine in ((train_handlers, trainer), (val_handlers, evaluator)):
        for handler in handlers:
            if handler is not None:  # a disabled component of a bundle config
                handler.attach(engine)
    return Training(cfg=cfg, run_dir=run_dir, trainer=trainer, evaluator=evaluator,
                    train_dataset=loaders.train_dataset, datalist=datalist, info=info, state=state,
                    tracking_uri=tracking_uri_of(cfg, run_dir, tracking_uri) if cfg.tracking.mlflow else None)


def _checked_data(cfg: Config, data_dir: str | Path, run_dir: Path, info: DistInfo, resume: bool,
                  overwrite: bool, unlabelled: bool) -> Datalist:
    """The checked datalist; rank 0 checks the run folder first and clears it (``--overwrite``) only after."""
    if info.is_main:
        check_output(run_dir)
    datalist = prepare_datalist(cfg, data_dir, unlabelled)
    if info.is_main:  # only now, with the data checked, may --overwrite delete the old run
        clear_run_folder(run_dir, resume, overwrite)
        save_config(cfg, RunLayout(run_dir).config)
        if datalist.folds is not None:  # the run keeps the folds it used, as a cross-validation folder does
            write_splits(RunLayout(run_dir).splits, datalist.folds)
    return datalist


def _loaders(cfg: Config, datalist: Datalist, run_dir: Path, info: DistInfo, unlabelled: bool) -> _Loaders:
    """This rank's share of the cases as (cached) datasets and loaders, with the sampler the epochs reseed."""
    set_determinism(cfg.train.seed)
    train_cases = shard(datalist.train, info, even=True)
    val_cases = shard(datalist.val, info, even=True)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else RunLayout(run_dir).cache
    train_ds = build_dataset(train_cases, build_train_transforms(cfg, unlabelled), cfg, cache_dir=cache_dir / "train")
    val_ds = build_dataset(val_cases, build_val_transforms(cfg), cfg, cache_dir=cache_dir / "val")

    iterations = cfg.train.iterations_per_epoch or max(1, -(-len(train_ds) // cfg.train.batch_size))
    generator = torch.Generator()
    sampler = EpochSampler(len(train_ds), iterations * cfg.train.batch_size)
    reseed = EpochSeeding(cfg, info.rank, train_ds, sampler, generator)
    train_loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler,
                              num_workers=cfg.data.num_workers, generator=generator)
    val_loader = DataLoader(val_ds, batch_size=1, num_workers=cfg.data.num_workers)
    return _Loaders(train_ds, train_loader, val_loader, iterations, reseed)


def _network(cfg: Config, device: torch.device, info: DistInfo,
             resume_payload: dict[str, Any] | None) -> torch.nn.Module:
    """The network on ``device``, with the checkpoint's weights when resuming, wrapped in DDP under torchrun."""
    network = build_network(cfg).to(device)
    if resume_payload is not None:
        network.load_state_dict(resume_payload["network"])
    if info.enabled:
        network = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    return network


def _engines(cfg: Config, device: torch.device, info: DistInfo, network: torch.nn.Module, optimizer: Any,
             scheduler: Any, loaders: _Loaders, inferer: Inferer,
             objective: TrainingObjective) -> tuple[SupervisedTrainer, SupervisedEvaluator]:
    """MONAI's trainer and sliding-window evaluator, with the learning-rate schedule and validation attached."""
    num_classes = cfg.data.num_classes
    # MONAI's engines autocast with torch.autocast("cuda") only, so mixed precision is a CUDA feature here
    amp = cfg.train.amp and device.type == "cuda"
    if cfg.train.amp and not amp and info.is_main:
        logger.info("train.amp is on but the device is %s: training in float32 (mixed precision needs CUDA)",
                    device)

    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=loaders.val,
        network=network,
        prepare_batch=plain_batch,
        inferer=build_sliding_window_inferer(cfg),
        postprocessing=Compose([AsDiscreted(keys="pred", argmax=True, to_onehot=num_classes),
                                AsDiscreted(keys="label", to_onehot=num_classes)]),
        key_val_metric={KEY_METRIC: MeanDice(include_background=False,
                                             output_transform=from_engine(["pred", "label"]))},
        amp=amp,
    )
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=cfg.train.max_epochs,
        epoch_length=loaders.iterations,
        train_data_loader=loaders.train,
        network=network,
        prepare_batch=objective.prepare_batch,  # the objective's seam: its inputs and its loss
        optimizer=optimizer,
        loss_function=objective.loss_function,
        inferer=inferer,
        amp=amp,
        # decollated outputs (one dict per sample), as MONAI's handlers expect, e.g. those --tracking mlflow adds
        decollate=True,
    )
    for engine in (trainer, evaluator):  # ignite logs an exception before raising it: Training.run says it once
        engine.logger.setLevel(logging.CRITICAL)
    LrScheduleHandler(lr_scheduler=scheduler, print_lr=False, epoch_level=False).attach(trainer)
    if cfg.train.val_interval > 0:
        ValidationHandler(interval=cfg.train.val_interval, validator=evaluator, epoch_level=True).attach(trainer)
    return trainer, evaluator


def _restore(payload: dict[str, Any], run_dir: Path, optimizer: Any, scheduler: Any, state: RunState,
             trainer: SupervisedTrainer) -> None:
    """Put the optimiser, schedule, random state, best metric, history and position of ``last.pt`` back."""
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    restore_rng(payload["rng"])
    state.best_metric = payload["best_metric"]
    state.best_epoch = payload["best_epoch"]
    history_file = RunLayout(run_dir).history
    if history_file.is_file():
        state.history = [h for h in json.loads(history_file.read_text()) if h["epoch"] <= payload["epoch"]]
    trainer.state.epoch = payload["epoch"]
    trainer.state.iteration = payload["iteration"]
    logger.info("resuming %s from epoch %d (iteration %d)", run_dir, trainer.state.epoch, trainer.state.iteration)


def _log_start(cfg: Config, device: torch.device, info: DistInfo, datalist: Datalist, iterations: int) -> None:
    """The one line on what trains, where, on how many cases and for how long."""
    network_name = f"medt3d ({cfg.network.preset} preset)" if cfg.network.name == "medt3d" else cfg.network.name
    logger.info("training %s on %s: %d train / %d val cases, %d iterations/epoch, %d epochs%s",
                network_name, device, len(datalist.train), len(datalist.val),
                iterations, cfg.train.max_epochs,
                f", {info.world_size} processes" if info.enabled else "")
