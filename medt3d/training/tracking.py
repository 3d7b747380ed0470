"""Experiment tracking and progress lines of a training run: TensorBoard, MLflow, MONAI's StatsHandler.

MLflow refuses to change a parameter once a run has logged it ("Changing param values is not allowed").
A run folder has one MLflow run: a resumed run continues it while it is unfinished (an interrupted or
killed session), and a setting changed on resume (``--lr``, ``--epochs``, a new seed) is logged under
``resumeN.<key>`` (N counting the resumes that changed settings), with a log line naming what changed.
A run that finished gets a new MLflow run when resumed (tagged ``medt3d.resumed_from``). Runs are found
by a tag of the run folder's path, not by name: two run folders called ``run`` that share one tracking
server stay apart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MLFlowHandler, StatsHandler, TensorBoardStatsHandler

from medt3d.config import Config, config_to_dict
from medt3d.models.layout import RunLayout

__all__ = ["RUN_KEY_TAG", "MLflowRun", "TrackingError", "loss_of", "progress_handlers", "tracking_failure", "tracking_handlers",
           "tracking_uri_of"]

logger = logging.getLogger("medt3d.train")

#: MLflow tag holding a hash of the run folder's absolute path: how a resumed run finds its MLflow run
RUN_KEY_TAG = "medt3d.run_key"
_RESUME_PREFIX = re.compile(r"^resume(\d+)\.")
_UNFINISHED = "RUNNING"


class TrackingError(OSError):
    """The MLflow store failed (unreachable, locked, refused a value): exit code 3, no traceback."""


def tracking_failure(err: BaseException, uri: str | None) -> TrackingError | None:
    """``err`` as a one-line :class:`TrackingError` when MLflow raised it, else ``None``."""
    if type(err).__module__.split(".")[0] != "mlflow":
        return None
    root = err  # MLflow wraps the store's own error (e.g. sqlite3's "database or disk is full")
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    reason = " ".join((f"{type(root).__name__}: {root}" if root is not err else str(err)).split())[:300]
    return TrackingError(f"MLflow tracking ({uri or 'tracking.mlflow_uri'}) failed: {reason}. The checkpoints "
                         "saved so far are kept: fix the tracking store, or pass --set tracking.mlflow=false, "
                         "then continue with --resume")


def _run_key(run_dir: Path) -> str:
    return hashlib.sha1(str(run_dir.resolve()).encode("utf-8")).hexdigest()[:20]


class MLflowRun:
    """The one MLflow run of a run folder, chosen once and shared by the trainer's and evaluator's handlers.

    Args:
        run_dir: the run folder.
        resume: whether this session resumes the run (otherwise an unfinished MLflow run of the folder,
            left by a killed session, is marked KILLED and a new one is started).
    """

    def __init__(self, run_dir: Path, resume: bool) -> None:
        self.run_dir, self.resume = run_dir, resume
        self.run: Any = None
        self.prefix: str | None = None  # "resumeN." once this session changed a logged setting

    def get(self, client: Any, experiment_id: str) -> Any:
        """The MLflow run this session logs to (found or created on the first call)."""
        if self.run is None:
            self.run = self._resolve(client, experiment_id)
        return self.run

    def _resolve(self, client: Any, experiment_id: str) -> Any:
        key = _run_key(self.run_dir)
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
                                  order_by=["attributes.start_time DESC"])
        unfinished = [r for r in runs if r.info.status == _UNFINISHED]
        if self.resume and unfinished:
            chosen = unfinished.pop(0)
            logger.info("MLflow: continuing run %s of %s", chosen.info.run_id, self.run_dir)
        else:
            tags = {RUN_KEY_TAG: key, "medt3d.run_dir": str(self.run_dir.resolve())}
            if self.resume and runs:
                tags["medt3d.resumed_from"] = runs[0].info.run_id
            chosen = client.create_run(experiment_id=experiment_id, run_name=self.run_dir.resolve().name, tags=tags)
        for stale in unfinished:  # sessions killed before they could close their run
            client.set_terminated(stale.info.run_id, "KILLED")
        return client.get_run(chosen.info.run_id)

    def split(self, logged: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        """The params to log: new keys as they are, changed ones under ``resumeN.<key>``; says what changed."""
        fresh = {k: v for k, v in params.items() if k not in logged}
        changed = {k: v for k, v in params.items() if k in logged and logged[k] != str(v)}
        if not changed:
            return fresh
        if self.prefix is None:
            done = [int(m.group(1)) for k in logged if (m := _RESUME_PREFIX.match(k))]
            self.prefix = f"resume{max(done, default=0) + 1}."
        logger.info("MLflow run %s logged these settings before; this session's values are logged as %s<key>: %s",
                    self.run.info.run_id, self.prefix,
                    ", ".join(f"{k} {logged[k]} -> {v}" for k, v in changed.items()))
        fresh.update({f"{self.prefix}{k}": v for k, v in changed.items() if f"{self.prefix}{k}" not in logged})
        return fresh


class _RunHandler(MLFlowHandler):
    """MONAI's MLFlowHandler logging to the run folder's :class:`MLflowRun`, never re-logging a changed param."""

    def __init__(self, run: MLflowRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._medt3d_run = run

    def start(self, engine: Any) -> None:
        """Pick the run folder's MLflow run, then let MONAI log the params."""
        if not self.cur_run:
            self._set_experiment()
            self.cur_run = self._medt3d_run.get(self.client, self.experiment.experiment_id)
        super().start(engine)

    def _log_params(self, params: dict[str, Any]) -> None:
        if self.cur_run is None:
            return super()._log_params(params)
        logged = self.client.get_run(self.cur_run.info.run_id).data.params
        fresh = self._medt3d_run.split(logged, params)
        if fresh:
            super()._log_params(fresh)


