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
    p.add_argument("--model", required=True, help="checkpoint (.pt) or training run folder")
    p.add_argument("--output", required=True, help="bundle folder to create (must not exist or be empty)")
    p.add_argument("--name", help="bundle source: one of "
                                  f"{', '.join(list_bundle_sources()) or '(none found)'} or a folder with a "
                                  "bundle.yaml (default: describe the model from its own config)")
    p.add_argument("--summary", help="evaluation summary.json whose metrics the README reports "
                                     "(default: the one medt3d evaluate/demo left beside the run, if any)")
    p.add_argument("--onnx", action="store_true", help="also write models/model.onnx (checked with onnxruntime)")
    p.add_argument("--zip", action="store_true", help="also write BUNDLE_DIR.zip")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medt3d.bundle.export import export_bundle

    result = export_bundle(args.model, args.output, name=args.name, onnx=args.onnx, zip_bundle_too=args.zip,
                           summary=args.summary)
    print(f"medt3d export: bundle in {result.bundle_dir} (TorchScript by {result.torchscript}"
          + (", ONNX" if result.onnx else "") + ")" + (f", zip {result.zip_path}" if result.zip_path else ""))
    if result.summary_path is None:
        print("medt3d export: no evaluation summary.json found; the README reports only the validation metric "
              "(run medt3d evaluate, then export again or pass --summary)")
    return 0
