"""``medt3d train --folds``: every fold of a cross-validation in one folder, each resuming on its own.

The folder (:class:`~medt3d.models.layout.CrossValLayout`) holds ``splits_final.json`` (the folds in use,
nnU-Net's file: :mod:`medt3d.data.folds`), one run folder per fold (``fold_0`` ...), the datalist each
fold trained on (``datalists/fold_N.json``: its training and validation cases, written before it
trains), ``crossval.json`` (the folds asked for and those finished), and, once every fold has finished,
the out-of-fold predictions, their summary and the postprocessing chosen from them
(:mod:`medt3d.crossval.oof`).

Run again with ``--resume``, finished folds are left, an interrupted fold continues from its
``last.pt``, and folds not started start.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medt3d.config import Config, override_config
from medt3d.data.datalist import Datalist, build_datalist
from medt3d.data.folds import fold_split, read_splits, resolve_splits, write_splits
from medt3d.errors import InputError
from medt3d.io_utils import atomic_write_text
from medt3d.models.layout import CrossValLayout, RunLayout

__all__ = ["parse_folds", "train_folds"]

logger = logging.getLogger("medt3d.crossval")


def parse_folds(values: Sequence[str]) -> list[int] | None:
    """``--folds``: ``all`` (None: every fold of the splits) or fold numbers.

    Raises:
        InputError: anything else.
    """
    if list(values) == ["all"]:
        return None
    try:
        folds = sorted({int(v) for v in values})
    except ValueError:
        raise InputError(f"--folds takes 'all' or fold numbers (e.g. 0 1 2 3 4), got {' '.join(values)}; "
                         "pass --folds all or the numbers") from None
    if not folds or folds[0] < 0:
        raise InputError(f"--folds: fold numbers start at 0, got {' '.join(values)}; pass --folds all or 0 1 2 3 4")
    return folds


def _state(layout: CrossValLayout) -> dict[str, Any]:
    try:
        return json.loads(layout.state.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{layout.state}: unreadable ({err}); delete the folder, or pass --overwrite") from None


def _write_state(layout: CrossValLayout, state: dict[str, Any]) -> None:
    atomic_write_text(layout.state, json.dumps(state, indent=2))


def _prepare_folder(layout: CrossValLayout, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The state of an existing cross-validation folder to resume, or None for a new one."""
    root = layout.root
    if CrossValLayout.is_crossval(root):
        if overwrite:
            shutil.rmtree(root)
        elif resume:
            return _state(layout)
        else:
            raise InputError(f"{root} already holds a cross-validation; pass --resume to continue it or "
                             "--overwrite to replace it")
    elif root.is_dir() and any(root.iterdir()):
        raise InputError(f"{root} is not empty and not a cross-validation folder; choose a new --output folder")
    elif resume:
        raise InputError(f"{root}: no cross-validation to resume; leave out --resume to start one")
    return None


def train_folds(cfg: Config, data_dir: str | Path, output: str | Path, folds: list[int] | None = None,
                resume: bool = False, overwrite: bool = False, tracking_uri: str | None = None,
                overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train the folds of a cross-validation into ``output``; when all are finished, the out-of-fold part.

    Args:
        cfg: the resolved config (``data.fold`` is set per fold).
        data_dir: a data folder or dataset.json without its own validation split.
        output: the cross-validation folder.
        folds: the folds to train (None: all of the splits).
        resume: continue the folder: finished folds are left, an interrupted one resumes.
        overwrite: replace a cross-validation already in ``output``.
        tracking_uri: MLflow tracking URI of every fold (default: each fold's own ``mlflow.db``).
        overrides: the command line's ``--set`` (applied again when a fold resumes).

    Returns:
        ``crossval.json``'s content, with ``summary`` once every fold has finished.
    """
    from medt3d.crossval.oof import finish_crossval
    from medt3d.training.engine import train

    layout = CrossValLayout(output)
    datalist = build_datalist(data_dir)
    if datalist.val:
        raise InputError(f"{data_dir} has its own validation split ({len(datalist.val)} case(s)); give a dataset of "
                         "training cases only (nnU-Net's imagesTr), whose folds the cross-validation makes")
    state = _prepare_folder(layout, resume, overwrite)
    names = [c["name"] for c in datalist.train]
    if state is not None and layout.splits.is_file():
        all_folds, source = read_splits(layout.splits, names), str(layout.splits)
    else:
        all_folds, source = resolve_splits(names, datalist.root, cfg.data.splits_file)
    wanted = list(range(len(all_folds))) if folds is None else folds
    missing = [f for f in wanted if f >= len(all_folds)]
    if missing:
        raise InputError(f"--folds {missing} not in {source}, which holds folds 0..{len(all_folds) - 1}; "
                         "pass --folds all or numbers in that range")
    layout.root.mkdir(parents=True, exist_ok=True)
    write_splits(layout.splits, all_folds)
    state = state or {"data": str(Path(data_dir).resolve()), "splits_source": source, "finished": []}
    state["requested"] = sorted(set(state.get("requested", [])) | set(wanted))
    _write_state(layout, state)
    logger.info("cross-validation in %s: folds %s of %d from %s", layout.root, wanted, len(all_folds), source)
    for fold in wanted:
        if fold in state["finished"]:
            logger.info("fold %d: finished earlier, left as is", fold)
            continue
        fold_list = _fold_datalist(layout, datalist, all_folds, fold)
        fold_cfg = override_config(cfg, {"data.fold": fold, "data.splits_file": str(layout.splits.resolve())},
                                   source=f"fold {fold} of {layout.root}")
        fold_dir = layout.fold(fold)
        again = RunLayout(fold_dir).last.is_file()
        logger.info("fold %d: %s in %s", fold, "resuming" if again else "training", fold_dir)
        # a fold folder without last.pt was stopped before its first epoch ended: it starts again
        train(fold_cfg, fold_list, fold_dir, resume=again, tracking_uri=tracking_uri, overrides=overrides,
              overwrite=fold_dir.exists() and not again)
        state["finished"] = sorted({*state["finished"], fold})
        _write_state(layout, state)
    if set(range(len(all_folds))) <= set(state["finished"]):
        state["summary"] = finish_crossval(layout, datalist, all_folds)
    else:
        left = sorted(set(range(len(all_folds))) - set(state["finished"]))
        logger.info("folds %s not trained yet: no out-of-fold summary until they are (medt3d train --folds %s "
                    "--resume)", left, " ".join(map(str, left)))
    return state


def _fold_datalist(layout: CrossValLayout, datalist: Datalist, folds: list[dict[str, list[str]]],
                   fold: int) -> Path:
    """Write fold ``fold``'s training and validation cases as an explicit datalist JSON; its path."""
    train, val = fold_split(datalist.train, folds, fold, str(layout.splits))
    part = Datalist(train, val, "json", datalist.labels, datalist.modality, datalist.root)
    return part.save(layout.root / "datalists" / f"fold_{fold}.json")
