"""Checkpoints: weights, optimiser, scheduler, progress, RNG states and the resolved config.

A checkpoint is a plain dict of tensors and Python primitives so that it loads with
``torch.load(weights_only=True)`` (no pickled code runs). Files are written atomically.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medt3d.config import Config, config_to_dict
from medt3d.errors import InputError, brief
from medt3d.io_utils import atomic_save
from medt3d.models.layout import RUN_CHECKPOINTS

__all__ = ["FORMAT", "capture_rng", "restore_rng", "save_checkpoint", "load_checkpoint"]

FORMAT = "medt3d-checkpoint-1"


def capture_rng() -> dict[str, Any]:
    """RNG states of torch, numpy and Python, in a weights_only-safe form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, network: torch.nn.Module, cfg: Config, epoch: int, iteration: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    best_metric: float = -1.0, best_epoch: int = -1, metrics: dict[str, float] | None = None,
                    train_seconds: float = 0.0) -> Path:
    """Write a checkpoint atomically (temporary file, then rename).

    ``train_seconds`` is the time the run has trained so far on its ``train.clock`` (its
    ``train.max_seconds`` budget continues from it on a resume).
    """
    payload = {
        "format": FORMAT,
        "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "iteration": int(iteration),
        "best_metric": float(best_metric),
        "best_epoch": int(best_epoch),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "train_seconds": float(train_seconds),
        "rng": capture_rng(),
        "config": config_to_dict(cfg),
    }
    atomic_save(path, lambda tmp: torch.save(payload, tmp))
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a medt3d checkpoint safely (``weights_only=True``) and check its format.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable medt3d checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / c for c in RUN_CHECKPOINTS if (path / c).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in run folder {path} (looked for {', '.join(RUN_CHECKPOINTS)}); "
                                    "pass a checkpoint file, or train the run first")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt/truncated/unsafe files
        raise InputError(f"{path}: not a readable checkpoint ({brief(err)}); "
                         "pass a .pt file written by medt3d train") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a medt3d checkpoint (missing format tag {FORMAT!r}); pass a .pt file "
                         "written by medt3d train")
    payload["path"] = str(path)
    return payload
