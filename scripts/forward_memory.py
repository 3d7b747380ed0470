#!/usr/bin/env python
"""Peak memory of one eval forward pass per input voxel, for the whole-scan pass's estimate.

Each (network, size) runs in a fresh process, which reports the growth of its peak resident memory
during one ``torch.no_grad`` forward pass of a (1, 1, X, Y, Z) input under ``--config``. The figures
feed ``medt3d.inference.inferer.FORWARD_BYTES_PER_VOXEL`` (docs/benchmarks.md, "Borders").

Example:
    python scripts/forward_memory.py --config ct_abdomen --sizes 96,96,64 157,163,95 160,160,96 250,250,200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = """
import json, resource, sys, time, torch
from medt3d.config import load_config
from medt3d.networks import build_network
name, config, size = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
torch.set_num_threads(1)
cfg = load_config(config, [f"network.name={name}"])
net = build_network(cfg).eval()
x = torch.rand(1, cfg.data.in_channels, *size)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with torch.no_grad():
    net(x)
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
voxels = size[0] * size[1] * size[2]
print(json.dumps({"network": name, "size": size, "seconds": round(seconds, 3), "peak_growth_mb": round(grown / 2**20, 1),
                  "bytes_per_voxel": round(grown / voxels, 1)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ct_abdomen")
    parser.add_argument("--networks", nargs="+", default=["medt3d", "unet"])
    parser.add_argument("--sizes", nargs="+", default=["96,96,64", "160,160,96", "256,256,160"],
                        help="X,Y,Z input sizes (the baselines need multiples of their downsampling)")
    args = parser.parse_args()
    rows = []
    for name in args.networks:
        for size in args.sizes:
            done = subprocess.run([sys.executable, "-c", PROBE, name, args.config, size], capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"network": name, "size": size, "error": done.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
