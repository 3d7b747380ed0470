"""``medt3d export --model CV_FOLDER``: a fold set as one folder of MONAI bundles, an ensemble ``infer`` reads.

The exported folder keeps the cross-validation layout (:class:`~medt3d.models.layout.CrossValLayout`):
``fold_N/`` is the bundle of fold N (:func:`medt3d.bundle.export.export_bundle`: configs, weights,
TorchScript, README), beside ``crossval.json`` (the folds it holds), ``postprocessing.json``,
``splits_final.json`` and ``crossval_summary.json`` copied from the cross-validation. ``medt3d infer
--model EXPORTED`` then averages the bundles' probabilities and applies the postprocessing, as it does
for the cross-validation folder itself; each ``fold_N`` also deploys alone as a MONAI bundle. The
folder appears whole or not at all.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from medt3d.bundle.export import export_bundle
from medt3d.errors import InputError
from medt3d.io_utils import atomic_dir, atomic_write_text
from medt3d.models.layout import CrossValLayout

__all__ = ["export_fold_set"]

logger = logging.getLogger("medt3d.bundle")


def export_fold_set(crossval: str | Path, output: str | Path, **bundle_options: Any) -> list[Path]:
    """Export every finished fold of a cross-validation folder as a bundle under ``output/fold_N``.

    Args:
        crossval: the folder of ``medt3d train --folds``.
        output: the folder to create (must not exist, or be empty).
        bundle_options: passed to :func:`~medt3d.bundle.export.export_bundle` for each fold (``onnx``, ``name``...).

    Returns:
        The bundle folders, in fold order.

    Raises:
        InputError: not a cross-validation folder, no finished fold, or an output that is not empty.
    """
    source, output = CrossValLayout(crossval), Path(output)
    if not CrossValLayout.is_crossval(crossval):
        raise InputError(f"{crossval} is not a cross-validation folder (no {CrossValLayout.MARKER}); pass the "
                         "--output folder of medt3d train --folds")
    state = json.loads(source.state.read_text())
    folds = sorted(int(f) for f in state.get("finished", []))
    if not folds:
        raise InputError(f"{crossval}: no finished fold to export; finish the folds with medt3d train --folds ... "
                         "--resume")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InputError(f"output {output} already exists and is not empty; choose a new folder")
    with atomic_dir(output) as tmp:
        target = CrossValLayout(tmp)
        for fold in folds:
            export_bundle(source.fold(fold), target.fold(fold), **bundle_options)
        for name in (source.postprocessing, source.splits, source.summary):
            if name.is_file():
                shutil.copy2(name, tmp / name.name)
        atomic_write_text(target.state, json.dumps({"exported_from": str(source.root.resolve()), "finished": folds,
                                                    "requested": folds}, indent=2))
    logger.info("exported folds %s of %s to %s", folds, crossval, output)
    return [CrossValLayout(output).fold(f) for f in folds]
