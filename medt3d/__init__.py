"""medt3d: 3D Medical Transformer (gated axial attention) for CT/MRI segmentation on MONAI."""

from __future__ import annotations

import logging as _logging

from medt3d.errors import InputError

__version__ = "0.1.0"

__all__ = ["InputError", "SegmentationResult", "__version__", "load_model", "predict"]

# MONAI warns on every import that the GPU DICOM decoder nvImageCodec is missing; medt3d reads DICOM
# with pydicom/ITK and does not use it, so the notice is silenced.
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)


def __getattr__(name: str):
    # the notebook API, imported on first use so that ``import medt3d`` (and the command line) stays fast
    if name in ("load_model", "predict", "SegmentationResult"):
        from medt3d.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'medt3d' has no attribute {name!r}")
