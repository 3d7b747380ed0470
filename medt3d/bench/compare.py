"""Quality comparison: MedT3D against MONAI baselines on the same data, pipeline, seed and wall-clock budget.

Each network is trained with the same config (only ``network.name`` differs) under the same
``train.max_seconds`` budget. The learning-rate schedule follows the clock (see
:mod:`medt3d.training.optim`), so every network's cosine decay ends when its budget is spent,
however fast it runs. Each model is then scored in each scan's own geometry with
:func:`medt3d.evaluation.evaluate.evaluate`. The result is one JSON document.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from medt3d.config import load_config
from medt3d.io_utils import atomic_write_text

__all__ = ["BUDGET_EPOCHS", "budget_overrides", "compare_models", "machine", "self_validation_datalist",
           "train_on_budget"]

logger = logging.getLogger("medt3d.bench.compare")

#: ``train.max_epochs`` of a budgeted run: more than any budget here holds, so that time ends the run.
BUDGET_EPOCHS = 100_000


def self_validation_datalist(data_dir: str | Path, output: str | Path) -> Path:
    """Write a datalist JSON that trains on every case of ``data_dir`` and validates on the same cases.

    For data too small to hold a case out (one labelled scan): the score then measures how well a
    network fits that scan, not how it generalises. Validation copies are named ``<case>-as-val``,
    because a datalist may not list one case name on both sides. Test cases (a ``test/`` folder) stay
    out: they are never trained on.
    """
    from medt3d.data.datalist import build_datalist

    datalist = build_datalist(data_dir)
    cases = [*datalist.train, *datalist.val]
    val = [{**case, "name": f"{case['name']}-as-val"} for case in cases]
    path = Path(output) / "datalist_self_validation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"train": cases, "val": val}, indent=2) + "\n")
    return path


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__}


def epoch_overrides(name: str, epochs: int) -> list[str]:
    """Overrides that train network ``name`` for exactly ``epochs`` epochs, with no clock, without tracking.

    Fixed epochs make recipe experiments independent of how busy the machine is; an equal-budget
    comparison gives each network the number of epochs it runs in the same time on a quiet machine.
    """
    return [f"network.name={name}", "train.max_seconds=null", f"train.max_epochs={int(epochs)}",
            "tracking.mlflow=false", "tracking.tensorboard=false"]


def budget_overrides(name: str, budget_s: float) -> list[str]:
    """Overrides that train network ``name`` for ``budget_s`` seconds on ``train.clock``, without tracking."""
    return [f"network.name={name}", f"train.max_seconds={budget_s}", f"train.max_epochs={BUDGET_EPOCHS}",
            "tracking.mlflow=false", "tracking.tensorboard=false"]


def train_on_budget(config: str, overrides: list[str], data: str | Path, run_dir: Path) -> dict[str, Any]:
    """Train one network as configured and return what it ran: parameters, epochs, iterations, seconds.

    Returns:
        A dict with ``params_m``, ``epochs_run``, ``iterations``, ``train_seconds`` (wall clock),
        ``clock`` and ``clock_seconds`` (what the budget counted), ``best_val_mean_dice`` and
        ``checkpoint`` (the model to score: best, else last).
    """
    from medt3d.models.checkpoint import load_checkpoint
    from medt3d.networks import build_network
    from medt3d.training.engine import train

    cfg = load_config(config, overrides)
    params = sum(p.numel() for p in build_network(cfg).parameters())
    logger.info("training %s (%.2f M parameters) for at most %s s (%s clock)", cfg.network.name, params / 1e6,
                cfg.train.max_seconds, cfg.train.clock)
    start = time.time()
    result = train(cfg, data, run_dir, overwrite=True)  # the benchmark's own folder: a rerun replaces it
    seconds = time.time() - start
    last = load_checkpoint(result.last_checkpoint)
    return {
        "params_m": round(params / 1e6, 3),
        "epochs_run": result.epochs_run,
        "iterations": int(last["iteration"]),
        "train_seconds": round(seconds, 1),
        "clock": cfg.train.clock,
        "clock_seconds": round(float(last["train_seconds"]), 1),
        "best_val_mean_dice": round(result.best_metric, 4) if result.best_epoch > 0 else None,
        "checkpoint": str(result.model_checkpoint),
    }


def compare_models(data_dir: str | Path, output: str | Path, networks: list[str], budget_s: float,
                   config: str = "demo", overrides: list[str] | None = None) -> dict[str, Any]:
    """Train and score each network under the same budget; return the comparison as a dict.

    Args:
        data_dir: data folder (any layout medt3d reads).
        output: folder for each network's run and evaluation.
        networks: names from ``network.name`` (``medt3d``, ``unet``, ``unetr``, ``swinunetr``).
        budget_s: wall-clock training budget per network, in seconds.
        config: config preset or YAML path shared by all networks.
        overrides: ``--set`` style overrides shared by all networks.
    """
    from medt3d.data.datalist import build_datalist
    from medt3d.evaluation.evaluate import evaluate, select_cases

    # the cases each network is scored on, found now: a setting that leaves none (train.val_interval=0 on
    # data without a validation split) fails here, not after the first network's training
    first = load_config(config, [*(overrides or []), *budget_overrides(networks[0], budget_s)])
    select_cases(build_datalist(data_dir), first, "val", data_dir)
    out = Path(output)
    results: dict[str, Any] = {}
    for name in networks:
        run = train_on_budget(config, [*(overrides or []), *budget_overrides(name, budget_s)], data_dir,
                              out / name / "run")
        summary = evaluate(run["checkpoint"], data_dir, out / name / "evaluation", overlays=False)
        results[name] = {
            **run,
            "eval_foreground_dice": round(summary["foreground_mean"]["dice"], 4),
            "eval_per_class_dice": {k: round(v["dice"]["mean"], 4) for k, v in summary["per_class"].items() if v},
        }
    return {
        "data": str(data_dir),
        "config": config,
        "overrides": overrides or [],
        "budget_s_per_network": budget_s,
        "machine": machine(),
        "results": results,
    }
