"""Dice and speed of reduced-precision inference against fp32, on labelled scans.

``python -m medt3d.bundle.precision --model MODEL --data DATA [--precisions fp32 bf16] [--repeats 3]``

MODEL is a checkpoint, run folder or exported bundle; DATA is any layout medt3d reads (its
validation split is used when it has one). Each precision runs medt3d's Predictor (the route of
``medt3d infer`` and of the bundle's ``inference.json``) on every case, ``--repeats`` times in
alternating order; the median time per case is reported with the foreground Dice of each
precision and the share of voxels whose label differs from fp32. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medt3d.errors import InputError

__all__ = ["compare_precisions", "main"]


def _cases(data_dir: str | Path) -> list[dict[str, Any]]:
    from medt3d.data.datalist import build_datalist

    datalist = build_datalist(data_dir)
    cases = list(datalist.val) or list(datalist.train)
    if not cases:
        raise InputError(f"{data_dir}: no labelled cases; pass a dataset with labels")
    return cases


def compare_precisions(model: str | Path, data_dir: str | Path, precisions: tuple[str, ...] = ("fp32", "bf16"),
                       repeats: int = 3, device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Run every precision on every case; return Dice, time and label agreement per precision.

    Args:
        model: checkpoint, run folder or bundle (anything ``medt3d infer --model`` takes).
        data_dir: labelled data.
        precisions: the first one is the reference for the agreement.
        repeats: timed passes per precision (in alternating order); the first, untimed pass warms up.
        device: where the windows run.
        threads: torch CPU threads (``None`` keeps torch's default).
    """
    from medt3d.bundle.runtime import with_precision
    from medt3d.data.geometry import voxel_spacing
    from medt3d.data.readers import load_volume
    from medt3d.devices import resolve_device
    from medt3d.evaluation.metrics import case_metrics
    from medt3d.inference.predictor import Predictor
    from medt3d.models.loading import load_model

    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    net, cfg = load_model(model)
    net = net.to(dev)
    predictors = {p: Predictor(net, with_precision(cfg, p), dev) for p in precisions}
    cases = _cases(data_dir)
    labels = {c["name"]: load_volume(c["label"]) for c in cases}
    preds: dict[str, dict[str, np.ndarray]] = {p: {} for p in precisions}
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for p in precisions:  # warm-up (first-call overheads, autocast kernels)
        predictors[p].predict(cases[0]["image"])
    for r in range(repeats):
        order = precisions if r % 2 == 0 else tuple(reversed(precisions))
        for p in order:
            for case in cases:
                start = time.perf_counter()
                label = predictors[p].predict(case["image"]).label
                times[p].append(time.perf_counter() - start)
                preds[p][case["name"]] = np.asarray(label).squeeze()
    names = list(cfg.data.labels)
    reference = precisions[0]
    out: dict[str, Any] = {"model": str(model), "data": str(data_dir), "device": str(dev),
                           "threads": torch.get_num_threads(), "cases": len(cases), "repeats": repeats,
                           "torch": torch.__version__, "precisions": {}}
    for p in precisions:
        dice = []
        for case in cases:
            gt = labels[case["name"]]
            rows = case_metrics(preds[p][case["name"]], gt, voxel_spacing(gt.affine), names)
            dice.append(float(np.mean([row["dice"] for row in rows])))
        differ = [float((preds[p][n] != preds[reference][n]).mean()) for n in preds[p]]
        per_case = statistics.median(times[p])
        out["precisions"][p] = {"foreground_dice": float(np.mean(dice)), "median_seconds_per_case": per_case,
                                "labels_differing_from_" + reference: float(np.mean(differ))}
    ref = out["precisions"][reference]
    for p in precisions[1:]:
        entry = out["precisions"][p]
        entry["dice_change"] = entry["foreground_dice"] - ref["foreground_dice"]
        entry["speedup"] = ref["median_seconds_per_case"] / entry["median_seconds_per_case"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line; prints the JSON result."""
    parser = argparse.ArgumentParser(prog="python -m medt3d.bundle.precision", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint, run folder or exported bundle")
    parser.add_argument("--data", required=True, help="labelled data (validation split used when present)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="first one is the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    try:
        result = compare_precisions(args.model, args.data, tuple(args.precisions), args.repeats, args.device,
                                    args.threads)
    except (ValueError, FileNotFoundError) as err:
        print(f"bundle_precision: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
