"""Cross-validation folds as nnU-Net v2 makes them: ``splits_final.json``, read or written by its rule.

nnU-Net's rule (``nnunetv2.utilities.crossval_split.generate_crossval_split``, called by its trainer's
``do_split``): the training case identifiers sorted, then scikit-learn's ``KFold(n_splits=5,
shuffle=True, random_state=12345)``; fold ``i`` validates on the ``i``-th test part. The file is a JSON
list with one ``{"train": [...], "val": [...]}`` per fold. With the same identifiers both tools give
the same folds, so "fold 0" means the same cases in medt3d and nnU-Net.

Where the folds come from, first found wins: an explicit file (``--splits``, ``data.splits_file``), the
dataset's own ``splits_final.json`` (beside its ``dataset.json``), else the rule. The folds in use are
written into the run folder (never into the dataset, which is an input).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medt3d.config import Config
from medt3d.data.splits import split_cases
from medt3d.errors import InputError
from medt3d.io_utils import atomic_write_text

__all__ = [
    "ValidationChoice",
    "choose_validation",
    "NNUNET_SEED",
    "SPLITS_FILE",
    "fold_split",
    "nnunet_folds",
    "read_splits",
    "resolve_splits",
    "write_splits",
]

#: nnU-Net's file name and seed (``nnUNetTrainer.do_split``)
SPLITS_FILE = "splits_final.json"
NNUNET_SEED = 12345

Folds = list[dict[str, list[str]]]


def nnunet_folds(names: Sequence[str], n_folds: int = 5, seed: int = NNUNET_SEED) -> Folds:
    """The folds nnU-Net writes for these case identifiers (sorted first, as nnU-Net sorts them).

    Raises:
        ValueError: fewer cases than folds, or a name given twice.
    """
    from sklearn.model_selection import KFold

    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        raise InputError(f"case names must be unique for a {n_folds}-fold split, repeated: "
                         f"{sorted({n for n in ordered if ordered.count(n) > 1})}; rename the cases")
    if len(ordered) < n_folds:
        raise InputError(f"a {n_folds}-fold split needs at least {n_folds} cases, got {len(ordered)}; "
                         "give more training cases or a splits_final.json with fewer folds (--splits)")
    kfold = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [{"train": [ordered[i] for i in tr], "val": [ordered[i] for i in va]}
            for tr, va in kfold.split(ordered)]


def read_splits(path: str | Path, names: Sequence[str] | None = None) -> Folds:
    """Read and check a ``splits_final.json``: a list of ``{"train": [...], "val": [...]}``.

    Args:
        path: the file.
        names: the dataset's case names; every name in the file must be one of them.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not that shape, or naming cases the dataset lacks (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file not found: {path}; give an nnU-Net splits_final.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err}); give nnU-Net's splits_final.json") from None
    shape = 'a list of {"train": [case, ...], "val": [case, ...]}, one per fold'
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: not {shape}; fix the file or give another with --splits")
    for i, fold in enumerate(data):
        if (not isinstance(fold, dict) or not all(isinstance(fold.get(k), list) for k in ("train", "val"))
                or not all(isinstance(n, str) for k in ("train", "val") for n in fold[k])):
            raise InputError(f"{path}: fold {i} is not {{\"train\": [...], \"val\": [...]}} of case names; fix the file "
                             f"({shape})")
    if names is not None:
        known = set(names)
        unknown = sorted({n for fold in data for k in ("train", "val") for n in fold[k]} - known)
        if unknown:
            raise InputError(f"{path}: {len(unknown)} case(s) not in the dataset, e.g. {unknown[:5]}; give a splits "
                             "file that names the dataset's training cases")
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in data]


def write_splits(path: str | Path, folds: Folds) -> Path:
    """Write ``folds`` as nnU-Net's ``splits_final.json`` (atomically)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(folds, indent=4))
    return path


def resolve_splits(names: Sequence[str], dataset_root: str | Path | None = None,
                   splits_file: str | Path | None = None) -> tuple[Folds, str]:
    """The folds for these training cases and where they came from.

    Args:
        names: the training case names.
        dataset_root: the data folder; its ``splits_final.json`` is used when present.
        splits_file: an explicit file, which wins.

    Returns:
        ``(folds, source)``: source is the file read, or ``"nnU-Net's rule (KFold, seed 12345)"``.
    """
    candidates = [Path(splits_file)] if splits_file else []
    if dataset_root is not None and not candidates:
        own = Path(dataset_root) / SPLITS_FILE
        if own.is_file():
            candidates.append(own)
    if candidates:
        return read_splits(candidates[0], names), str(candidates[0])
    return nnunet_folds(names), f"nnU-Net's rule (sorted names, KFold shuffled, seed {NNUNET_SEED})"


def fold_split(cases: Sequence[dict[str, Any]], folds: Folds, fold: int,
               source: str = "the splits") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and validation cases of fold ``fold``.

    Raises:
        ValueError: no such fold in ``folds``.
    """
    if not 0 <= fold < len(folds):
        raise InputError(f"fold {fold} is not in {source}, which holds folds 0..{len(folds) - 1}; choose one of those")
    train, val = set(folds[fold]["train"]), set(folds[fold]["val"])
    ordered = sorted(cases, key=lambda c: c["name"])
    return [c for c in ordered if c["name"] in train], [c for c in ordered if c["name"] in val]


@dataclass
class ValidationChoice:
    """How a datalist without a validation split was divided, for training and for ``evaluate``.

    Attributes:
        train: the training cases.
        val: the validation cases.
        how: one line saying how they were chosen (logged).
        folds: the folds in use when ``data.fold`` chose them, else None.
        same_cases: the validation cases are the training cases (a single case).
    """

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    how: str
    folds: Folds | None = None
    same_cases: bool = False


def choose_validation(datalist: Any, cfg: Config) -> ValidationChoice:
    """The training and validation cases of a run: the data's own validation split, else fold
    ``data.fold`` of the folds (:func:`resolve_splits`), else the seeded ``data.val_fraction`` share.

    ``medt3d train`` and ``medt3d evaluate`` both call this, so that evaluate's default ``val`` cases are
    the run's validation cases, never its training cases.
    """
    if datalist.val:
        return ValidationChoice(list(datalist.train), list(datalist.val), "the data's own validation split")
    d = cfg.data
    if d.fold is not None:
        names = [c["name"] for c in datalist.train]
        folds, source = resolve_splits(names, datalist.root, d.splits_file)
        train, val = fold_split(datalist.train, folds, d.fold, source)
        return ValidationChoice(train, val, f"fold {d.fold} of {len(folds)} from {source}: {len(train)} train / "
                                            f"{len(val)} val", folds)
    if cfg.train.val_interval <= 0:  # such a run makes no split: every case was trained on
        return ValidationChoice(list(datalist.train), [], "no validation (train.val_interval=0): every case trains")
    if len(datalist.train) < 2:  # as medt3d train does: the one case validates too
        return ValidationChoice(list(datalist.train), list(datalist.train),
                                f"the training case(s): only {len(datalist.train)}", same_cases=True)
    train, val = split_cases(datalist.train, d.val_fraction, d.split_seed)
    if not val:  # data.val_fraction=0: as medt3d train does, the training cases validate
        return ValidationChoice(train, list(train), "the training cases (data.val_fraction=0)",
                                same_cases=True)
    return ValidationChoice(train, val, f"a seeded split (data.val_fraction={d.val_fraction}, data.split_seed="
                                        f"{d.split_seed}): {len(train)} train / {len(val)} val")
