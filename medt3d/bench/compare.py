"""Quality comparison: MedT3D against MONAI baselines on the same data, pipeline, seed and wall-clock budget.

Each network is trained with the same config (only ``network.name`` differs) under the same
``train.max_seconds`` budget. By default a short timing run first fits ``train.max_epochs`` to that
budget, so every network's learning-rate schedule ends inside it. Each best checkpoint is then scored
on the validation cases in each scan's own geometry with :func:`medt3d.evaluation.evaluate.evaluate`. The
result is one JSON document.
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

__all__ = ["compare_models", "fit_epochs_to_budget", "self_validation_datalist"]

logger = logging.getLogger("medt3d.bench.compare")

#: share of the budget that the fitted epochs are planned to fill
BUDGET_USE = 0.9
#: epochs of the timing run that fits ``train.max_epochs`` to the budget (the first is not timed)
CALIBRATION_EPOCHS = 4


def self_validation_datalist(data_dir: str | Path, output: str | Path) -> Path:
    """Write a datalist JSON that trains on every case of ``data_dir`` and validates on the same cases.

    For data too small to hold a case out (one labelled scan): the score then measures how well a
    network fits that scan, not how it generalises. Validation copies are named ``<case>-as-val``,
    because a datalist may not list one case name on both sides.
    """
    from medt3d.data.datalist import build_datalist

    datalist = build_datalist(data_dir)
    cases = datalist.cases
    val = [{**case, "name": f"{case['name']}-as-val"} for case in cases]
    path = Path(output) / "datalist_self_validation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"train": cases, "val": val}, indent=2) + "\n")
    return path


def _epoch_seconds(history: list[dict[str, Any]]) -> float:
    """Typical seconds per epoch (training + validation) of a run, leaving out the warm-up first epoch."""
    times = sorted(h["seconds"] for h in (history[1:] or history))
    return times[len(times) // 2]


def fit_epochs_to_budget(config: str, overrides: list[str], data_dir: str | Path, output: Path, budget_s: float,
                         calibration_epochs: int = CALIBRATION_EPOCHS) -> tuple[int, float]:
    """Time a short run and return (max_epochs that fit ``budget_s``, seconds per epoch).

    Fitting the epoch count lets each network's learning-rate schedule finish inside the budget
    (warm-up and the full cosine decay), instead of being cut off half-way by ``train.max_seconds``.
    """
    from medt3d.training.engine import train

    cfg = load_config(config, [*overrides, f"train.max_epochs={calibration_epochs}", "train.max_seconds=null"])
    result = train(cfg, data_dir, output)
    history = json.loads((result.run_dir / "history.json").read_text(encoding="utf-8"))
    per_epoch = _epoch_seconds(history)
    # 10% headroom: epoch times vary by +-30% on a shared 2-core machine; if the run still overruns,
    # train.max_seconds stops it in the last tenth of the cosine decay, where the rate is already tiny
    return max(1, int(BUDGET_USE * budget_s / per_epoch)), per_epoch


def compare_models(data_dir: str | Path, output: str | Path, networks: list[str], budget_s: float,
                   config: str = "demo", overrides: list[str] | None = None,
                   fit_epochs: bool = True, calibration_epochs: int = CALIBRATION_EPOCHS) -> dict[str, Any]:
    """Train and score each network under the same budget; return the comparison as a dict.

    Args:
        data_dir: data folder (any layout medt3d reads).
        output: folder for each network's run and evaluation.
        networks: names from ``network.name`` (``medt3d``, ``unet``, ``unetr``, ``swinunetr``).
        budget_s: wall-clock training budget per network, in seconds.
        config: config preset or YAML path shared by all networks.
        overrides: ``--set`` style overrides shared by all networks.
        fit_epochs: time ``calibration_epochs`` epochs of each network first (not counted in the
            budget) and set its ``train.max_epochs`` to what fits the budget; otherwise every network
            keeps the config's ``max_epochs`` and ``train.max_seconds`` cuts it off.
        calibration_epochs: length of the timing run (at least 2; the first epoch is left out).
    """
    from medt3d.evaluation.evaluate import evaluate
    from medt3d.networks import build_network
    from medt3d.training.engine import train

    if calibration_epochs < 2:
        raise ValueError(f"calibration_epochs must be >= 2 (the first epoch is not timed), got {calibration_epochs}")
    out = Path(output)
    results: dict[str, Any] = {}
    for name in networks:
        shared = [*(overrides or []), f"network.name={name}", "train.val_interval=1", "tracking.mlflow=false",
                  "tracking.tensorboard=false"]
        fitted: dict[str, Any] = {}
        if fit_epochs:
            epochs, per_epoch = fit_epochs_to_budget(config, shared, data_dir, out / name / "calibration", budget_s,
                                                     calibration_epochs)
            shared.append(f"train.max_epochs={epochs}")
            fitted = {"fitted_max_epochs": epochs, "calibrated_epoch_seconds": round(per_epoch, 2)}
            logger.info("%s: %.2f s per epoch, so %d epochs fit %.0f s", name, per_epoch, epochs, budget_s)
        cfg = load_config(config, [*shared, f"train.max_seconds={budget_s}"])
        params = sum(p.numel() for p in build_network(cfg).parameters())
        logger.info("training %s (%.2f M parameters) for at most %.0f s", name, params / 1e6, budget_s)
        start = time.time()
        result = train(cfg, data_dir, out / name / "run")
        seconds = time.time() - start
        summary = evaluate(result.best_checkpoint, data_dir, out / name / "evaluation", overlays=False)
        results[name] = {
            "params_m": round(params / 1e6, 3),
            **fitted,
            "epochs_run": result.epochs_run,
            "train_seconds": round(seconds, 1),
            "best_val_mean_dice": round(result.best_metric, 4),
            "best_epoch": result.best_epoch,
            "eval_foreground_dice": round(summary["foreground_mean"]["dice"], 4),
            "eval_per_class_dice": {k: round(v["dice"]["mean"], 4) for k, v in summary["per_class"].items() if v},
        }
    return {
        "data": str(data_dir),
        "config": config,
        "overrides": overrides or [],
        "budget_s_per_network": budget_s,
        "fit_epochs": fit_epochs,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "results": results,
    }
