"""DICOM RTSTRUCT objects for labels on DICOM series: one ROI per class, contours that reference the series.

Why not rt-utils (measured, docs/dicom_robustness.md): its files failed dciodvfy (466 and 8,701 errors on
two sarcoma series: ContourData values longer than the 16 characters of VR DS, a StudyID over its 16), and
its contours run through the centres of the boundary pixels, so a reader that takes a pixel when its
centre is inside the polygon (this project's, and the planning systems' rule) reads back less than was
written (Dice 0.85 on a PET tumour). highdicom writes SEG, not RTSTRUCT. So the dataset is built here
with pydicom, and each slice's contours come from ``skimage.measure.find_contours`` at level 0.5: they
pass half-way between pixels inside and outside, so reading them back (even-odd, centre inside:
:mod:`medt3d.data.readers.rtstruct`) gives exactly the label written.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medt3d import __version__
from medt3d.data.readers import read_header
from medt3d.errors import InputError
from medt3d.inference.dicom_headers import mend_headers
from medt3d.io_utils import atomic_path

__all__ = ["RTSTRUCT_SOP_CLASS", "slice_contours", "write_rtstruct"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: attributes copied from the source images (patient and study modules), empty where the source has none
_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
           "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription")


def _ds(value: float) -> str:
    """A coordinate as a DICOM DS string (at most 16 characters): micrometre precision."""
    return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) >= 1e-4 else "0"


def _contour_data(points: np.ndarray) -> Any:
    """ContourData as a raw element, written as it is: pydicom checks each DS value of a list it is given one by
    one, which took most of the time of a large structure's file (about 1 s per 20,000 points)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    text = "\\".join(_ds(v) for v in points.ravel()).encode("ascii")
    text += b" " * (len(text) % 2)  # DICOM values have an even length
    return RawDataElement(Tag(0x30060050), "DS", len(text), text, 0, True, True)


