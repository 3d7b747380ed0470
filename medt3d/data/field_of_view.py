"""A random field of view for training patches: the patch's ``valid`` mask cut to a random sub-box.

MedT3D's instance norms and attention see only the voxels of ``valid``, so a patch whose mask is a
sub-box trains the network as if that box were the whole window: it learns from fields of view of many
sizes and positions instead of one, which makes its labels depend less on the inference window
(docs/benchmarks.md, "A random field of view in training"). The voxels outside the box give no gradient
(their label becomes the padding label, as for any padding). MONAI has no transform that draws a random
box into a mask (``RandSpatialCropd`` changes the patch's size, which a batch cannot hold), hence this one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["RandFieldOfViewd"]


class RandFieldOfViewd(RandomizableTransform, MapTransform):
    """With probability ``prob``, zero the ``valid`` mask outside a random box of the patch.

    Args:
        valid_key: the mask (1, X, Y, Z) of the voxels that are scan (``AddValidMaskd``).
        prob: the chance that a patch gets a box.
        min_fraction: the smallest side of the box, as a fraction of the patch's side (each side is
            drawn uniformly between that and the whole side, and placed uniformly).
    """

    def __init__(self, valid_key: Hashable, prob: float, min_fraction: float) -> None:
        if not 0.0 < min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, [valid_key])
        self.valid_key = valid_key
        self.min_fraction = min_fraction
        self._box: list[tuple[int, int]] = []

    def randomize(self, shape: tuple[int, ...]) -> None:
        """Draw whether to cut and, if so, the box (start, stop) along each spatial axis of ``shape``."""
        super().randomize(None)
        self._box = []
        if not self._do_transform:
            return
        for n in shape:
            size = int(self.R.randint(max(1, int(np.ceil(n * self.min_fraction))), n + 1))
            start = int(self.R.randint(0, n - size + 1))
            self._box.append((start, start + size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        valid = d[self.valid_key]
        self.randomize(tuple(int(n) for n in valid.shape[1:]))
        if not self._box:
            return d
        box = (slice(None), *(slice(start, stop) for start, stop in self._box))
        cut = torch.zeros_like(valid)
        cut[box] = valid[box]
        d[self.valid_key] = cut
        return d
