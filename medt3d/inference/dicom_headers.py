"""Mend the headers of anonymised DICOM sources in memory, before an object that references them is written.

Anonymisers blank or remove identifiers that a DICOM SEG (or RTSTRUCT) must copy or reference: the
SOP class, the instance, series, study and frame-of-reference UIDs. :func:`mend_headers` fills them in
the in-memory copies (the files are never changed), one value per series where the series shares one,
and says what it filled. Patient and study attributes that were empty stay empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medt3d.errors import InputError

__all__ = ["describe_error", "mend_headers"]

#: Type 2 patient/study attributes that highdicom copies from the source images; anonymised series
#: often lack them, so the in-memory copies get them empty (never a made-up value).
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")
#: copied attributes with a short VR (SH, CS) that real files overfill, and their maximum lengths
_MAX_LENGTH = {"StudyID": 16, "AccessionNumber": 16, "PatientSex": 16}
#: UIDs one series shares: a missing one gets one new value for every file
_SERIES_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
#: SOP class of a source whose SOPClassUID and file meta are both blank, by Modality (single-frame, multi-frame)
_CLASS_BY_MODALITY = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"),
    "PT": ("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130"),
}


def _blank(ds: Any, keyword: str) -> bool:
    return str(ds.get(keyword, "") or "").strip() == ""


def _meta(ds: Any, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get(keyword, "") or "").strip() if meta is not None else ""


def mend_headers(sources: Sequence[Any], series_folder: str | Path, slice_step: float | None = None) -> str | None:
    """Fill what a referencing object needs and anonymised sources lack, in the in-memory ``sources``.

    - SOPClassUID: from the file meta (MediaStorageSOPClassUID), else from Modality (CT, MR, PT);
    - SOPInstanceUID: from the file meta where it is unique, else a new UID; repeated UIDs are renewed;
    - StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID: the series' one value where some files
      have it, else one new UID, the same in every file;
    - SliceThickness (single-frame sources): the spacing between slices, ``slice_step``;
    - Type 2 patient/study attributes that are missing are added empty; an empty SpecificCharacterSet
      (the default repertoire) is dropped.

    Args:
        sources: the datasets of one series (pydicom), changed in place.
        series_folder: the series' folder, for messages.
        slice_step: spacing between slices (mm), for a missing or empty SliceThickness.

    Returns:
        One line that lists what was filled (attribute, how, in how many files), or None when nothing was.

    Raises:
        ValueError: an attribute cannot be filled (SOPClassUID with neither file meta nor a known
            Modality); the message names it.
    """
    filled = [*_fill_sop_class(sources, series_folder), *_fill_sop_instances(sources),
              *_fill_series_uids(sources), *_fill_slice_thickness(sources, slice_step), *_fit_value_lengths(sources)]
    _tidy_empty(sources)
    if not filled:
        return None
    return (f"{series_folder}: filled in memory for the DICOM SEG (the source files are unchanged): "
            + "; ".join(filled))


def _fill_sop_class(sources: Sequence[Any], series_folder: str | Path) -> list[str]:
    """SOPClassUID from the file meta, else from Modality; refused when neither says."""
    n = len(sources)
    filled: list[str] = []
    by_meta = [ds for ds in sources if _blank(ds, "SOPClassUID")]
    if by_meta:
        how = set()
        for ds in by_meta:
            value = _meta(ds, "MediaStorageSOPClassUID")
            if value:
                how.add("the file meta")
            else:
                modality = str(ds.get("Modality", "") or "")
                if modality not in _CLASS_BY_MODALITY:
                    raise InputError(f"{series_folder}: SOPClassUID is empty or missing, and neither the file meta "
                                     f"(MediaStorageSOPClassUID) nor the Modality ({modality or 'empty'}) says which "
                                     "image type the series is; set SOPClassUID in the files")
                value = _CLASS_BY_MODALITY[modality][int(int(ds.get("NumberOfFrames") or 1) > 1)]
                how.add(f"Modality {modality}")
            ds.SOPClassUID = value
        filled.append(f"SOPClassUID from {' and '.join(sorted(how))} ({len(by_meta)} of {n} files)")
    return filled


def _fill_sop_instances(sources: Sequence[Any]) -> list[str]:
    """SOPInstanceUID from the file meta where unique, else new; repeated UIDs renewed."""
    import pydicom

    n = len(sources)
    filled: list[str] = []
    seen: set[str] = set()
    renewed = from_meta = 0
    for ds in sources:
        uid = "" if _blank(ds, "SOPInstanceUID") else str(ds.SOPInstanceUID)
        if not uid and _meta(ds, "MediaStorageSOPInstanceUID") not in seen | {""}:
            uid, from_meta = _meta(ds, "MediaStorageSOPInstanceUID"), from_meta + 1
        elif not uid or uid in seen:
            uid, renewed = pydicom.uid.generate_uid(), renewed + 1
        ds.SOPInstanceUID = uid
        seen.add(uid)
    if from_meta:
        filled.append(f"SOPInstanceUID from the file meta ({from_meta} of {n} files)")
    if renewed:
        filled.append(f"SOPInstanceUID new, empty or repeated ({renewed} of {n} files)")
    return filled


def _fill_series_uids(sources: Sequence[Any]) -> list[str]:
    """Study, series and frame-of-reference UIDs: the series' one value where some files have it, else new."""
    import pydicom

    n = len(sources)
    filled: list[str] = []
    for keyword in _SERIES_UIDS:
        blank = [ds for ds in sources if _blank(ds, keyword)]
        if not blank:
            continue
        present = {str(ds.get(keyword)) for ds in sources if not _blank(ds, keyword)}
        own = len(present) == 1
        value = present.pop() if own else pydicom.uid.generate_uid()
        for ds in blank:
            setattr(ds, keyword, value)
        how = "the series' own" if own else "new"
        filled.append(f"{keyword} {how} {value} ({len(blank)} of {n} files)")
    return filled


