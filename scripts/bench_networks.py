#!/usr/bin/env python
"""Benchmark MedT3D against MONAI baselines: same as ``medt3d bench --networks [options]``.

Example (the figures of docs/benchmarks.md):
    python scripts/bench_networks.py --output docs/benchmarks.json
"""

from __future__ import annotations

import sys

from medt3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--networks", *sys.argv[1:]]))
