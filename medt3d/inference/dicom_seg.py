"""DICOM Segmentation objects (with highdicom) for predictions on DICOM series.

The label volume must lie on the series' own grid as :func:`medt3d.data.io.load_volume` reads it:
array axes x = columns, y = rows, z = slices in the order of :func:`medt3d.data.io.check_dicom_series`
(sorted along the slice normal). Each non-background class becomes one segment of a BINARY
segmentation that references every source slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medt3d import __version__
from medt3d.data.io import read_header
from medt3d.io_utils import atomic_path

__all__ = ["label_map_frames", "write_dicom_seg"]

#: Type 2 patient/study attributes that highdicom copies from the source images; anonymised series
#: often lack them, so the in-memory copies get them empty (the source files are never changed).
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")


def _coded(code: dict[str, str]) -> Any:
    """A label-table code (``{"scheme", "code", "meaning"}``) as a DICOM coded concept."""
    from pydicom.sr.coding import Code

    return Code(value=code["code"], scheme_designator=code["scheme"], meaning=code["meaning"])


def label_map_frames(label: np.ndarray) -> np.ndarray:
    """(X, Y, Z) label volume -> (Z, rows, columns) frames, one per source slice."""
    label = np.asarray(label)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 3:
        raise ValueError(f"expected a 3-D label volume, got shape {label.shape}")
    return np.ascontiguousarray(np.transpose(label, (2, 1, 0)))


def write_dicom_seg(label: Any, series_folder: str | Path, out_path: str | Path,
                    labels: Sequence[dict[str, Any]], model_name: str = "medt3d",
                    series_uid: str | None = None) -> list[str]:
    """Write a DICOM SEG referencing the series in ``series_folder``, atomically.

    Headers of real, anonymised series are mended in memory (the files are never changed): an empty
    SpecificCharacterSet means the default repertoire and is dropped; a missing StudyInstanceUID
    gets a new one, shared by the series, and the returned notes say so.

    Args:
        label: integer label volume (1, X, Y, Z) or (X, Y, Z) on the series' grid.
        series_folder: the DICOM series the label was predicted from.
        out_path: the ``.dcm`` file to write.
        labels: the label table (:func:`medt3d.label_table.label_table`: value, name, colour and
            codes of each class; background, value 0, is skipped).
        model_name: algorithm name stored in each segment's description.
        series_uid: the series to reference when the folder holds several.

    Returns:
        Notes on what was mended, for the case's sidecar.

    Raises:
        ValueError: the label does not fit the series, the series has no FrameOfReferenceUID, is
            an enhanced multi-frame object or gantry-tilted, or highdicom refuses the source headers
            (the message names the folder).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    info = read_header(series_folder, series_uid)
    if info.multiframe:
        raise ValueError(f"{series_folder}: no DICOM SEG for an enhanced (multi-frame) source yet; the NIfTI label "
                         "holds the result")
    if info.tilt_shifts is not None:
        raise ValueError(f"{series_folder}: no DICOM SEG for a gantry-tilted series: its label lies on the corrected "
                         "(resampled) grid, which no source frame shares; the NIfTI label carries that grid")
    files = info.files
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    if "FrameOfReferenceUID" not in sources[0]:
        raise ValueError(f"{series_folder}: cannot write a DICOM SEG: the series has no FrameOfReferenceUID, which "
                         "the Segmentation IOD requires; use the NIfTI label instead (run without --dicom-seg)")
    notes = _mend_headers(sources, series_folder)
    frames = label_map_frames(np.asarray(label.detach().cpu() if hasattr(label, "detach") else label))
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if frames.shape != (len(sources), rows, columns):
        raise ValueError(f"{series_folder}: label of {frames.shape[0]} slices of {frames.shape[1]}x{frames.shape[2]} "
                         f"does not fit the series ({len(sources)} slices of {rows}x{columns})")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.DCM.ArtificialIntelligence, version=__version__)
    descriptions = []
    for entry in labels:
        if int(entry["value"]) == 0:
            continue
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=int(entry["value"]),
            segment_label=str(entry["name"])[:64],
            segmented_property_category=_coded(entry["category"]),
            segmented_property_type=_coded(entry["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*[int(c) for c in entry["color"]]),
        ))
    n_segments = len(descriptions)
    if frames.max(initial=0) > n_segments:
        raise ValueError(f"label values up to {int(frames.max())} but only {n_segments} segment(s) are described")
    dtype = np.uint8 if n_segments < 256 else np.uint16
    try:
        seg = _segmentation(hd, sources, frames.astype(dtype, copy=False), descriptions, model_name)
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ValueError(f"{series_folder}: cannot write a DICOM SEG for this series: {err}") from None
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return notes


def _mend_headers(sources: list[Any], series_folder: str | Path) -> list[str]:
    """Fill what highdicom needs and anonymised series lack, in the in-memory copies; say what was done."""
    import pydicom

    notes: list[str] = []
    if any("StudyInstanceUID" not in ds or not ds.StudyInstanceUID for ds in sources):
        study = pydicom.uid.generate_uid()
        notes.append(f"{series_folder}: the series has no StudyInstanceUID; the DICOM SEG references a new one "
                     f"({study})")
        for ds in sources:
            ds.StudyInstanceUID = study
    for ds in sources:
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty: the default character repertoire
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return notes


def _segmentation(hd: Any, sources: list[Any], frames: np.ndarray, descriptions: list[Any], model_name: str) -> Any:
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medt3d",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number="none",
        series_description=f"{model_name} segmentation"[:64],
    )
