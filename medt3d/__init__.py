"""medt3d: 3D Medical Transformer (gated axial attention) for CT/MRI segmentation on MONAI."""

from __future__ import annotations

__version__ = "0.1.0"

import logging as _logging

# MONAI warns on every import that the GPU DICOM decoder nvImageCodec is missing; medt3d reads DICOM
# with pydicom/ITK and does not use it, so the notice is silenced.
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)
