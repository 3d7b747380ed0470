#!/usr/bin/env python
"""Labels or probabilities back to the scan's grid (``infer.resample``): Dice on a real scan, memory on a big one.

Prints JSON: for each model, the Dice of one class against a reference label with each mode; and,
with ``--big``, the peak RSS and phase times of each mode on a synthetic 512x512x300 CT at
0.8x0.8x1.5 mm (an untrained ``ct_abdomen`` MedT3D with three classes), each mode in its own process.

Example:
    python scripts/resample_compare.py --scan ../shared/data/ct_spleen/spleen_2_ct.nii.gz \\
        --label ../shared/data/ct_spleen/spleen_2_label.nii.gz --model RUN1 RUN2 --big
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODES = ("labels", "probabilities")


def _dice_per_mode(model: str, scan: str, label: str, value: int) -> dict[str, float]:
    from medt3d.data.readers import load_volume
    from medt3d.inference.predictor import Predictor
    from medt3d.models.loading import load_model

    network, cfg = load_model(model)
    reference = np.asarray(load_volume(label)[0]) == value
    out = {}
    for mode in MODES:
        mode_cfg = dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, resample=mode))
        predicted = Predictor(network, mode_cfg, "cpu").predict(scan).label[0].numpy() == value
        out[mode] = round(float(2 * (predicted & reference).sum() / (predicted.sum() + reference.sum())), 4)
    return out


def _big_one(mode: str, path: Path) -> dict[str, object]:
    import torch

    from medt3d.config import load_config
    from medt3d.inference.predictor import Predictor
    from medt3d.networks import build_network

    cfg = load_config("ct_abdomen", [f"infer.resample={mode}", "data.labels=[background, spleen, liver]"])
    torch.manual_seed(0)
    prediction = Predictor(build_network(cfg).eval(), cfg, "cpu").predict(path)
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **prediction.timings}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scan", help="a scan with a reference label (e.g. ct_spleen, 0.8 mm in-plane)")
    p.add_argument("--label", help="its reference label")
    p.add_argument("--value", type=int, default=1, help="the class to score (default 1)")
    p.add_argument("--model", nargs="*", default=[], help="checkpoints or run folders to score")
    p.add_argument("--big", action="store_true", help="also measure memory and time on a synthetic 512x512x300 CT")
    p.add_argument("--_big-one", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._big_one:
        print(json.dumps(_big_one(args._big_one[0], Path(args._big_one[1]))))
        return 0
    report: dict[str, object] = {}
    if args.model:
        if not (args.scan and args.label):
            p.error("--model needs --scan and --label")
        report["dice"] = {m: _dice_per_mode(m, args.scan, args.label, args.value) for m in args.model}
    if args.big:
        import nibabel as nib

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "big_ct.nii.gz"
            volume = np.random.default_rng(0).normal(40, 20, (512, 512, 300)).astype(np.int16)
            nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 1.5, 1.0])), path)
            del volume
            report["big_512x512x300"] = {
                mode: json.loads(subprocess.run([sys.executable, __file__, "--_big-one", mode, str(path)], check=True,
                                                capture_output=True, text=True).stdout.strip().splitlines()[-1])
                for mode in MODES}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
