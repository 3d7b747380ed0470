"""``medt3d evaluate``: whole-scan predictions scored against ground truth in the scan's own geometry.

Writes ``metrics.csv`` (one row per case and class), ``summary.json`` (mean and std per class and
the foreground mean), contour overlays per case, and ``curves.png`` when the checkpoint's run
folder has a training history. Empty structures get defined values: see :mod:`medt3d.evaluation.metrics`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medt3d.config import Config
from medt3d.data.datalist import Datalist, build_datalist
from medt3d.data.folds import choose_validation
from medt3d.data.geometry import voxel_spacing
from medt3d.data.preflight import check_cases
from medt3d.data.readers import align_to, load_volume
from medt3d.data.readers.rtstruct import RoiMap
from medt3d.devices import resolve_device
from medt3d.errors import InputError
from medt3d.evaluation.metrics import METRIC_NAMES, case_metrics
from medt3d.evaluation.plots import save_curves, save_overlay
from medt3d.evaluation.splits import SPLITS
from medt3d.inference.ensemble import load_members, members_predictor
from medt3d.io_utils import atomic_write_text, check_writable_dir
from medt3d.label_table import label_table
from medt3d.models.layout import RunLayout

__all__ = ["evaluate", "summarise", "SPLITS"]

logger = logging.getLogger("medt3d.evaluate")

CSV_COLUMNS = ("case", "class", "class_index", *METRIC_NAMES)


def summarise(rows: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """Mean and std of every metric per class, and the foreground mean over classes."""
    per_class: dict[str, dict[str, dict[str, float]]] = {}
    for name in class_names[1:]:
        class_rows = [r for r in rows if r["class"] == name]
        per_class[name] = {
            m: {"mean": float(np.mean([r[m] for r in class_rows])), "std": float(np.std([r[m] for r in class_rows]))}
            for m in METRIC_NAMES
        } if class_rows else {}
    filled = [v for v in per_class.values() if v]
    foreground = {m: float(np.mean([v[m]["mean"] for v in filled])) for m in METRIC_NAMES} if filled else {}
    return {"n_cases": len({r["case"] for r in rows}), "per_class": per_class, "foreground_mean": foreground}


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def evaluate(model_path: str | Path, data_dir: str | Path, output: str | Path, split: str = "val",
             device: str | None = None, overlays: bool = True) -> dict[str, Any]:
    """Score a checkpoint on a data folder and write metrics, summary and pictures to ``output``.

    Args:
        model_path: anything ``medt3d infer --model`` takes: a checkpoint (``best.pt``/``last.pt``), a run
            folder, a bundle folder or zip, or a cross-validation folder (its finished folds averaged, with
            its postprocessing; scored on ``test`` or ``all`` only: every case of its folds trained a member).
        data_dir: data folder or datalist JSON.
        output: folder for ``metrics.csv``, ``summary.json``, ``overlays/`` and ``curves.png``.
        split: ``val`` (the validation cases: the data's own, else the model's fold or seeded share of
            the training cases; when there are none, the labelled test cases), ``test``, ``train`` or
            ``all`` (every labelled case); scoring training cases logs a warning.
        device: overrides the checkpoint's ``infer.device``.
        overlays: write one overlay PNG per case.

    Returns:
        The summary dict (also written as ``summary.json``).
    """
    if split not in SPLITS:
        raise InputError(f"split {split!r} is not one of {list(SPLITS)}; pass one of them")
    out = check_writable_dir(output)
    members = load_members([model_path])  # one model, or a cross-validation folder's folds (an ensemble)
    cfg, ensemble = members.cfg, len(members.sources) > 1
    if ensemble and split in ("val", "train"):
        raise InputError(f"--model {model_path} is an ensemble of {len(members.sources)} models, each trained on "
                         f"other cases of its cross-validation, so it has no {split} split of its own; pass held-out "
                         "data: --split test (the data's test cases), or --split all with another --data-dir (its "
                         "out-of-fold scores are in crossval_summary.json)")
    dev = resolve_device(device or cfg.infer.device)
    predictor = members_predictor(members, cfg, dev)
    datalist = build_datalist(data_dir)
    cases = select_cases(datalist, cfg, split, data_dir, ensemble=ensemble)
    if not cases:
        raise InputError(f"{data_dir}: no {split} cases to evaluate (train {len(datalist.train)}, "
                         f"val {len(datalist.val)}, test {len(datalist.test)}); choose a split that has cases "
                         "(--split)")
    unlabelled = [str(c["image"]) for c in cases if not c.get("label")]
    if unlabelled:
        raise InputError(f"{data_dir}: evaluation needs a label for every case; none for {', '.join(unlabelled)}; "
                         "add their labels or move those scans out")
    rois = RoiMap.from_config(cfg.data)  # RTSTRUCT labels: which class each ROI becomes
    check_cases(cases, cfg.data.num_classes, cfg.data.in_channels, rois=rois)  # the gate of medt3d train
    names = list(cfg.data.labels)
    classes = label_table(cfg)
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases, desc="evaluating", unit="case"):
        prediction = predictor.predict(case["image"], keep_image=overlays)  # the scan as loaded, for the overlay
        pred = prediction.label
        # a label stored in another axis order or direction over the same voxels is moved onto the
        # prediction's grid before any array is compared
        label = align_to(load_volume(case["label"], rois=rois), pred.affine, pred.shape[-3:], what=f"label {case['label']}")
        spacing = voxel_spacing(label.affine)
        for row in case_metrics(pred, label, spacing, names):
            rows.append({"case": case["name"], **row})
        if overlays:
            save_overlay(np.asarray(prediction.image[0]), np.asarray(label[0]), np.asarray(pred).squeeze(),
                         out / "overlays" / f"{case['name']}.png", title=case["name"],
                         affine=np.asarray(pred.affine, dtype=np.float64), classes=classes)
    summary = summarise(rows, names)
    summary.update({"model": str(model_path), "data": str(data_dir), "split": split,
                    "empty_rule": "both empty: dice=iou=1, distances=0; one empty: dice=iou=0, distances=diagonal mm"})
    atomic_write_text(out / "metrics.csv", _csv_text(rows))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    history = _history_for(Path(model_path))
    if history is not None:
        save_curves(history, out / "curves.png")
    logger.info("evaluated %d cases: foreground mean Dice %.4f; results in %s", summary["n_cases"],
                summary["foreground_mean"].get("dice", float("nan")), out)
    return summary


def select_cases(datalist: Datalist, cfg: Config, split: str, data_dir: str | Path,
                 ensemble: bool = False) -> list[dict[str, Any]]:
    """The cases ``split`` names; ``val`` on data without a validation split is the model's own validation
    cases (its fold, or its seeded share: :func:`medt3d.data.folds.choose_validation`), never its training
    cases. Scoring cases the model was trained on (``train``, ``all``) is allowed, with a warning. An
    ``ensemble`` (``test`` or ``all`` only) has no fold of its own: every case of the split is scored."""
    labelled_test = [c for c in datalist.test if c.get("label")]  # an MSD test list has no labels
    if ensemble:
        return list(datalist.test) if split == "test" else [*datalist.train, *datalist.val, *labelled_test]
    if datalist.val or split in ("test",):
        trained, val = list(datalist.train), list(datalist.val)
    else:
        choice = choose_validation(datalist, cfg)
        trained, val = choice.train, choice.val
        if split == "val" and val:
            (logger.warning if choice.same_cases else logger.info)(
                "%s has no validation split: scoring the model's validation cases, %s%s", data_dir, choice.how,
                " (cases it was trained on: optimistic scores)" if choice.same_cases else "")
    if split == "val":
        if not val and not labelled_test:
            raise InputError(f"{data_dir}: no validation case to score (the model's config holds out none); pass "
                             "--split train to score the training cases, or --split test")
        return val or labelled_test
    if split == "test":
        return list(datalist.test)
    cases = trained if split == "train" else [*trained, *val, *labelled_test]
    if trained:
        logger.warning("scoring %d case(s) the model was trained on (--split %s): their scores are optimistic, "
                       "not a measure of generalisation", len(trained), split)
    return cases


def _history_for(model_path: Path) -> Path | None:
    history = RunLayout.of(model_path).history
    return history if history.is_file() else None