def tracking_uri_of(cfg: Config, run_dir: Path, tracking_uri: str | None) -> str:
    """The MLflow tracking URI a run uses: the argument, ``tracking.mlflow_uri``, else ``<run>/mlflow.db``."""
    return tracking_uri or cfg.tracking.mlflow_uri or f"sqlite:///{RunLayout(run_dir).mlflow_db.resolve()}"


def tracking_handlers(cfg: Config, run_dir: Path, tracking_uri: str | None, trainer: SupervisedTrainer,
                      evaluator: SupervisedEvaluator, resume: bool = False) -> None:
    """Attach TensorBoard and MLflow (rank 0 only), as ``cfg.tracking`` asks.

    Args:
        cfg: the run's config.
        run_dir: the run folder.
        tracking_uri: MLflow tracking URI (default :func:`tracking_uri_of`).
        trainer: the trainer (loss, lr, params).
        evaluator: the evaluator (validation metrics).
        resume: this session resumes the run (see :class:`MLflowRun`).
    """
    layout = RunLayout(run_dir)
    if cfg.tracking.tensorboard:
        tb_dir = str(layout.tensorboard)
        TensorBoardStatsHandler(log_dir=tb_dir, tag_name="train_loss",
                                output_transform=loss_of).attach(trainer)
        TensorBoardStatsHandler(log_dir=tb_dir, iteration_log=False,
                                global_epoch_transform=lambda _: trainer.state.epoch).attach(evaluator)
    if cfg.tracking.mlflow:
        params = {f"{section}.{key}": value for section, values in config_to_dict(cfg).items()
                  for key, value in values.items()}
        run = MLflowRun(run_dir, resume)
        common = {"tracking_uri": tracking_uri_of(cfg, run_dir, tracking_uri),
                  "experiment_name": cfg.tracking.experiment, "run_name": run_dir.resolve().name,
                  "artifact_location": str(layout.mlflow_artifacts.resolve())}
        _RunHandler(run, **common, tag_name="train_loss", output_transform=loss_of,
                    experiment_param=params, optimizer_param_names="lr",
                    artifacts=[str(layout.config), str(layout.best)],
                    close_on_complete=True).attach(trainer)
        _RunHandler(run, **common, iteration_log=False, global_epoch_transform=lambda _: trainer.state.epoch
                    ).attach(evaluator)
        _quiet_mlflow_tracebacks()


def _drop_mlflow_tracebacks(record: logging.LogRecord) -> bool:
    """A logging filter: MLflow's own logged tracebacks go (its error reaches the user as one TrackingError)."""
    return not (record.name.startswith("mlflow") and record.exc_info)


def _quiet_mlflow_tracebacks() -> None:
    """MLflow's SQL store logs a whole traceback (``logger.exception``) before it raises: filter those out
    on MLflow's own handlers and the root's."""
    for handler in [*logging.getLogger("mlflow").handlers, *logging.getLogger().handlers]:
        if _drop_mlflow_tracebacks not in handler.filters:
            handler.addFilter(_drop_mlflow_tracebacks)


def loss_of(output: dict[str, Any] | list[dict[str, Any]]) -> float:
    """The scalar loss of a trainer iteration output (decollated: one dict per sample, each with the batch loss)."""
    loss = (output[0] if isinstance(output, list) else output)["loss"]
    return float(loss.detach().item() if hasattr(loss, "detach") else loss)


class _QuietStats(StatsHandler):
    """MONAI's StatsHandler without its traceback on an exception: the command line prints one line."""

    def exception_raised(self, _engine: Any, e: Exception) -> None:
        """Re-raise ``e`` unlogged (MONAI's logs the whole traceback first)."""
        raise e


def _stats_logger() -> str:
    """Name of a logger for MONAI's StatsHandler that writes to stderr.

    MONAI's ``get_logger`` adds a stdout handler only to loggers that do not exist yet, and turns
    propagation off; creating the logger first keeps stdout clean for JSON and the lines visible.
    """
    stats = logging.getLogger("medt3d.stats")
    if not stats.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        stats.addHandler(handler)
    return stats.name


def progress_handlers(trainer: SupervisedTrainer, evaluator: SupervisedEvaluator) -> None:
    """A tqdm bar with loss and ETA on a terminal; plain log lines otherwise."""
    if sys.stderr.isatty():
        from ignite.handlers import ProgressBar

        ProgressBar(persist=True).attach(trainer, output_transform=loss_of)
    else:
        _QuietStats(name=_stats_logger(), tag_name="loss", output_transform=loss_of,
                    iteration_log=lambda engine, _: engine.state.iteration % max(1, engine.state.epoch_length // 2) == 0
                    ).attach(trainer)
    _QuietStats(name=_stats_logger(), iteration_log=False,
                global_epoch_transform=lambda _: trainer.state.epoch).attach(evaluator)
