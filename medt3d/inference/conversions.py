"""The conversions of ``medt3d convert``: DICOM series, RTSTRUCT and SEG to NIfTI, and a label NIfTI to RTSTRUCT or SEG.

Every volume goes through the readers (:mod:`medt3d.data.readers`) and every DICOM object through the
writers ``medt3d infer`` uses (:mod:`medt3d.inference.rtstruct`, :mod:`medt3d.inference.dicom_seg`), so a
converted file has exactly the geometry those give: a NIfTI carries the series' RAS affine as its qform
and sform, and a label NIfTI is put on the series' grid only by a transpose or flip
(:func:`~medt3d.data.readers.align_to`), never resampled. Outputs are written atomically, and never over
an input or into an input's folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.data.nifti import write_nifti
from medt3d.data.readers import align_to, detect_kind, load_volume, read_header
from medt3d.data.readers.rtstruct import RTSTRUCT, RoiMap
from medt3d.errors import InputError

__all__ = ["SEG", "TARGETS", "convert", "read_dicom_seg", "target_of"]

SEG = "seg"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
logger = logging.getLogger(__name__)

#: what ``--to`` accepts
TARGETS = ("nifti", "rtstruct", SEG)


def target_of(output: Path, to: str | None) -> str:
    """The output format: ``to``, else ``nifti`` for a ``.nii``/``.nii.gz`` name."""
    if to is not None:
        return to
    if output.name.lower().endswith((".nii", ".nii.gz")):
        return "nifti"
    raise InputError(f"{output}: cannot tell the output format from its name; pass --to with one of "
                     f"{', '.join(TARGETS)} (a .nii or .nii.gz name means nifti)")


def _kind(path: Path) -> str:
    """The input's kind, with a DICOM SEG file told apart (the readers do not read SEG as a volume)."""
    if path.is_file() and path.suffix.lower() == ".dcm":
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        except Exception:  # noqa: BLE001 (left to detect_kind, which names the file)
            ds = {}
        if str(ds.get("Modality", "")) == "SEG" or str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
            return SEG
    return detect_kind(path)


