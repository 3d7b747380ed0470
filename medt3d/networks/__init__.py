"""Networks: MedT3D (gated axial attention in 3-D) and the factory for it and MONAI baselines."""

from __future__ import annotations

from medt3d.networks.attention import GatedAxialAttention, gate_parameters
from medt3d.networks.blocks import GatedAxialBlock, LocalBranch
from medt3d.networks.factory import BASELINES, build_network
from medt3d.networks.medt import MEDT3D_PRESETS, MedT3D, MedT3DPreset

__all__ = [
    "BASELINES",
    "MEDT3D_PRESETS",
    "GatedAxialAttention",
    "GatedAxialBlock",
    "LocalBranch",
    "MedT3D",
    "MedT3DPreset",
    "build_network",
    "gate_parameters",
]
