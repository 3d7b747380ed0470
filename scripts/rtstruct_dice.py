"""RTSTRUCT rasterisation against the shared masks, and the same measurement for rt-utils where it is installed.

For each sarcoma patient of ../shared/data and each of CT and PET, the RTSTRUCT (``dicom/rtstruct.dcm``) is
read onto its series (``dicom/series``) by medt3d and compared with the mask the data come with
(``gtv.nii.gz``, same contours, same grid): Dice and voxel counts. With rt-utils installed
(``pip install rt-utils``; not a dependency of medt3d), its rasterisation (OpenCV fillPoly of the rounded
points; each contour put on the slice of its z, since none of the shared contours references an instance
of its series) is scored the same way, and its writer's files are checked with dciodvfy and read back by
medt3d. The table is in docs/dicom_robustness.md.

Usage: python scripts/rtstruct_dice.py [SHARED_DATA]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom

from medt3d.data.readers import align_to, load_volume, read_header
from medt3d.data.readers.rtstruct import RoiMap

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data"
ROIS = RoiMap(("background", "tumour"), {"GTV_Mass_CT": "tumour", "GTV_Mass_PET": "tumour"}, "frame_of_reference")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def rt_utils_mask(folder: Path, info) -> np.ndarray | None:
    """rt-utils' fillPoly rasterisation of the case's contours, (X, Y, Z); None without rt-utils."""
    try:
        from rt_utils import image_helper
    except ImportError:
        return None
    series = [pydicom.dcmread(f, stop_before_pixels=True) for f in info.files]
    to_pixel = image_helper.get_patient_to_pixel_transformation_matrix(series)
    mask = np.zeros(info.shape, dtype=bool)
    for contour in pydicom.dcmread(folder / "rtstruct.dcm").ROIContourSequence[0].ContourSequence:
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        k = int(round(image_helper.apply_transformation_to_3d_points(points, to_pixel)[:, 2].mean()))
        plane = image_helper.get_slice_mask_from_slice_contour_data(series[k], [contour.ContourData], to_pixel)
        # rt-utils sizes the plane (Columns, Rows) but fills it by (row, column): keep what lands on the image
        full = np.zeros((info.shape[1], info.shape[0]), dtype=bool)
        rows, columns = min(full.shape[0], plane.shape[0]), min(full.shape[1], plane.shape[1])
        full[:rows, :columns] = plane[:rows, :columns].astype(bool)
        mask[:, :, k] |= full.T
    return mask


def rt_utils_written(series: Path, label: np.ndarray) -> tuple[int, float] | None:
    """dciodvfy errors of rt-utils' RTSTRUCT of ``label``, and the Dice medt3d reads back; None without rt-utils."""
    try:
        from rt_utils import RTStructBuilder
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(series, Path(tmp) / "series")
        builder = RTStructBuilder.create_new(str(series))
        builder.add_roi(mask=np.ascontiguousarray(label.transpose(1, 0, 2)), color=[255, 0, 0], name="tumour")
        out = Path(tmp) / "rtstruct.dcm"
        builder.save(str(out))
        tool = shutil.which("dciodvfy")
        report = subprocess.run([tool, str(out)], capture_output=True, text=True) if tool else None
        errors = -1 if report is None else sum(
            line.startswith("Error") for line in (report.stdout + report.stderr).splitlines())
        back = load_volume(out, rois=RoiMap(("background", "tumour"), {}, "series"))[0].numpy() > 0
    return errors, dice(back, label)


def main() -> None:
    print("| patient | image | grid | voxels (mask) | medt3d Dice | rt-utils fillPoly Dice | rt-utils written: "
          "dciodvfy errors, Dice read back |")
    print("|---|---|---|---|---|---|---|")
    for patient in ("STS_001", "STS_002", "STS_003"):
        for modality in ("CT", "PET"):
            case = ROOT / "ct_pet_mr_sts" / patient / modality
            info = read_header(case / "dicom" / "series")
            mine = load_volume(case / "dicom" / "rtstruct.dcm", rois=ROIS)[0].numpy() > 0
            mask = align_to(load_volume(case / "gtv.nii.gz"), info.affine, info.shape, what="gtv")[0].numpy() > 0
            theirs = rt_utils_mask(case / "dicom", info)
            written = rt_utils_written(case / "dicom" / "series", mask)
            print(f"| {patient} | {modality} | {'x'.join(map(str, info.shape))} | {int(mask.sum())} | "
                  f"{dice(mine, mask):.4f} | {'-' if theirs is None else f'{dice(theirs, mask):.4f}'} | "
                  f"{'-' if written is None else f'{written[0]}, {written[1]:.4f}'} |")


if __name__ == "__main__":
    main()
