#!/usr/bin/env python
"""Train MedT3D and MONAI baselines on the same data with the same budget; print validation Dice as JSON.

Examples:
    python scripts/compare_models.py --phantoms --budget 240
    python scripts/compare_models.py --data ../shared/data/ct_spleen --config ct_abdomen --budget 300 \
        --validate-on-training-data

For the cross-patient comparison on real CT, use ``medt3d bench --quality``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from medt3d.bench.compare import compare_models
from medt3d.networks.registry import NETWORKS


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the comparison, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="data folder")
    src.add_argument("--phantoms", action="store_true", help="generate the demo's phantoms (8 train, 3 val)")
    p.add_argument("--networks", nargs="+", default=["medt3d", "unet"], choices=NETWORKS)
    p.add_argument("--budget", type=float, default=240.0, help="training seconds per network")
    p.add_argument("--config", default="demo", help="config preset or YAML shared by all networks")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--validate-on-training-data", action="store_true",
                   help="validate on the training cases themselves (for a single labelled scan; the score "
                        "then measures fitting, not generalisation)")
    p.add_argument("--output", help="folder for runs (default: a temporary folder)")
    p.add_argument("--json-out", help="also write the JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    output = Path(args.output or tempfile.mkdtemp(prefix="medt3d-compare-"))
    data = args.data
    if args.phantoms:
        from medt3d.data.phantoms import write_phantom_dataset
        from medt3d.demo import DEMO_CASES, DEMO_SHAPE

        data = write_phantom_dataset(output / "data", n_train=DEMO_CASES[0], n_val=DEMO_CASES[1], shape=DEMO_SHAPE)
    if args.validate_on_training_data:
        from medt3d.bench.compare import self_validation_datalist

        data = self_validation_datalist(data, output)
    report = compare_models(data, output, args.networks, args.budget, args.config, args.overrides)
    report["validated_on_training_data"] = args.validate_on_training_data
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
