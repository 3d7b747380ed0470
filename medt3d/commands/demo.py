"""``medt3d demo``: the whole pipeline on generated phantoms, on a CPU in a few minutes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medt3d.commands.common import add_set_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser("demo", help="run the whole pipeline on built-in phantoms",
                       description="Make phantoms, train MedT3D, evaluate, predict a held-back phantom, export.")
    p.add_argument("--output", help="new folder for the demo's outputs (default: medt3d_demo/<timestamp>)")
    add_set_arg(p, help="override a key of configs/demo.yaml, e.g. --set train.max_epochs=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medt3d.config import load_config
    from medt3d.demo import run_demo

    output = Path(args.output or Path("medt3d_demo") / time.strftime("%Y%m%d-%H%M%S"))
    report = run_demo(output, load_config("demo", args.overrides))
    print("\nmedt3d demo finished in {seconds:.0f} s".format(**report))
    print(f"  phantom data:        {report['data']}")
    print(f"  training run:        {report['run']}  (TensorBoard: {report['run']}/tensorboard,"
          f" MLflow: sqlite:///{Path(report['run']).resolve()}/mlflow.db)")
    print(f"  best checkpoint:     {report['best_checkpoint']}  (val mean Dice {report['best_val_mean_dice']:.3f})")
    print(f"  evaluation:          {report['evaluation']}  (metrics.csv, summary.json, overlays/, curves.png;"
          f" mean foreground Dice {report['eval_foreground_mean_dice']:.3f})")
    for path in report["predictions"]:
        print(f"  prediction:          {path}")
    print(f"  MONAI bundle:        {report['bundle']}  (python -m monai.bundle run --config_file"
          " configs/inference.json ... from inside it)")
    print(f"  summary:             {output / 'demo.json'}")
    return 0
