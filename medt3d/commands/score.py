"""``medt3d score REF_DIR PRED_DIR``: score a folder of predictions (nnU-Net's ``nnUNetv2_evaluate_folder``)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``score`` command."""
    p = sub.add_parser(
        "score", help="score a folder of predictions against a folder of reference labels",
        description="Pair prediction and reference files by case identifier (CASE.nii.gz as nnU-Net names them, "
                    "CASE_seg.nii.gz as medt3d infer does) and write an nnU-Net-shaped summary.json: per case and "
                    "class, the mean per class and the foreground mean of Dice, IoU, HD95, ASD (mm), TP/FP/FN/TN "
                    "and the lesion metrics.")
    p.add_argument("ref_dir", metavar="REF_DIR", help="folder of reference labels (e.g. nnU-Net's labelsTr)")
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predictions (medt3d infer or nnU-Net output)")
    p.add_argument("--output", help="folder for summary.json and score.log (default: PRED_DIR/score)")
    p.add_argument("--dataset-json", "-djfile", dest="dataset_json",
                   help="dataset.json whose \"labels\" name the classes (nnU-Net's or MSD's)")
    p.add_argument("--labels", nargs="+", metavar="NAME",
                   help="class names, background first (default: from --dataset-json, else class_1, class_2, ...)")
    p.set_defaults(func=run)


def output_folder(args: argparse.Namespace) -> str:
    """The folder the command writes (for its log file)."""
    from pathlib import Path

    return args.output or str(Path(args.pred_dir) / "score")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medt3d.evaluation.score import score_folders

    summary = score_folders(args.ref_dir, args.pred_dir, output_folder(args), dataset_json=args.dataset_json,
                            labels=args.labels)
    print(json.dumps({"n_cases": summary["n_cases"], "foreground_mean": summary["foreground_mean"],
                      "output": output_folder(args)}, indent=2))
    return 0
