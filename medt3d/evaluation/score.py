"""``medt3d score REF_DIR PRED_DIR``: score a folder of predictions against a folder of references.

The counterpart of nnU-Net's ``nnUNetv2_evaluate_folder``: files are paired by case identifier
(``CASE.nii.gz`` as nnU-Net names them, ``CASE_seg.nii.gz`` as ``medt3d infer`` does, or a label
suffix of :data:`medt3d.data.case_names.LABEL_SUFFIXES`), and ``summary.json`` has nnU-Net's shape:
``metric_per_case`` (per case, per class value as a string key), ``mean`` (per class) and
``foreground_mean`` (mean of the class means), with ``Dice``, ``IoU``, ``HD95``, ``ASD`` (mm; MONAI's
metrics through :func:`medt3d.evaluation.metrics.case_metrics`), ``TP``/``FP``/``FN``/``TN``,
``n_ref``/``n_pred``, and the lesion-wise detection metrics of :mod:`medt3d.evaluation.lesions`
(``lesion_f1``, ``lesion_precision``, ``lesion_recall``, ``lesion_tp``/``fp``/``fn``, ...).

Empty structures: as nnU-Net, Dice and IoU are undefined (``null`` in the JSON, left out of the means)
when a class is absent from both reference and prediction; HD95 and ASD follow medt3d's rule
(:mod:`medt3d.evaluation.metrics`: 0 when both are empty, the volume diagonal when one is).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.data.datalist import case_name
from medt3d.data.geometry import voxel_spacing
from medt3d.data.readers import align_to, detect_kind, load_volume
from medt3d.errors import InputError
from medt3d.evaluation.lesions import LESION_METRIC_NAMES
from medt3d.evaluation.metrics import case_metrics
from medt3d.io_utils import atomic_write_text

__all__ = ["METRIC_KEYS", "pair_folders", "score_folders", "score_pair", "summarise_cases"]

logger = logging.getLogger("medt3d.score")

#: medt3d's metric names and nnU-Net's spelling of them in summary.json
METRIC_KEYS = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95", "asd_mm": "ASD"}
#: per-case files of ``medt3d infer`` that are not label volumes
_NOT_LABELS = ("_probs", ".seg")


def _volumes(folder: Path) -> dict[str, Path]:
    """Label volumes of a folder by case identifier (medt3d's and nnU-Net's names)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder of label files")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix == ".json":
            continue
        try:
            detect_kind(path)
        except (ValueError, FileNotFoundError):
            continue  # not a volume: summary.json, volumes.csv, logs
        stem = case_name(path, role="label")
        if any(stem.endswith(s) or s in path.name for s in _NOT_LABELS):
            continue
        if stem in found:
            raise InputError(f"{folder}: two files for case {stem!r}: {found[stem].name} and {path.name}; "
                             "remove one of them")
        found[stem] = path
    return found


