"""The main job on built-in data: phantoms -> train -> evaluate -> infer -> export, on a CPU in minutes."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from medt3d.config import Config, load_config
from medt3d.errors import InputError

__all__ = ["DEMO_BUNDLE", "DEMO_CASES", "DEMO_SHAPE", "run_demo"]

logger = logging.getLogger("medt3d.demo")

#: Phantom cases (train, val, held-back test) and volume size used by the demo.
DEMO_CASES = (8, 3, 1)
DEMO_SHAPE = (64, 64, 40)
#: The maintained bundle source (bundles/) the demo exports its model with.
DEMO_BUNDLE = "phantom_demo_medt3d"


def run_demo(output: str | Path, cfg: Config | None = None, cases: tuple[int, int, int] = DEMO_CASES,
             shape: tuple[int, int, int] = DEMO_SHAPE) -> dict[str, Any]:
    """Make phantoms, train MedT3D, evaluate it, predict a held-back phantom and export a bundle.

    Args:
        output: a new (or empty) folder for everything the demo writes.
        cfg: config to train with; default ``configs/demo.yaml``.
        cases: numbers of training, validation and held-back phantoms.
        shape: phantom size in voxels.

    Returns:
        Paths and key figures of the run (also written to ``output/demo.json``).
    """
    from medt3d.bundle.export import export_bundle
    from medt3d.data.nifti import write_nifti
    from medt3d.data.phantoms import write_phantom_dataset
    from medt3d.evaluation.evaluate import evaluate
    from medt3d.inference.predictor import Predictor
    from medt3d.io_utils import atomic_write_text
    from medt3d.models.loading import load_model
    from medt3d.training.engine import train

    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"demo output folder {out} already exists and is not empty; pass a new --output")
    cfg = cfg or load_config("demo")
    start = time.time()
    n_train, n_val, n_test = cases
    logger.info("1/5 writing %d+%d+%d phantoms to %s", n_train, n_val, n_test, out / "data")
    data = write_phantom_dataset(out / "data", n_train=n_train, n_val=n_val, n_test=n_test, shape=shape)
    logger.info("2/5 training %s (%s) for %d epochs", cfg.network.name, cfg.network.preset, cfg.train.max_epochs)
    result = train(cfg, data, out / "run")
    logger.info("3/5 evaluating the best checkpoint on the validation phantoms")
    summary = evaluate(result.best_checkpoint, data, out / "evaluation")
    logger.info("4/5 predicting the held-back phantom(s)")
    model, model_cfg = load_model(result.best_checkpoint)
    predictor = Predictor(model, model_cfg, model.parameters().__next__().device)
    predictions = []
    for image in sorted((data / "test" / "images").glob("*.nii.gz")):
        label = predictor.predict(image).label
        target = out / "predictions" / image.name.replace(".nii.gz", "_seg.nii.gz")
        predictions.append(str(write_nifti(label, label.affine, target)))
    logger.info("5/5 exporting the MONAI bundle %s", DEMO_BUNDLE)
    bundle = export_bundle(result.best_checkpoint, out / DEMO_BUNDLE, name=DEMO_BUNDLE,
                           summary=out / "evaluation" / "summary.json")
    report = {
        "data": str(data),
        "run": str(result.run_dir),
        "best_checkpoint": str(result.best_checkpoint),
        "best_val_mean_dice": result.best_metric,
        "evaluation": str(out / "evaluation"),
        "eval_foreground_mean_dice": summary["foreground_mean"].get("dice"),
        "predictions": predictions,
        "bundle": str(bundle.bundle_dir),
        "seconds": round(time.time() - start, 1),
    }
    atomic_write_text(out / "demo.json", json.dumps(report, indent=2))
    return report
