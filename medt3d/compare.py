"""Quality comparison: MedT3D against MONAI baselines on the same data, pipeline, seed and wall-clock budget.

Each network is trained with the same config (only ``network.name`` differs) under the same
``train.max_seconds`` budget, then its best checkpoint is scored on the validation cases in each
scan's own geometry with :func:`medt3d.evaluation.evaluate`. The result is one JSON document.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from medt3d.config import load_config

__all__ = ["compare_models"]

logger = logging.getLogger("medt3d.compare")


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
    from medt3d.evaluation import evaluate
    from medt3d.networks import build_network
    from medt3d.training import train

    out = Path(output)
    results: dict[str, Any] = {}
    for name in networks:
        cfg = load_config(config, [*(overrides or []), f"network.name={name}", f"train.max_seconds={budget_s}",
                                   "train.val_interval=1", "tracking.mlflow=false", "tracking.tensorboard=false"])
        params = sum(p.numel() for p in build_network(cfg).parameters())
        logger.info("training %s (%.2f M parameters) for at most %.0f s", name, params / 1e6, budget_s)
        start = time.time()
        result = train(cfg, data_dir, out / name / "run")
        seconds = time.time() - start
        summary = evaluate(result.best_checkpoint, data_dir, out / name / "evaluation", overlays=False)
        results[name] = {
            "params_m": round(params / 1e6, 3),
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
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "results": results,
    }