def pair_folders(ref_dir: str | Path, pred_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(case, reference, prediction) for every reference, paired by case identifier.

    Raises:
        InputError: a reference without prediction (all listed), or no references at all.
    """
    refs, preds = _volumes(Path(ref_dir)), _volumes(Path(pred_dir))
    if not refs:
        raise InputError(f"{ref_dir}: no label volumes (NIfTI or NRRD); give the folder of reference labels")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise InputError(f"{pred_dir}: no prediction for {len(missing)} reference case(s): {', '.join(missing[:10])}"
                         f"; predict them, or give a reference folder holding only the predicted cases")
    extra = sorted(set(preds) - set(refs))
    if extra:
        logger.warning("%s: %d prediction(s) without reference, not scored: %s", pred_dir, len(extra),
                       ", ".join(extra[:10]))
    return [(case, refs[case], preds[case]) for case in sorted(refs)]


def _counts(pred: np.ndarray, ref: np.ndarray, value: int) -> dict[str, int]:
    p, r = pred == value, ref == value
    tp, fp, fn = int(np.sum(p & r)), int(np.sum(p & ~r)), int(np.sum(~p & r))
    return {"TP": tp, "FP": fp, "FN": fn, "TN": int(p.size - tp - fp - fn), "n_pred": tp + fp, "n_ref": tp + fn}


def score_pair(ref_path: Path, pred_path: Path, class_names: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Metrics of one case per class value (string keys, as nnU-Net's); the volumes must share a grid.

    Raises:
        InputError: a prediction on another grid than its reference.
    """
    ref = load_volume(ref_path)
    pred = align_to(load_volume(pred_path), ref.affine, ref.shape[-3:], what=f"prediction {pred_path}")
    spacing = voxel_spacing(ref.affine)
    ref_a = np.asarray(ref).squeeze().astype(np.int64)
    pred_a = np.asarray(pred).squeeze().astype(np.int64)
    for path, values in ((ref_path, ref_a), (pred_path, pred_a)):
        top = int(values.max(initial=0))
        if top >= len(class_names) or int(values.min(initial=0)) < 0:
            raise InputError(f"{path}: label value {top} is outside the {len(class_names)} classes "
                             f"{list(class_names)}; give every class name with --labels or --dataset-json")
    metrics: dict[str, dict[str, float | None]] = {}
    for row in case_metrics(pred_a, ref_a, spacing, class_names):
        value = int(row["class_index"])
        counts = _counts(pred_a, ref_a, value)
        entry: dict[str, float | None] = {nn: float(row[ours]) for ours, nn in METRIC_KEYS.items()}
        if counts["n_ref"] == 0 and counts["n_pred"] == 0:  # nnU-Net: Dice and IoU undefined
            entry["Dice"] = entry["IoU"] = None
        entry.update(counts)
        entry.update({k: float(row[k]) for k in LESION_METRIC_NAMES if k in row})  # lesion-wise detection
        metrics[str(value)] = entry
    return metrics


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def summarise_cases(per_case: list[dict[str, Any]], class_values: Sequence[int]) -> dict[str, Any]:
    """nnU-Net's ``mean`` (per class, undefined values left out) and ``foreground_mean`` (mean of the
    class means) of ``metric_per_case``."""
    keys = list(dict.fromkeys(k for case in per_case for m in case["metrics"].values() for k in m))
    means = {str(v): {k: _mean([c["metrics"][str(v)].get(k) for c in per_case]) for k in keys}
             for v in class_values}
    foreground = {k: _mean([means[str(v)][k] for v in class_values]) for k in keys}
    return {"mean": means, "foreground_mean": foreground}


def _class_names(dataset_json: str | Path | None, labels: Sequence[str] | None,
                 pairs: list[tuple[str, Path, Path]]) -> list[str]:
    """Class names, background first: ``--labels``, else the ``labels`` of a dataset.json, else by value."""
    if labels:
        return list(labels)
    if dataset_json is not None:
        path = Path(dataset_json)
        try:
            raw = json.loads(path.read_text()).get("labels")
        except (OSError, json.JSONDecodeError, AttributeError) as err:
            raise InputError(f"{path}: not a readable dataset.json ({err}); give nnU-Net's dataset.json") from None
        if isinstance(raw, dict) and all(isinstance(v, int) for v in raw.values()):
            return [name for name, _ in sorted(raw.items(), key=lambda item: item[1])]
        if isinstance(raw, dict):  # MSD: {"0": "background", "1": "spleen"}
            return [str(raw[k]) for k in sorted(raw, key=int)]
        raise InputError(f"{path}: no \"labels\" mapping; give --labels NAME... instead")
    top = max(int(np.max(np.asarray(load_volume(ref)))) for _, ref, _ in pairs)
    return ["background", *[f"class_{v}" for v in range(1, max(top, 1) + 1)]]


def score_folders(ref_dir: str | Path, pred_dir: str | Path, output: str | Path | None = None,
                  dataset_json: str | Path | None = None, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Score every prediction in ``pred_dir`` against its reference in ``ref_dir``; write ``summary.json``.

    Args:
        ref_dir: the reference labels (nnU-Net's ``labelsTr``, a ``masks/`` folder...).
        pred_dir: the predictions (``medt3d infer`` output, nnU-Net's predictions).
        output: the folder of ``summary.json`` (default ``pred_dir/score``: ``medt3d infer`` keeps its own
            ``summary.json`` in ``pred_dir``).
        dataset_json: class names from a ``dataset.json`` (nnU-Net's or MSD's).
        labels: class names, background first (wins over ``dataset_json``).

    Returns:
        The summary (nnU-Net's shape, plus ``class_names`` and ``n_cases``).
    """
    pairs = pair_folders(ref_dir, pred_dir)
    names = _class_names(dataset_json, labels, pairs)
    per_case = [{"reference_file": str(ref), "prediction_file": str(pred), "case": case,
                 "metrics": score_pair(ref, pred, names)} for case, ref, pred in pairs]
    values = list(range(1, len(names)))
    summary = {"metric_per_case": per_case, **summarise_cases(per_case, values), "n_cases": len(per_case),
               "class_names": {str(v): names[v] for v in values},
               "empty_rule": "class absent from both: Dice=IoU=null (left out of means), HD95=ASD=0; absent from "
                             "one: Dice=IoU=0, HD95=ASD=volume diagonal (mm)"}
    target = (Path(output) if output is not None else Path(pred_dir) / "score") / "summary.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(summary, indent=2, sort_keys=False))
    dice = summary["foreground_mean"].get("Dice")
    logger.info("scored %d case(s): foreground mean Dice %s; %s", len(per_case),
                "undefined" if dice is None else f"{dice:.4f}", target)
    return summary
