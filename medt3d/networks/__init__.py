"""Networks: MedT3D (gated axial attention in 3-D) and the factory for it and MONAI baselines."""

from __future__ import annotations

from medt3d.networks.attention import GatedAxialAttention, gate_parameters

__all__ = ["GatedAxialAttention", "gate_parameters"]