def _fill_slice_thickness(sources: Sequence[Any], slice_step: float | None) -> list[str]:
    """A missing SliceThickness of single-frame files: the spacing between slices."""
    n = len(sources)
    filled: list[str] = []
    thin = [ds for ds in sources if int(ds.get("NumberOfFrames") or 1) == 1 and _blank(ds, "SliceThickness")]
    if thin and slice_step is not None:
        for ds in thin:
            ds.SliceThickness = f"{slice_step:.6g}"
        filled.append(f"SliceThickness from the spacing between slices, {slice_step:.6g} mm ({len(thin)} of {n} files)")
    return filled


def _fit_value_lengths(sources: Sequence[Any]) -> list[str]:
    """Values copied into the SEG that break their VR: cut to its length, PatientAge as nnnD/W/M/Y."""
    filled: list[str] = []
    too_long = {}
    for ds in sources:
        for keyword, limit in _MAX_LENGTH.items():
            value = ds.get(keyword)
            if isinstance(value, str) and len(value) > limit:  # copied into the SEG, where it must fit its VR
                setattr(ds, keyword, value[:limit])
                too_long[keyword] = limit
    filled += [f"{k} cut to {limit} characters, the most its VR allows" for k, limit in too_long.items()]
    ages = {str(ds.PatientAge) for ds in sources if ds.get("PatientAge") and not re.fullmatch(r"\d{3}[DWMY]", str(ds.PatientAge))}
    for ds in sources:
        if str(ds.get("PatientAge", "")) in ages:  # copied into the SEG, where it must be nnnD/W/M/Y
            short = re.fullmatch(r"(\d{1,3})([DWMY])", str(ds.PatientAge))
            ds.PatientAge = f"{int(short[1]):03d}{short[2]}" if short else ""
    filled += [f"PatientAge {age!r} written as the VR AS requires" for age in sorted(ages)]
    return filled


def _tidy_empty(sources: Sequence[Any]) -> None:
    """Drop an empty SpecificCharacterSet; add the Type 2 attributes the SEG copies, empty where missing."""
    for ds in sources:
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty: the default character repertoire
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")


def describe_error(err: BaseException) -> str:
    """A library error as one non-empty line; a ``KeyError`` names the key it did not find."""
    if isinstance(err, KeyError):
        key = err.args[0] if err.args else None
        if key in (None, ""):
            return "KeyError: an empty value was looked up (an attribute of the source headers is blank)"
        return f"KeyError: no entry for {key!r}"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else f"{type(err).__name__} (no message)"
