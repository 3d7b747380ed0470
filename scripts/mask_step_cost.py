#!/usr/bin/env python
"""CPU time of one MedT3D-small training step on two 64^3 patches, without and with a validity mask.

The mask has zero corners, as a rotated or zoomed-out training patch has. One torch thread; the median of
three rounds of three steps; prints JSON (docs/benchmarks.md, "Borders").

Example:
    python scripts/mask_step_cost.py
"""

from __future__ import annotations

import json
import time

import torch

from medt3d.networks.medt import MedT3D


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = MedT3D.from_preset("small", 1, 2, dropout=0.2).train()
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(2, 1, 64, 64, 64)
    y = (torch.rand(2, 64, 64, 64) > 0.5).long()
    valid = torch.ones(2, 1, 64, 64, 64)
    valid[:, :, :8, :8] = 0
    valid[:, :, -8:, :, :6] = 0

    def step(mask: torch.Tensor | None) -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x, mask), y).backward()
        optimizer.step()

    seconds: dict[str, list[float]] = {"plain": [], "masked": []}
    for _ in range(3):
        for name, mask in (("plain", None), ("masked", valid)):
            step(mask)
            start = time.process_time()
            for _ in range(3):
                step(mask)
            seconds[name].append((time.process_time() - start) / 3)
    result = {name: round(sorted(values)[1], 3) for name, values in seconds.items()}
    result["masked_over_plain"] = round(result["masked"] / result["plain"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
