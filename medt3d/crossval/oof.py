"""The end of a cross-validation: out-of-fold predictions, their summary and the postprocessing chosen.

Each training case is predicted by the one fold model that did not train on it (its validation fold),
written as ``oof_predictions/CASE.nii.gz`` (nnU-Net's name), and scored against its label in nnU-Net's
summary shape (:mod:`medt3d.evaluation.score`), overall and per fold: ``crossval_summary.json``. The
postprocessing is then chosen from these predictions (:mod:`medt3d.crossval.postprocessing`) and written
as ``postprocessing.json``, which ``medt3d infer --model CV_FOLDER`` applies.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medt3d.data.datalist import Datalist
from medt3d.data.folds import fold_split
from medt3d.data.nifti import write_nifti
from medt3d.devices import resolve_device
from medt3d.evaluation.score import score_pair, summarise_cases
from medt3d.inference.predictor import Predictor
from medt3d.io_utils import atomic_write_text
from medt3d.models.layout import CrossValLayout
from medt3d.models.loading import load_model

__all__ = ["finish_crossval", "predict_out_of_fold"]

logger = logging.getLogger("medt3d.crossval")


def predict_out_of_fold(layout: CrossValLayout, datalist: Datalist,
                        folds: list[dict[str, list[str]]]) -> list[tuple[str, Path, Path, int]]:
    """Predict every validation case with its fold's model; ``(case, label, prediction, fold)`` each."""
    done: list[tuple[str, Path, Path, int]] = []
    layout.oof.mkdir(parents=True, exist_ok=True)
    for fold in range(len(folds)):
        _, val = fold_split(datalist.train, folds, fold, str(layout.splits))
        model, cfg = load_model(layout.fold(fold))
        device = resolve_device(cfg.infer.device)
        predictor = Predictor(model.to(device), cfg, device)
        for case in val:
            prediction = predictor.predict(case["image"], probabilities=False)
            target = layout.oof / f"{case['name']}.nii.gz"
            write_nifti(prediction.label, prediction.affine, target, dtype=None)
            done.append((case["name"], Path(case["label"]), target, fold))
        logger.info("fold %d: %d out-of-fold prediction(s) in %s", fold, len(val), layout.oof)
    return done


def finish_crossval(layout: CrossValLayout, datalist: Datalist, folds: list[dict[str, list[str]]]) -> dict[str, Any]:
    """Out-of-fold predictions, ``crossval_summary.json`` and ``postprocessing.json``; the summary's headline."""
    from medt3d.crossval.postprocessing import choose_postprocessing

    predicted = predict_out_of_fold(layout, datalist, folds)
    _, cfg = load_model(layout.fold(0))
    names = list(cfg.data.labels)
    values = list(range(1, len(names)))
    per_case = [{"reference_file": str(ref), "prediction_file": str(pred), "case": case, "fold": fold,
                 "metrics": score_pair(ref, pred, names)} for case, ref, pred, fold in predicted]
    per_fold = {str(f): summarise_cases([c for c in per_case if c["fold"] == f], values)["foreground_mean"]
                for f in range(len(folds))}
    summary = {"metric_per_case": per_case, **summarise_cases(per_case, values), "per_fold_foreground_mean": per_fold,
               "n_cases": len(per_case), "class_names": {str(v): names[v] for v in values}}
    plan = choose_postprocessing([(ref, pred) for _, ref, pred, _ in predicted], names)
    plan.save(layout.postprocessing)
    summary["postprocessing"] = plan.to_dict()
    atomic_write_text(layout.summary, json.dumps(summary, indent=2))
    dice = summary["foreground_mean"].get("Dice")
    logger.info("cross-validation: out-of-fold foreground mean Dice %s over %d case(s); %s; postprocessing %s",
                "undefined" if dice is None else f"{dice:.4f}", len(per_case), layout.summary,
                {names[v]: s.operation for v, s in plan.steps.items()})
    return {"foreground_mean": summary["foreground_mean"], "per_fold_foreground_mean": per_fold,
            "postprocessing": plan.to_dict()["classes"]}
