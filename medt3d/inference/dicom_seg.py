"""DICOM Segmentation objects (with highdicom) for predictions on DICOM series.

The label volume must lie on the series' own grid as :func:`medt3d.data.readers.load_volume` reads it:
array axes x = columns, y = rows, z = slices in the order of :func:`medt3d.data.readers.check_dicom_series`
(sorted along the slice normal). Each non-background class becomes one segment of a BINARY
segmentation that references every source slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medt3d import __version__
from medt3d.data.readers import read_header
from medt3d.errors import InputError
from medt3d.inference.dicom_headers import describe_error, mend_headers
from medt3d.io_utils import atomic_path

__all__ = ["label_map_frames", "write_dicom_seg"]

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

    Headers of real, anonymised series are mended in memory (the files are never changed, see
    :func:`medt3d.inference.dicom_headers.mend_headers`): empty or missing SOPClassUID and UIDs are
    filled, and the returned note lists what was filled. The source may be a classic series or one
    enhanced (multi-frame) object.

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
        ValueError: the label does not fit the series, the series is gantry-tilted, an attribute the
            SEG needs is missing and cannot be filled, or highdicom refuses the source headers (the
            message names the folder and, where known, the attribute).
    """
    import highdicom as hd
    import pydicom

    info = read_header(series_folder, series_uid)
    if info.tilt_shifts is not None:
        raise InputError(f"{series_folder}: no DICOM SEG for a gantry-tilted series: its label lies on the corrected "
                         "(resampled) grid, which no source frame shares; use the NIfTI label, which carries that grid")
    frames = label_map_frames(np.asarray(label.detach().cpu() if hasattr(label, "detach") else label))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in info.files]
    if info.multiframe:  # one enhanced object: the label's slices go to the frames they came from, in file order
        from medt3d.data.readers.multiframe import open_multiframe

        order = open_multiframe(info.files[0], str(series_folder))[1].frame_order
        in_file = np.empty_like(frames)
        in_file[order] = frames
        frames = in_file
    if info.multiframe:
        _share_pixel_measures(sources[0], float(info.spacing[2]))
    filled = mend_headers(sources, series_folder, slice_step=float(info.spacing[2]))
    notes = [filled] if filled else []
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    n_frames = int(sources[0].get("NumberOfFrames") or 1) if info.multiframe else len(sources)
    if frames.shape != (n_frames, rows, columns):
        raise InputError(f"{series_folder}: label of {frames.shape[0]} slices of {frames.shape[1]}x{frames.shape[2]} "
                         f"does not fit the series ({n_frames} slices of {rows}x{columns})")
    descriptions = _segment_descriptions(labels, model_name)
    n_segments = len(descriptions)
    if frames.max(initial=0) > n_segments:
        raise InputError(f"label values up to {int(frames.max())} but only {n_segments} segment(s) are described; "
                         "name every class in data.labels")
    dtype = np.uint8 if n_segments < 256 else np.uint16
    try:
        seg = _segmentation(hd, sources, frames.astype(dtype, copy=False), descriptions, model_name)
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise InputError(f"{series_folder}: cannot write a DICOM SEG for this series: {describe_error(err)}; use the "
                         "NIfTI label, or check the series' headers") from None
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return notes



def _segment_descriptions(labels: Sequence[dict[str, Any]], model_name: str) -> list[Any]:
    """One highdicom segment description per class of the label table (background, value 0, has none)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

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
    return descriptions


def _share_pixel_measures(ds: Any, slice_step: float) -> None:
    """Give an enhanced source one shared PixelMeasuresSequence, as highdicom needs (the frame checks already
    made sure every frame has the same pixel spacing), with a SliceThickness (the slice step where it has none)."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if "PixelMeasuresSequence" not in shared and per_frame and "PixelMeasuresSequence" in per_frame[0]:
        shared.PixelMeasuresSequence = per_frame[0].PixelMeasuresSequence
        for item in per_frame:
            if "PixelMeasuresSequence" in item:
                del item.PixelMeasuresSequence
    measures = shared.get("PixelMeasuresSequence")
    if measures and not measures[0].get("SliceThickness"):
        measures[0].SliceThickness = f"{slice_step:.6g}"


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
