"""Networks: MedT3D (gated axial attention in 3-D) and the factory for it and MONAI baselines.

The names below load on first use, so that ``medt3d.networks.registry`` (plain Python) can be
read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_EXPORTS = {
    "BASELINES": "registry",
    "MEDT3D_PRESETS": "registry",
    "MedT3DPreset": "registry",
    "GatedAxialAttention": "attention",
    "gate_parameters": "attention",
    "GatedAxialBlock": "blocks",
    "LocalBranch": "blocks",
    "MedT3D": "medt",
    "build_network": "factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medt3d.networks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medt3d.networks.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
