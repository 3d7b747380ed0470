#!/usr/bin/env python
"""The "Borders" tables of docs/benchmarks.md: labels against the window, and against slabs cut from a scan.

``windows``: each model scores the test patient's spleen with every window (no retraining), as the
ninth round did; ``whole`` is the one-pass whole scan.

``slabs``: each model predicts the whole scan, then slabs of N slices cut from it around the spleen,
each alone (default settings); a slab's spleen is scored against the whole-scan prediction on the same
slices, which is itself scored against the reference there.

Both print JSON on stdout. Examples (the run folders of ``medt3d bench --quality``)::

    python scripts/borders_tables.py windows --models RUN/checkpoints/last.pt ... \\
        --image ../shared/data/ct_spleen/spleen_2_ct.nii.gz --label ../shared/data/ct_spleen/spleen_2_label.nii.gz
    python scripts/borders_tables.py slabs --models RUN/checkpoints/last.pt ... \\
        --image ../shared/data/ct_abdomen_ts/abdomen_ts_ct.nii.gz \\
        --label ../shared/data/ct_abdomen_ts/abdomen_ts_label.nii.gz --slices 10 20 40
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from medt3d.inference.predictor import Predictor
from medt3d.models.loading import load_model
from medt3d.networks import layers
from medt3d.networks.layers import masked_instance_norm, masked_moments

WINDOWS = ["64,64,64", "80,80,64", "96,96,64", "112,112,64", "128,128,64", "96,96,80", "96,96,96", "64,64,96",
           "128,128,128", "whole"]


class MaskedNormBaseline(torch.nn.Module):
    """A baseline (MONAI UNet) whose instance norms take their statistics over the scan's voxels only.

    It pads its input (zeros, or ``padding_mode``) up to ``multiple`` itself and masks that padding, so the
    inferer hands it windows cut to the scan (issue 29, item 5: a measurement; MONAI's UNet takes no mask,
    so its norm layers are swapped here rather than in medt3d). The mask reaches each layer's resolution by
    nearest-neighbour resizing.
    """

    def __init__(self, net: torch.nn.Module, multiple: int, padding_mode: str = "constant") -> None:
        super().__init__()
        self.net, self.multiple, self.padding_mode = net, multiple, padding_mode
        self.valid: torch.Tensor | None = None
        for module in list(net.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.InstanceNorm3d):
                    setattr(module, name, _MaskedNorm(child, self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pads = [(-int(s)) % self.multiple for s in size]
        x = F.pad(x, [p for d in reversed(pads) for p in (0, d)], mode=self.padding_mode)
        self.valid = torch.zeros_like(x[:, :1])
        self.valid[:, :, : size[0], : size[1], : size[2]] = 1
        try:
            out = self.net(x)
        finally:
            self.valid = None
        return out[:, :, : size[0], : size[1], : size[2]]


class _MaskedNorm(torch.nn.Module):
    def __init__(self, norm: torch.nn.InstanceNorm3d, owner: MaskedNormBaseline) -> None:
        super().__init__()
        self.norm, self.owner = norm, [owner]  # a list: the owner is not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        valid = self.owner[0].valid
        if valid is None:
            return self.norm(x)
        valid = F.interpolate(valid, size=x.shape[2:], mode="nearest")
        return masked_instance_norm(x, valid, self.norm.weight, self.norm.bias, self.norm.eps)


class WholeScanNormStatistics:
    """Run MedT3D's instance norms on statistics recorded from a whole-scan pass (a probe, issue 29).

    Inside ``with WholeScanNormStatistics() as probe``, ``probe.mode = "record"`` makes every
    ``ConvNormAct`` keep the mean and variance it computes (over the scan's voxels) and ``"replay"`` makes
    windows use those instead of their own: if the labels of small windows then match the whole pass, the
    window changes them through the norm statistics, not through the attention's context.
    """

    def __init__(self) -> None:
        self.mode: str | None = None
        self.stats: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._forward = layers.ConvNormAct.forward

    def __enter__(self) -> WholeScanNormStatistics:
        probe, plain = self, self._forward

        def forward(module: layers.ConvNormAct, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
            if probe.mode is None or not module.instance:
                return plain(module, x, valid)
            y = module[0](x)
            # each predict() loads the model again: the layer is known by its weights, not its identity
            key = (tuple(module[0].weight.shape), float(module[0].weight.double().sum()))
            if probe.mode == "record":
                mean, var = masked_moments(y, valid if valid is not None else torch.ones_like(y[:, :1]))
                probe.stats[key] = (mean[:1], var[:1])
            mean, var = probe.stats[key]
            norm = module[1]
            z = (y - mean) * torch.rsqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1, 1) + norm.bias.view(1, -1, 1, 1, 1)
            return module[2](z)

        layers.ConvNormAct.forward = forward
        return self

    def __exit__(self, *exc: object) -> None:
        layers.ConvNormAct.forward = self._forward


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def predict(model_path: str, image: str | Path, window: str | None = None, padding_mode: str | None = None,
            floor: str | None = None, pad_like_baseline: bool = False, overlap: float | None = None,
            blend: str | None = None, masked_norms: bool = False) -> tuple[np.ndarray, list[int] | None, float]:
    """Label volume (X, Y, Z) of ``image`` on its own grid, the window that ran, and the seconds it took.

    ``padding_mode`` overrides ``infer.padding_mode``; ``floor`` (X,Y,Z) replaces the training patch as the
    smallest window of a baseline (the inferer's floor), to measure windows cut below the patch; ``overlap``
    and ``blend`` override ``infer.overlap`` and ``infer.mode``; ``masked_norms`` runs a baseline as
    :class:`MaskedNormBaseline` on windows cut to the scan.
    """
    model, cfg = load_model(model_path)
    if window is not None:
        cfg.infer.roi_size = window if window == "whole" else tuple(int(v) for v in window.split(","))
    if cfg.infer.roi_size is None:
        cfg.infer.roi_size = tuple(cfg.patch.roi_size)
    if padding_mode is not None:
        cfg.infer.padding_mode = padding_mode
    if overlap is not None:
        cfg.infer.overlap = overlap
    if blend is not None:
        cfg.infer.mode = blend
    if floor is not None:
        cfg.patch.roi_size = tuple(int(v) for v in floor.split(","))
    if masked_norms:
        model = MaskedNormBaseline(model, 16, padding_mode or "constant")
    predictor = Predictor(model, cfg, torch.device("cpu"))
    if masked_norms:  # windows cut to the scan (no rounding up, no padding by the inferer): the wrapper pads
        predictor.inferer.masked = True
    if pad_like_baseline:  # MedT3D's windows rounded to its multiple and padded with infer.padding_mode, as UNet's
        predictor.inferer.masked = False
    start = time.perf_counter()
    with torch.no_grad():
        result = predictor.predict(image)
    return result.label[0].numpy().astype(np.int16), result.window, time.perf_counter() - start


def windows(args: argparse.Namespace) -> list[dict]:
    reference = np.asarray(nib.load(args.label).dataobj) == args.organ
    rows = []
    with WholeScanNormStatistics() as probe:
        for model in args.models:
            if args.whole_scan_norm_statistics:
                probe.mode = "record"
                predict(model, args.statistics_image or args.image, "whole")
                probe.mode = "replay"
            rows += _window_rows(args, model, reference)
    return rows


def _window_rows(args: argparse.Namespace, model: str, reference: np.ndarray) -> list[dict]:
    rows = []
    for window in args.windows:
        label, ran, seconds = predict(model, args.image, window, overlap=args.overlap, blend=args.blend)
        rows.append({"model": model, "window": window, "window_run": ran, "seconds": round(seconds, 1),
                     "overlap": args.overlap, "blend": args.blend,
                     "whole_scan_norm_statistics": args.whole_scan_norm_statistics,
                     "dice": round(dice(label == args.organ, reference), 4)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def slabs(args: argparse.Namespace) -> list[dict]:
    scan = nib.load(args.image)
    data = np.asarray(scan.dataobj)
    reference = np.asarray(nib.load(args.label).dataobj) == args.organ
    z = np.nonzero(reference.any(axis=(0, 1)))[0]
    centre = int(round(z.mean()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            whole, _, _ = predict(model, args.image, padding_mode=args.padding_mode)
            for n in args.slices:
                lo = max(0, min(centre - n // 2, data.shape[2] - n))
                sl = slice(lo, lo + n)
                affine = scan.affine.copy()
                affine[:3, 3] = scan.affine[:3, :3] @ np.array([0, 0, lo]) + scan.affine[:3, 3]
                path = Path(tmp) / f"slab_{n}.nii.gz"
                nib.save(nib.Nifti1Image(data[:, :, sl], affine, scan.header), path)
                label, ran, seconds = predict(model, path, padding_mode=args.padding_mode, floor=args.floor,
                                              pad_like_baseline=args.pad_like_baseline, masked_norms=args.masked_norms)
                on_slab = whole[:, :, sl] == args.organ
                rows.append({"model": model, "slices": n, "first_slice": lo, "window_run": ran,
                             "padding_mode": args.padding_mode, "floor": args.floor, "masked_norms": args.masked_norms,
                             "dice_vs_whole_scan": round(dice(label == args.organ, on_slab), 4),
                             "whole_scan_vs_reference": round(dice(on_slab, reference[:, :, sl]), 4),
                             "slab_vs_reference": round(dice(label == args.organ, reference[:, :, sl]), 4)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="table", required=True)
    for name in ("windows", "slabs"):
        p = sub.add_parser(name)
        p.add_argument("--models", nargs="+", required=True, help="checkpoints or run folders")
        p.add_argument("--image", required=True)
        p.add_argument("--label", required=True)
        p.add_argument("--organ", type=int, default=1, help="label value scored (1: spleen)")
    sub.choices["windows"].add_argument("--windows", nargs="+", default=WINDOWS, help="X,Y,Z or whole")
    sub.choices["windows"].add_argument("--overlap", type=float, help="override infer.overlap")
    sub.choices["windows"].add_argument("--blend", choices=["gaussian", "constant"], help="override infer.mode")
    sub.choices["windows"].add_argument("--whole-scan-norm-statistics", action="store_true",
                                        help="MedT3D's instance norms use the statistics of a whole-scan pass "
                                             "(WholeScanNormStatistics: a probe of where the window acts)")
    sub.choices["windows"].add_argument("--statistics-image",
                                        help="take those statistics from this scan's whole pass instead of --image's")
    sub.choices["slabs"].add_argument("--slices", nargs="+", type=int, default=[10, 20, 40])
    sub.choices["slabs"].add_argument("--padding-mode", choices=["constant", "replicate", "reflect"],
                                      help="override infer.padding_mode (the baselines' padding)")
    sub.choices["slabs"].add_argument("--floor", help="X,Y,Z: the baselines' smallest window instead of the patch")
    sub.choices["slabs"].add_argument("--pad-like-baseline", action="store_true",
                                      help="MedT3D's windows padded to the patch with --padding-mode, unmasked")
    sub.choices["slabs"].add_argument("--masked-norms", action="store_true",
                                      help="a UNet's instance norms over the scan's voxels only, on windows cut to "
                                           "the scan (MaskedNormBaseline, padding with --padding-mode, default zeros); give --floor 16,16,16 too")
    args = parser.parse_args()
    rows = windows(args) if args.table == "windows" else slabs(args)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
