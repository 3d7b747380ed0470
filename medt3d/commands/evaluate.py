"""``medt3d evaluate``: score a checkpoint on a data folder (metrics.csv, summary.json, pictures)."""

from __future__ import annotations

import argparse
import json

from medt3d.evaluation.splits import SPLITS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    p = sub.add_parser("evaluate", help="score a trained model against ground truth",
                       description="Predict whole scans and score them (Dice, IoU, HD95, ASD in mm, volumes in mL).")
    p.add_argument("--model", required=True, help="checkpoint (best.pt / last.pt), run folder, bundle folder or "
                                                  "bundle zip")
    p.add_argument("--data-dir", required=True, help="data folder, MSD dataset.json or datalist JSON")
    p.add_argument("--output", required=True, help="folder for metrics.csv, summary.json, overlays/, curves.png")
    p.add_argument("--split", choices=SPLITS, default="val",
                   help="cases to score: val (default; without a validation split, the labelled test cases, or "
                        "else the training cases), test, train, or all labelled cases")
    p.add_argument("--device", help="cpu | cuda | cuda:N | mps (default: the model's infer.device)")
    p.add_argument("--no-overlays", action="store_true", help="skip the per-case overlay PNGs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medt3d.evaluation.evaluate import evaluate

    summary = evaluate(args.model, args.data_dir, args.output, split=args.split, device=args.device,
                       overlays=not args.no_overlays)
    print(json.dumps({"n_cases": summary["n_cases"], "foreground_mean": summary["foreground_mean"],
                      "output": args.output}, indent=2))
    return 0