def slice_contours(plane: np.ndarray) -> list[np.ndarray]:
    """Closed contours (N, 2) in voxel coordinates (x, y) around the pixels of a 2-D mask (x, y), holes included."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(plane.astype(np.float32), 1)
    # tolerance 0 drops only the points on a straight run (most of them): the same polygon, far fewer points
    return [approximate_polygon(c, 0.0)[:-1] - 1.0 for c in find_contours(padded, 0.5) if len(c) > 3]


def _sources(series_folder: str | Path, series_uid: str | None) -> tuple[Any, list[Any], list[str]]:
    import pydicom

    info = read_header(series_folder, series_uid)
    if info.tilt_shifts is not None:
        raise InputError(f"{series_folder}: no RTSTRUCT for a gantry-tilted series: its label lies on the corrected "
                         "grid, which no source slice shares; use the NIfTI label")
    if info.kind != "dicom":
        raise InputError(f"{series_folder}: an RTSTRUCT needs a DICOM series to reference; pass its folder")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in info.files]
    filled = mend_headers(sources, series_folder, slice_step=float(info.spacing[2]))
    return info, sources, [filled.replace("DICOM SEG", "RTSTRUCT")] if filled else []


def _base(first: Any, model_name: str) -> Any:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    # implicit VR: 32-bit value lengths (explicit VR gives DS 16 bits, 65,535 bytes: one contour of a large
    # structure on a 512 x 512 slice needs more)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds = FileDataset("rtstruct", {}, file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in _COPIED:
        value = first.get(keyword, "")
        setattr(ds, keyword, value if value is not None else "")
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "") or ""
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesNumber = int(getattr(first, "SeriesNumber", 0) or 0) + 2000
    ds.SeriesDescription = f"{model_name} contours"[:64]
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "medt3d", model_name[:64], __version__
    ds.StructureSetLabel = model_name[:16]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _references(sources: list[Any]) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    images = []
    for src in sources:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
        images.append(item)
    series = Dataset()
    series.SeriesInstanceUID, series.ContourImageSequence = sources[0].SeriesInstanceUID, Seq(images)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, as PS3.3 C.8.8.5 names it
    study.ReferencedSOPInstanceUID = sources[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = Seq([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = Seq([study])
    return Seq([frame])


def _roi_items(label: np.ndarray, entry: dict[str, Any], number: int, to_world: np.ndarray,
               sources: list[Any], model_name: str) -> tuple[Any, Any, Any]:
    """(StructureSetROI, ROIContour, RTROIObservations) items of one class."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    value = int(entry["value"])
    contours = []
    for k in range(label.shape[2]):
        plane = label[:, :, k] == value
        if not plane.any():
            continue
        for xy in slice_contours(plane):
            world = (to_world @ np.c_[xy, np.full(len(xy), float(k)), np.ones(len(xy))].T).T[:, :3]
            contour = Dataset()
            image = Dataset()
            image.ReferencedSOPClassUID = sources[k].SOPClassUID
            image.ReferencedSOPInstanceUID = sources[k].SOPInstanceUID
            contour.ContourImageSequence = Seq([image])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(world)
            contour[0x30060050] = _contour_data(world)
            contours.append(contour)
    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, sources[0].FrameOfReferenceUID
    roi.ROIName = str(entry["name"])[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = f"{model_name} {__version__}"[:64]
    item = Dataset()
    item.ROIDisplayColor = [int(c) for c in entry["color"]]
    item.ReferencedROINumber = number
    if contours:
        item.ContourSequence = Seq(contours)
    observation = Dataset()
    observation.ObservationNumber, observation.ReferencedROINumber = number, number
    observation.RTROIInterpretedType = "ORGAN" if (entry.get("category") or {}).get("code") == "123037004" else ""
    observation.ROIInterpreter = ""
    return roi, item, observation


def write_rtstruct(label: Any, series_folder: str | Path, out_path: str | Path, labels: Sequence[dict[str, Any]],
                   model_name: str = "medt3d", series_uid: str | None = None) -> list[str]:
    """Write an RTSTRUCT referencing the series in ``series_folder``, atomically: one ROI per class.

    ROI names and display colours come from the label table; a class the label does not hold gets an ROI
    without contours. Blank identifiers of anonymised sources are filled in memory as for the DICOM SEG
    (:func:`medt3d.inference.dicom_headers.mend_headers`).

    Args:
        label: integer label volume (1, X, Y, Z) or (X, Y, Z) on the series' grid.
        series_folder: the DICOM series folder the label lies on.
        out_path: the ``.dcm`` file to write.
        labels: the label table (:func:`medt3d.label_table.label_table`; background, value 0, is skipped).
        model_name: how the file names its maker (StructureSetLabel, ROIGenerationDescription).
        series_uid: the series to reference when the folder holds several.

    Returns:
        Notes on what was filled in memory, for the case's sidecar.

    Raises:
        ValueError: the label does not fit the series, the series is gantry-tilted, or an attribute the
            RTSTRUCT needs is missing and cannot be filled (naming the folder).
    """
    from pydicom.sequence import Sequence as Seq

    info, sources, notes = _sources(series_folder, series_uid)
    array = np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
    array = array[0] if array.ndim == 4 and array.shape[0] == 1 else array
    if info.multiframe or tuple(array.shape) != tuple(info.shape[:3]):
        what = "an enhanced (multi-frame) series" if info.multiframe else f"the series ({info.shape[:3]})"
        raise InputError(f"{series_folder}: a label of shape {tuple(array.shape)} cannot be written as an RTSTRUCT "
                         f"on {what}; write it as a DICOM SEG or NIfTI")
    classes = [e for e in labels if int(e["value"]) > 0]
    if array.max(initial=0) > max((int(e["value"]) for e in classes), default=0):
        raise InputError(f"label values up to {int(array.max())} but the label table has {len(classes)} class(es); "
                         "name every class in data.labels")
    ds = _base(sources[0], model_name)
    ds.ReferencedFrameOfReferenceSequence = _references(sources)
    to_world = _LPS @ np.asarray(info.affine, dtype=np.float64)
    items = [_roi_items(array, e, i, to_world, sources, model_name) for i, e in enumerate(classes, start=1)]
    ds.StructureSetROISequence = Seq([r for r, _, _ in items])
    ds.ROIContourSequence = Seq([c for _, c, _ in items])
    ds.RTROIObservationsSequence = Seq([o for _, _, o in items])
    with atomic_path(out_path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return notes
