"""The outputs registry: one entry per file ``medt3d infer`` can write for a case.

Each entry (:class:`OutputFormat`) names the format, its file suffix, its writer, whether it needs a
DICOM source and when it is written. The batch runner (:mod:`medt3d.inference.batch`) loops over
:data:`OUTPUTS`; the names that ``--output-format`` accepts are the selectable entries, and must equal
:data:`medt3d.config.OUTPUT_FORMATS` (the config cannot import inference; a test checks that they agree).
A new format is its writer module and one entry here (docs/design.md shows one).

Not entries: the sidecar (``<case>_seg.json``, written last, after every output, by the runner) and the
``statistics`` (numbers inside the sidecar, not a file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.data.nifti import save_nifti
from medt3d.inference.predictor import Prediction
from medt3d.inference.slicer_seg import SLICER_SEG_SUFFIX, write_slicer_segmentation

__all__ = ["LABEL_NAMES", "OUTPUTS", "SIDECAR_SUFFIX", "OutputContext", "OutputFormat", "case_outputs", "selectable_formats"]

logger = logging.getLogger("medt3d.inference.batch")

SIDECAR_SUFFIX = "_seg.json"


@dataclass
class OutputContext:
    """What a writer gets for one case.

    Attributes:
        case: the case name (output files start with it).
        source: the scan's file, or its DICOM series folder.
        kind: the input's format (``nifti``, ``nrrd``, ``dicom``).
        prediction: the label (and probabilities) on the scan's own grid.
        table: the label table (:func:`medt3d.label_table.label_table`).
        model_name: how DICOM objects name the algorithm, e.g. ``"medt3d medt3d"``.
        series_uid: the series read from a DICOM folder that holds several (None: its only one).
    """

    case: str
    source: Path
    kind: str
    prediction: Prediction
    table: list[dict[str, Any]]
    model_name: str
    series_uid: str | None = None

    @property
    def label(self) -> Any:
        """The integer label volume (1, X, Y, Z)."""
        return self.prediction.label

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS matrix of the scan as loaded."""
        return self.prediction.affine


#: a writer: ``write(context, tmp_path)`` writes the file and returns notes for the sidecar (or None)
Writer = Callable[[OutputContext, Path], "list[str] | None"]


@dataclass(frozen=True)
class OutputFormat:
    """One output file of a case.

    Attributes:
        name: the format, as ``--output-format`` names it (``nifti``, ``seg-nrrd``, ``dicom-seg``), or
            an internal name for a file the config asks for (``probabilities``).
        key: its key in a case's ``outputs`` (sidecar, summary) and ``failed_outputs``.
        title: how messages name it (``"no DICOM SEG: ..."``).
        suffix: appended to the case name.
        write: the writer (:data:`Writer`); it writes into a temporary file renamed with the case's others.
        needs_dicom: written only for a DICOM series input; for others a note says why not.
        required: a failure fails the whole case (no files); else the case fails with its NIfTI label kept
            and the reason in ``failed_outputs``.
        when: for a file the config asks for, whether this case writes it; ``None``: written when
            ``--output-format`` names it (a selectable format).
    """

    name: str
    key: str
    title: str
    suffix: str
    write: Writer
    needs_dicom: bool = False
    required: bool = False
    when: Callable[[OutputContext], bool] | None = None

    @property
    def selectable(self) -> bool:
        """Whether ``--output-format`` lists it."""
        return self.when is None


def _write_label(ctx: OutputContext, tmp: Path) -> None:
    save_nifti(ctx.label, ctx.affine, tmp, dtype=None)


def _write_probabilities(ctx: OutputContext, tmp: Path) -> None:
    save_nifti(ctx.prediction.probabilities, ctx.affine, tmp, dtype=np.float32)


def _write_seg_nrrd(ctx: OutputContext, tmp: Path) -> None:
    write_slicer_segmentation(ctx.label, ctx.affine, tmp, ctx.table)


def _write_dicom_seg(ctx: OutputContext, tmp: Path) -> list[str]:
    from medt3d.inference import dicom_seg

    notes = dicom_seg.write_dicom_seg(ctx.label, ctx.source, tmp, ctx.table, model_name=ctx.model_name,
                                      series_uid=ctx.series_uid)
    for note in notes:  # one line per case: what the SEG's copies of the source headers got
        if "filled in memory" in note:
            logger.info("case %s: %s", ctx.case, note)
    return notes


def _write_rtstruct(ctx: OutputContext, tmp: Path) -> list[str]:
    from medt3d.inference import rtstruct

    return rtstruct.write_rtstruct(ctx.label, ctx.source, tmp, ctx.table, model_name=ctx.model_name,
                                   series_uid=ctx.series_uid)


#: every output, in the order they are written (the sidecar comes after all of them)
OUTPUTS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("nifti", "label", "NIfTI label", "_seg.nii.gz", _write_label, required=True),
    OutputFormat("probabilities", "probabilities", "probabilities", "_probs.nii.gz", _write_probabilities,
                 required=True, when=lambda ctx: ctx.prediction.probabilities is not None),
    OutputFormat("seg-nrrd", "seg_nrrd", "3D Slicer segmentation (.seg.nrrd)", SLICER_SEG_SUFFIX, _write_seg_nrrd),
    OutputFormat("dicom-seg", "dicom_seg", "DICOM SEG", "_seg.dcm", _write_dicom_seg, needs_dicom=True),
    OutputFormat("rtstruct", "rtstruct", "DICOM RTSTRUCT", "_rtstruct.dcm", _write_rtstruct, needs_dicom=True),
)}


def selectable_formats() -> tuple[str, ...]:
    """The names ``--output-format`` accepts, in registry order (equal to :data:`medt3d.config.OUTPUT_FORMATS`)."""
    return tuple(f.name for f in OUTPUTS.values() if f.selectable)


#: how each ``--output-naming`` (:data:`medt3d.config.OUTPUT_NAMINGS`) renames a case's files, by key:
#: nnU-Net's ``CASE.nii.gz`` is what ``nnUNetv2_evaluate_folder`` pairs with ``labelsTr/CASE.nii.gz``; the
#: other files keep their suffixes
LABEL_NAMES: dict[str, dict[str, str]] = {"medt3d": {}, "nnunet": {"label": ".nii.gz"}}


def case_outputs(out_dir: Path, name: str, naming: str = "medt3d") -> dict[str, Path]:
    """Output paths of a case by key: ``label``, ``probabilities``, ``seg_nrrd``, ``dicom_seg``, ``sidecar``.

    ``naming`` is one of :data:`LABEL_NAMES`.
    """
    renamed = LABEL_NAMES[naming]
    paths = {f.key: out_dir / f"{name}{renamed.get(f.key, f.suffix)}" for f in OUTPUTS.values()}
    paths["sidecar"] = out_dir / f"{name}{SIDECAR_SUFFIX}"
    return paths
