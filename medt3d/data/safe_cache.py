"""A disk cache of preprocessed cases whose files load with ``torch.load(weights_only=True)``.

MONAI's ``PersistentDataset`` pickles MetaTensors, whose metadata holds NumPy arrays; such files
load only with ``weights_only=False``, so a file planted in the cache folder would run code at the
next training. Here every cached item is stored as plain tensors, numbers, strings, lists and dicts
(a MetaTensor becomes its tensor plus its metadata and applied operations, NumPy arrays become
tensors, both marked so they come back as they were). A cache file that cannot be loaded that way
(corrupt, truncated, or holding anything else) is deleted and rebuilt with a warning, never executed.
MONAI offers no such format, which is why this small subclass exists.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, PersistentDataset

from medt3d.io_utils import atomic_save

__all__ = ["SafePersistentDataset", "pack", "unpack"]

logger = logging.getLogger("medt3d.data")

_META_TENSOR = "__medt3d_metatensor__"
_NDARRAY = "__medt3d_ndarray__"


def pack(obj: Any) -> Any:
    """``obj`` as plain tensors, numbers, strings, lists, tuples and dicts (see :func:`unpack`)."""
    if isinstance(obj, MetaTensor):
        return {_META_TENSOR: obj.as_tensor().clone(), "meta": pack(dict(obj.meta)),
                "ops": pack(list(obj.applied_operations))}
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":  # strings or objects: keep them as a list
            return pack(obj.tolist())
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {_plain(k): pack(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        packed = [pack(v) for v in obj]
        return tuple(packed) if isinstance(obj, tuple) else packed
    return _plain(obj)


def _plain(obj: Any) -> Any:
    """A key or leaf as a built-in type: string enums (MONAI's ``TraceKeys``) and paths become their text."""
    if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
        return obj
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    return str(obj)  # MONAI's string enums compare and hash as their text


def unpack(obj: Any) -> Any:
    """Rebuild what :func:`pack` stored: MetaTensors and NumPy arrays come back as they were."""
    if isinstance(obj, dict):
        if _META_TENSOR in obj:
            return MetaTensor(obj[_META_TENSOR], meta=unpack(obj["meta"]), applied_operations=unpack(obj["ops"]))
        if _NDARRAY in obj:
            return obj[_NDARRAY].numpy()
        return {k: unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(unpack(v) for v in obj)
    return obj


class SafePersistentDataset(PersistentDataset):
    """``PersistentDataset`` whose cache files hold only weights-only data (see the module docstring)."""

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return self._pre_transform(deepcopy(item_transformed))
        key = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        cache_file = Path(self.cache_dir) / f"{key}.pt"
        if cache_file.is_file():
            try:
                return unpack(torch.load(cache_file, map_location="cpu", weights_only=True))
            except Exception as err:  # noqa: BLE001 - any unreadable or unsafe entry is rebuilt, never run
                logger.warning("disk cache entry %s cannot be loaded safely (%s: %s); rebuilding it",
                               cache_file, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
                cache_file.unlink(missing_ok=True)
        item = self._pre_transform(deepcopy(item_transformed))
        packed = pack(item)
        atomic_save(cache_file, lambda tmp: torch.save(packed, tmp))
        return item
