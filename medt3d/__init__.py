"""medt3d: 3D Medical Transformer (gated axial attention) for CT/MRI segmentation on MONAI."""

from __future__ import annotations

__version__ = "0.1.0"
