"""Seeded splits of a datalist's cases: a validation share, or the folds of a cross-validation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from medt3d.errors import InputError


def split_cases(
    cases: Sequence[dict[str, Any]], val_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out a seeded share of ``cases`` for validation (for data without a validation split).

    The result depends only on the case names, ``val_fraction`` and ``seed``, not on input order.
    At least one case goes to each side when ``val_fraction > 0``.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1), or fewer than 2 cases to split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}; set data.val_fraction to such a value")
    ordered = sorted(cases, key=lambda c: c["name"])
    if val_fraction == 0.0:
        return ordered, []
    if len(ordered) < 2:
        raise InputError(f"cannot hold out a validation case from {len(ordered)} case(s); need at least 2: add a "
                         "case or set data.val_fraction=0")
    n_val = min(max(1, round(len(ordered) * val_fraction)), len(ordered) - 1)
    picked = set(random.Random(seed).sample(range(len(ordered)), n_val))
    train = [c for i, c in enumerate(ordered) if i not in picked]
    val = [c for i, c in enumerate(ordered) if i in picked]
    return train, val


def fold_cases(cases: Sequence[dict[str, Any]], fold: int, seed: int,
               n_folds: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and validation cases of fold ``fold`` of a seeded ``n_folds``-fold split (as nnU-Net's).

    The cases are sorted by name, shuffled with ``seed`` and dealt into ``n_folds`` parts of nearly
    equal size; fold ``k`` validates on part ``k`` and trains on the rest. Depends only on the
    names, ``seed`` and ``n_folds``.

    Raises:
        ValueError: ``fold`` outside ``0..n_folds-1``, or fewer cases than folds.
    """
    if not 0 <= fold < n_folds:
        raise InputError(f"fold must be 0..{n_folds - 1}, got {fold}; set data.fold to one of them")
    ordered = sorted(cases, key=lambda c: c["name"])
    if len(ordered) < n_folds:
        raise InputError(f"a {n_folds}-fold split needs at least {n_folds} cases, got {len(ordered)}; add cases or "
                         "set data.fold=null")
    order = list(range(len(ordered)))
    random.Random(seed).shuffle(order)
    held = {order[i] for i in range(fold, len(order), n_folds)}
    return ([c for i, c in enumerate(ordered) if i not in held], [c for i, c in enumerate(ordered) if i in held])
