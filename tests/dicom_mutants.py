"""A mutation corpus of real DICOM series, as anonymisers leave them, and the outcome of each mutant.

Each mutant is a copy of a real series from ``../shared/data`` with one attribute blanked or removed in
every file, or the series converted to one enhanced multi-frame object (highdicom's legacy converter),
with or without a frame of reference, a dimension index and shared pixel measures. :func:`outcome`
reads a mutant, compares it with the unmutated series and writes a DICOM SEG from it. Used by
tests/test_dicom_mutations.py and scripts/dicom_robustness.py (the table in docs/dicom_robustness.md).
"""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

#: name -> (folder under ../shared/data, slices kept from the middle or None for all)
SOURCES = {
    "ct_3slice": ("ct_dicom_3slice/series", None),
    "mr_4slice": ("mr_dicom_series/series", None),
    "sts_ct": ("ct_pet_mr_sts/STS_001/CT/dicom/series", 4),
    "sts_pet": ("ct_pet_mr_sts/STS_001/PET/dicom/series", 4),
}
ATTRIBUTES = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID",
    "PatientName", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyID", "SeriesNumber",
    "InstanceNumber", "SpecificCharacterSet", "SliceThickness", "PixelSpacing", "ImagePositionPatient",
    "ImageOrientationPatient", "RescaleSlope", "RescaleIntercept", "Manufacturer",
)
#: the identifiers the anonymised CT of issue 30 had blank, all at once
ANONYMISED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName",
              "StudyID")
ENHANCED = ("enhanced", "enhanced:no-frame-of-reference", "enhanced:no-dimension-index",
            "enhanced:per-frame-measures", "enhanced:bare")
