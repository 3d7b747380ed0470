"""``medt3d export``: write a MONAI bundle (configs, TorchScript, optional ONNX, README) for a trained model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    from medt3d.bundle.source import list_bundle_sources

    p = sub.add_parser(
        "export", help="export a trained model as a MONAI bundle",
        description="Write a MONAI bundle that deploys a trained checkpoint: configs (inference, evaluate, train, "
                    "multi-GPU train, logging) built by medt3d's own builders, metadata.json, a generated "
                    "README, models/model.pt and TorchScript models/model.ts (and ONNX with --onnx). Nothing is "
                    "written unless the checkpoint fits its config and the bundle passes MONAI's checks.")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or training run folder, or a cross-validation "
                                                  "folder (medt3d train --folds): a fold set, one bundle per fold "
                                                  "in OUTPUT/fold_N with the postprocessing, an ensemble for infer")
    p.add_argument("--output", required=True, help="bundle folder to create (must not exist or be empty)")
    p.add_argument("--name", help="bundle source: one of "
                                  f"{', '.join(list_bundle_sources()) or '(none found)'} or a folder with a "
                                  "bundle.yaml (default: describe the model from its own config)")
    p.add_argument("--summary", help="evaluation summary.json whose metrics the README reports "
                                     "(default: the one medt3d evaluate/demo left beside the run, if any)")
    p.add_argument("--onnx", action="store_true", help="also write models/model.onnx (checked with onnxruntime) and "
                   "configs/inference_onnx.json, for medt3d infer --engine onnxruntime")
    p.add_argument("--onnx-precision", nargs="+", choices=("fp16", "int8"), default=[], metavar="PRECISION",
                   help="also write models/model_fp16.onnx (for the GPU) and/or models/model_int8.onnx (for the "
                        "CPU, statically quantised, calibrated on --calibration-data); implies --onnx")
    p.add_argument("--calibration-data", metavar="DIR",
                   help="training data (any layout medt3d train reads) whose windows calibrate int8")
    p.add_argument("--calibration-windows", type=int, default=32, metavar="N",
                   help="windows of the training patch that calibrate int8 (default 32)")
    p.add_argument("--zip", action="store_true", help="also write BUNDLE_DIR.zip")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medt3d.bundle.export import export_bundle
    from medt3d.models.layout import CrossValLayout

    if CrossValLayout.is_crossval(args.model):
        return _export_fold_set(args)

    result = export_bundle(args.model, args.output, name=args.name, onnx=args.onnx, zip_bundle_too=args.zip,
                           summary=args.summary, onnx_precisions=args.onnx_precision,
                           calibration_data=args.calibration_data, calibration_windows=args.calibration_windows)
    print(f"medt3d export: bundle in {result.bundle_dir} (TorchScript by {result.torchscript}"
          + (", ONNX" if result.onnx else "")
          + "".join(f", ONNX {p} (labels agree on {100 * a:.2f}%)" for p, a in result.onnx_agreement.items())
          + ")" + (f", zip {result.zip_path}" if result.zip_path else ""))
    if result.summary_path is None:
        print("medt3d export: no evaluation summary.json found; the README reports only the validation metric "
              "(run medt3d evaluate, then export again or pass --summary)")
    return 0


def _export_fold_set(args: argparse.Namespace) -> int:
    """``--model CV_FOLDER``: every finished fold as a bundle, in the cross-validation layout."""
    from medt3d.bundle.folds import export_fold_set
    from medt3d.errors import InputError

    if args.zip:
        raise InputError("--zip writes one bundle's zip; a fold set is a folder of bundles: drop --zip, or zip "
                         "each OUTPUT/fold_N yourself")
    bundles = export_fold_set(args.model, args.output, name=args.name, onnx=args.onnx, summary=args.summary)
    print(f"medt3d export: {len(bundles)} fold bundle(s) in {args.output} ({', '.join(b.name for b in bundles)}); "
          f"medt3d infer --model {args.output} averages them")
    return 0