def _check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that is an input, or that lies in an input's folder (a DICOM series folder's files)."""
    out = Path(os.path.abspath(output))
    for path in inputs:
        path = Path(os.path.abspath(path))
        if out == path:
            raise InputError(f"{output} is an input of this conversion; write the output to another file")
        folder = path if path.is_dir() else None
        if folder is not None and folder in out.parents:
            raise InputError(f"{output} lies inside the input folder {folder}; write the output outside it")


def _segment_values(seg: Any, rois: RoiMap | None, seg_path: Path) -> dict[int, int] | None:
    """Segment number -> class value by the segments' names, as an RTSTRUCT's ROIs (``data.roi_names``, else a
    class named as the segment); None where no name gives a class and no map is set (numbers are the values).
    """
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel") or "") for s in seg.SegmentSequence}
    if rois is None:
        return None
    values = {number: rois.value_of(name) for number, name in names.items()}
    if not rois.names and all(v is None for v in values.values()):
        logger.info("%s: no segment is named as a class of data.labels %s: the segment numbers are the label "
                    "values", seg_path, list(rois.labels))
        return None
    unknown = [names[n] for n, v in values.items() if v is None]
    if unknown:
        raise InputError(f"{seg_path}: segment(s) {', '.join(map(repr, unknown))} match no class of data.labels "
                         f"{list(rois.labels)}; set data.roi_names to map each segment to a class (or to background "
                         f"to leave it out), e.g. data.roi_names: {{{unknown[0]}: {rois.labels[-1]}}}")
    return {n: int(v) for n, v in values.items() if v is not None}


def read_dicom_seg(seg_path: Path, series_folder: Path, series_uid: str | None = None,
                   rois: RoiMap | None = None) -> Any:
    """A DICOM SEG as a (1, X, Y, Z) label on the grid of the series it references.

    Args:
        seg_path: the SEG file.
        series_folder: the series it lies on.
        series_uid: the series to read where the folder holds several.
        rois: which class each segment becomes, by its name (as an RTSTRUCT's ROIs); where no segment is
            named as a class and the map names none, or with None, the segment numbers are the values.

    Raises:
        InputError: the SEG references none of the series' slices, cannot be read, or has a segment that
            matches no class while others do (naming the file).
    """
    import highdicom as hd
    import pydicom
    import torch
    from monai.data import MetaTensor

    info = read_header(series_folder, series_uid)
    if info.multiframe:
        raise InputError(f"{series_folder}: a SEG on an enhanced (multi-frame) series is not converted; export the "
                         "series as single-frame files")
    try:
        seg = hd.seg.segread(seg_path)
    except Exception as err:  # noqa: BLE001 (highdicom and pydicom raise many types for a bad file)
        raise InputError(f"{seg_path}: unreadable DICOM SEG ({type(err).__name__}: {err}); export it again") from None
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
            for f in info.files]
    referenced = {str(r[2]) for r in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise InputError(f"{seg_path}: the SEG references no slice of the series in {series_folder}; pass the series "
                         "it was made on with --reference (and --series-uid)")
    values = _segment_values(seg, rois, seg_path)
    frames = np.asarray(seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True,
                                                          ignore_spatial_locations=True,
                                                          assert_missing_frames_are_empty=True))
    if values is not None:  # segment numbers -> class values
        lut = np.zeros(max([*values, int(frames.max(initial=0))]) + 1, dtype=np.uint16)
        for number, value in values.items():
            lut[number] = value
        frames = lut[frames]
    label = np.ascontiguousarray(np.transpose(frames, (2, 1, 0)))  # (Z, rows, columns) -> (X, Y, Z)
    affine = torch.as_tensor(info.affine, dtype=torch.float64)
    return MetaTensor(torch.from_numpy(label[None].astype(np.uint16 if label.max(initial=0) > 255 else np.uint8)),
                      affine=affine)


def _label_on_series(label_path: Path, series: Path, series_uid: str | None) -> np.ndarray:
    info = read_header(series, series_uid)
    label = load_volume(label_path, dtype=None)
    array = np.asarray(label)
    if not np.allclose(array, np.round(array)) or array.min(initial=0) < 0:
        raise InputError(f"{label_path}: holds values that are not class numbers 0, 1, 2...; pass a label file")
    aligned = align_to(label, info.affine, info.shape[:3], what=f"label {label_path} (series {series})")
    return np.asarray(aligned[0]).round().astype(np.uint16)


def convert(source: Path, output: Path, to: str | None = None, reference: Path | None = None,
            series_uid: str | None = None, table: list[dict[str, Any]] | None = None,
            rois: RoiMap | None = None) -> str:
    """Convert ``source`` into ``output``; return one line that says what was written.

    Args:
        source: a DICOM series folder, an RTSTRUCT file, a DICOM SEG file, or a label NIfTI/NRRD.
        output: the file to write (``.nii.gz`` for a volume or label; ``.dcm`` with ``to`` rtstruct or seg).
        to: ``nifti``, ``rtstruct`` or ``seg``; None: from ``output``'s name.
        reference: the DICOM series folder a SEG or a label NIfTI lies on.
        series_uid: the series to read where a folder holds several.
        table: the label table (names, colours, codes) for RTSTRUCT and SEG outputs.
        rois: which class each ROI of an RTSTRUCT, or each segment of a SEG, becomes (by name).

    Raises:
        InputError: an impossible conversion, a missing ``reference``, an output over an input, or any
            input the readers refuse (each naming the file and what to do).
    """
    target = target_of(output, to)
    kind = _kind(source)
    _check_output(output, [source, *([reference] if reference else [])])
    if reference is None and (kind == SEG or (kind in ("nifti", "nrrd") and target != "nifti")):
        raise InputError(f"{source}: converting a {kind} file to {target} needs the DICOM series it lies on; pass "
                         "its folder with --reference")
    if target == "nifti":
        if kind == SEG:
            volume = read_dicom_seg(source, reference, series_uid, rois)
        elif kind in ("dicom", RTSTRUCT):
            volume = load_volume(source, series_uid, dtype=np.float32 if kind == "dicom" else np.uint8, rois=rois)
        else:
            raise InputError(f"{source} is already {kind}; convert DICOM series, RTSTRUCT or SEG files to NIfTI")
        write_nifti(volume, volume.affine, output, dtype=np.float32 if kind == "dicom" else None)
        return f"{source} -> {output}: {'x'.join(map(str, volume.shape[1:]))} voxels, spacing " \
               f"{', '.join(f'{s:.4g}' for s in read_header(output).spacing)} mm"
    if kind not in ("nifti", "nrrd"):
        raise InputError(f"{source}: only a label NIfTI or NRRD converts to {target}; convert it to NIfTI first")
    if table is None:
        raise InputError(f"{source}: converting to {target} needs the class names; set data.labels")
    label = _label_on_series(source, reference, series_uid)
    if target == "rtstruct":
        from medt3d.inference.rtstruct import write_rtstruct

        notes = write_rtstruct(label, reference, output, table, model_name="medt3d convert", series_uid=series_uid)
    else:
        from medt3d.inference.dicom_seg import write_dicom_seg

        notes = write_dicom_seg(label, reference, output, table, model_name="medt3d convert", series_uid=series_uid)
    classes = ", ".join(str(e["name"]) for e in table if int(e["value"]) > 0)
    return f"{source} -> {output}: {target} of {classes} on the series in {reference}" + \
        "".join(f"; {n}" for n in notes)