MUTATIONS = (*(f"{op}:{a}" for a in ATTRIBUTES for op in ("blank", "remove")), "blank:anonymised", *ENHANCED)
#: mutants that must be refused (a voxel cannot be placed, or values cannot be computed)
GEOMETRY = ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")
LABELS = [
    {"value": 0, "name": "background", "color": [0, 0, 0], "category": None, "type": None},
    {"value": 1, "name": "blob", "color": [255, 0, 0],
     "category": {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"},
     "type": {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"}},
]


def copy_source(shared: Path, name: str, dst: Path) -> Path:
    """Copy source ``name`` (or its middle slices) into ``dst``; return ``dst``."""
    from medt3d.data.readers import check_dicom_series

    folder, keep = SOURCES[name]
    files = check_dicom_series(shared / folder)
    if keep is not None:
        start = (len(files) - keep) // 2
        files = files[start:start + keep]
    dst.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        shutil.copyfile(f, dst / f"slice_{i:03d}.dcm")
    return dst


def expected(mutation: str, source: Path) -> str:
    """``reads`` or ``refused``: what a mutant of the series in ``source`` must give."""
    op, _, attribute = mutation.partition(":")
    ds = pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True)
    if attribute in GEOMETRY:
        return "refused"
    if op == "blank" and attribute in ("RescaleSlope", "RescaleIntercept") and attribute in ds:
        return "refused"
    return "reads"


def _frame_of_reference(datasets: list) -> None:
    uid = next((str(d.FrameOfReferenceUID) for d in datasets if d.get("FrameOfReferenceUID")), None)
    uid = uid or pydicom.uid.generate_uid()
    for d in datasets:
        d.FrameOfReferenceUID = uid


def _enhanced(datasets: list, variant: str):
    import highdicom as hd

    _frame_of_reference(datasets)  # the converter needs one; the variants remove it afterwards
    modality = str(datasets[0].Modality)
    convert = {"CT": hd.legacy.LegacyConvertedEnhancedCTImage, "MR": hd.legacy.LegacyConvertedEnhancedMRImage,
               "PT": hd.legacy.LegacyConvertedEnhancedPETImage}[modality]
    previous = logging.getLogger("highdicom").level
    logging.getLogger("highdicom").setLevel(logging.ERROR)  # it lists every optional attribute it cannot fill
    try:
        enhanced = convert(datasets, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
                           instance_number=1)
    finally:
        logging.getLogger("highdicom").setLevel(previous)
    bare = variant == "bare"
    if variant == "no-frame-of-reference" or bare:
        del enhanced.FrameOfReferenceUID
    if variant == "no-dimension-index" or bare:
        del enhanced.DimensionIndexSequence
        for item in enhanced.PerFrameFunctionalGroupsSequence:
            for content in item.get("FrameContentSequence", []):
                if "DimensionIndexValues" in content:
                    del content.DimensionIndexValues
    if variant == "per-frame-measures" or bare:
        shared = enhanced.SharedFunctionalGroupsSequence[0]
        measures = shared.PixelMeasuresSequence
        del shared.PixelMeasuresSequence
        for item in enhanced.PerFrameFunctionalGroupsSequence:
            item.PixelMeasuresSequence = copy.deepcopy(measures)
    return enhanced


def mutate(source: Path, dst: Path, mutation: str) -> Path:
    """Write the mutant ``mutation`` (see :data:`MUTATIONS`) of the series in ``source`` into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(source.iterdir())
    datasets = [pydicom.dcmread(f) for f in files]
    op, _, what = mutation.partition(":")
    if op == "enhanced":
        _enhanced(datasets, what or "as-converted").save_as(dst / "volume.dcm", enforce_file_format=True)
        return dst
    attributes = ANONYMISED if what == "anonymised" else (what,)
    for f, ds in zip(files, datasets):
        for attribute in attributes:
            if attribute not in ds:
                continue
            if op == "remove":
                del ds[attribute]
            else:
                ds[attribute].value = None
        ds.save_as(dst / f.name)  # the file meta stays as it was (MediaStorageSOPClassUID, ...)
    return dst


@dataclass
class Outcome:
    """What one mutant gave: ``reads`` (grid, voxels and SEG checked) or ``refused`` (with the reason)."""

    status: str
    detail: str
    seg: Path | None = None
    voxel_error: float = 0.0  # largest difference from the unmutated voxels, relative to their largest magnitude


def outcome(mutant: Path, reference: Path, out: Path) -> Outcome:
    """Read ``mutant``, compare it with the unmutated ``reference`` series and write its DICOM SEG into ``out``."""
    from medt3d.data.readers import load_volume
    from medt3d.inference.dicom_seg import write_dicom_seg

    truth = load_volume(reference)
    try:
        volume = load_volume(mutant)
    except ValueError as err:
        return Outcome("refused", str(err))
    if volume.shape != truth.shape or not np.allclose(np.asarray(volume.affine), np.asarray(truth.affine), atol=1e-3):
        return Outcome("wrong grid", f"{tuple(volume.shape)} {np.asarray(volume.affine).round(3).tolist()}")
    array = volume[0].numpy()
    label = (array > np.percentile(array, 75)).astype(np.uint8)
    seg = out / "seg.dcm"
    try:
        notes = write_dicom_seg(label, mutant, seg, LABELS)
    except ValueError as err:
        return Outcome("refused", f"SEG: {err}")
    reference_array = truth[0].numpy()
    error = float(np.abs(array - reference_array).max() / max(1.0, float(np.abs(reference_array).max())))
    return Outcome("reads", "; ".join(notes), seg, error)


def dciodvfy_errors(path: Path) -> list[str] | None:
    """dciodvfy's error lines for ``path``, or None when dciodvfy is not installed."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        return None
    report = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]


# ------------------------------------------------------------------------------------------ RTSTRUCT mutants

#: the sarcoma case whose RTSTRUCT the RTSTRUCT mutants change (the small 5 mm PET), and its ROI map
RT_SOURCE = ("ct_pet_mr_sts", "STS_002", "PET")
RT_LABELS = (("background", "tumour"), {"GTV_Mass_PET": "tumour"})
#: mutation -> what it must give; the copy first references its own series (as a planning system writes it)
RT_MUTATIONS = {
    "none": "reads",
    "blank:anonymised": "reads",  # SOP instance, study and series UIDs, patient ID and name of the RTSTRUCT
    "remove:ContourImageSequence": "reads",  # contours placed by their coordinates, not by the slice they name
    "blank:ContourGeometricType": "reads",
    "remove:ROIDisplayColor": "reads",
    "remove:ReferencedFrameOfReferenceSequence": "reads",  # each ROI's ReferencedFrameOfReferenceUID remains
    "blank:ReferencedFrameOfReferenceUID": "reads",  # the ROIs' blank, the sequence's remains
    "missing:frame-of-reference": "refused",  # both blank: nowhere to place the points
    "other:frame-of-reference": "refused",  # drawn on another scan
    "other:series": "refused",  # references a series that is not the one beside it
    "blank:ROIName": "refused",  # an ROI of no class
}


def _referenced_series(ds) -> list:
    return [s for f in ds.get("ReferencedFrameOfReferenceSequence", []) for st in f.get("RTReferencedStudySequence", [])
            for s in st.get("RTReferencedSeriesSequence", [])]


def rt_mutate(shared: Path, dst: Path, mutation: str) -> Path:
    """Copy the sarcoma case's series and RTSTRUCT into ``dst`` (side by side), apply ``mutation``; the RTSTRUCT."""
    source = shared.joinpath(*RT_SOURCE) / "dicom"
    shutil.copytree(source / "series", dst / "series")
    ds = pydicom.dcmread(source / "rtstruct.dcm")
    series = pydicom.dcmread(next((dst / "series").iterdir()), stop_before_pixels=True)
    for item in _referenced_series(ds):
        item.SeriesInstanceUID = series.SeriesInstanceUID  # the crop kept the original's UID: reference this one
    op, _, what = mutation.partition(":")
    contours = [c for item in ds.ROIContourSequence for c in item.ContourSequence]
    if mutation == "blank:anonymised":
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "PatientName"):
            ds[keyword].value = None
    elif op == "remove" and what == "ContourImageSequence":
        for contour in contours:
            del contour.ContourImageSequence
    elif mutation == "blank:ContourGeometricType":
        for contour in contours:
            contour.ContourGeometricType = None
    elif mutation == "remove:ROIDisplayColor":
        for item in ds.ROIContourSequence:
            del item.ROIDisplayColor
    elif mutation == "remove:ReferencedFrameOfReferenceSequence":
        del ds.ReferencedFrameOfReferenceSequence
    elif what in ("ReferencedFrameOfReferenceUID", "frame-of-reference"):
        new = pydicom.uid.generate_uid() if op == "other" else None
        for roi in ds.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = new
        for item in ds.ReferencedFrameOfReferenceSequence if op != "blank" else ():
            item.FrameOfReferenceUID = new
    elif mutation == "other:series":
        for item in _referenced_series(ds):
            item.SeriesInstanceUID = pydicom.uid.generate_uid()
    elif mutation == "blank:ROIName":
        ds.StructureSetROISequence[0].ROIName = None
    ds.save_as(dst / "rtstruct.dcm")
    return dst / "rtstruct.dcm"


def rt_outcome(rtstruct: Path, shared: Path) -> Outcome:
    """Read a mutant RTSTRUCT (``data.rtstruct_match: series``) and compare it with the shared mask (Dice in detail)."""
    from medt3d.data.readers import align_to, load_volume
    from medt3d.data.readers.rtstruct import RoiMap

    try:
        label = load_volume(rtstruct, rois=RoiMap(*RT_LABELS, "series"))
    except ValueError as err:
        return Outcome("refused", str(err))
    mask = load_volume(shared.joinpath(*RT_SOURCE) / "gtv.nii.gz")
    mask = align_to(mask, label.affine.numpy(), label.shape[-3:], what="gtv")[0].numpy() > 0
    mine = label[0].numpy() > 0
    return Outcome("reads", f"Dice {2 * (mine & mask).sum() / (mine.sum() + mask.sum()):.4f}")
