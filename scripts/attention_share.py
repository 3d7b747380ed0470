#!/usr/bin/env python
"""Share of MedT3D-small's eval forward pass spent in its gated axial attention, on CPU.

How much a fused attention kernel (torch's ``scaled_dot_product_attention``) could save at most: the
time inside every :class:`~medt3d.networks.attention.GatedAxialAttention` against the whole forward pass,
at a 64^3 patch and at ``ct_abdomen``'s 128 x 128 x 64 window. Random weights (the time does not depend on
them); of five passes, the one whose forward time is the median; two torch threads; prints JSON (docs/benchmarks.md, "Borders").

Example:
    python scripts/attention_share.py
"""

from __future__ import annotations

import json
import time

import torch

from medt3d.bench.networks import attention_seconds
from medt3d.networks.medt import MedT3D

SHAPES = ((64, 64, 64), (128, 128, 64))
PASSES = 5


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = MedT3D.from_preset("small", 1, 2).eval()
    result: dict[str, dict[str, float]] = {}
    for shape in SHAPES:
        x = torch.randn(1, 1, *shape)
        passes: list[tuple[float, float]] = []
        with torch.no_grad():
            net(x)  # warm-up
            for _ in range(PASSES):
                with attention_seconds(net) as calls:
                    start = time.perf_counter()
                    net(x)
                    passes.append((time.perf_counter() - start, sum(calls)))
        forward, attention = sorted(passes)[PASSES // 2]
        result["x".join(map(str, shape))] = {
            "forward_s": round(forward, 4), "attention_s": round(attention, 4),
            "attention_share": round(attention / forward, 3),
        }
    print(json.dumps({"network": "medt3d-small", "threads": 2, "passes": PASSES, "shapes": result}, indent=2))


if __name__ == "__main__":
    main()
