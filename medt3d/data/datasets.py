"""MONAI datasets with the caching the config asks for (none, in memory, or on disk)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset

from medt3d.config import Config, config_to_dict
from medt3d.data.safe_cache import SafePersistentDataset
from medt3d.errors import InputError
from medt3d.io_utils import check_writable_dir

__all__ = ["build_dataset", "case_hash", "preprocess_hash"]


def preprocess_hash(cfg: Config) -> str:
    """Hash of every setting that changes the cached (deterministic) part of the pipelines."""
    full = config_to_dict(cfg)
    relevant = {"data": {k: full["data"][k] for k in ("modality", "labels", "in_channels")},
                "preprocess": full["preprocess"], "roi_size": full["patch"]["roi_size"]}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _transform_hash(settings: str, transforms: Sequence[Any]) -> bytes:
    """Key part for the cached transforms: their class names plus the config settings they read."""
    names = ",".join(type(t).__name__ for t in transforms)
    return hashlib.sha256(f"{settings}|{names}".encode()).hexdigest().encode()


def _file_stamp(path: Path) -> list:
    """Size and modification time of a file, or of every file in a folder (a DICOM series)."""
    if path.is_dir():
        return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in path.iterdir() if p.is_file())
    return [path.stat().st_size, path.stat().st_mtime_ns]


def case_hash(case: dict) -> bytes:
    """Cache key of a case: its entries plus the size and time stamp of every file it names.

    MONAI's default key hashes only the dict, so an edited file under the same name would be
    served stale from the disk cache; the file stamps prevent that.
    """
    stamped = {}
    for key, value in sorted(case.items(), key=lambda kv: str(kv[0])):
        entry: Any = str(value) if isinstance(value, Path) else value
        if isinstance(value, (str, Path)) and Path(value).exists():
            entry = [str(value), _file_stamp(Path(value))]
        stamped[str(key)] = entry
    dump = json.dumps(stamped, sort_keys=True, default=str).encode()
    return hashlib.sha256(dump).hexdigest().encode()


def build_dataset(
    cases: Sequence[dict],
    transforms: Callable,
    cfg: Config,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """A ``Dataset``, ``CacheDataset`` or ``PersistentDataset`` according to ``cfg.data.cache``.

    The cached part is the deterministic prefix of ``transforms`` (up to the first random one).

    Args:
        cases: dicts with ``image`` (and ``label``) paths.
        transforms: the pipeline, e.g. from :func:`medt3d.data.transforms.build_train_transforms`.
        cfg: the config (``data.cache``, ``data.cache_dir``, ``data.num_workers``).
        cache_dir: disk cache folder; ``None`` uses ``cfg.data.cache_dir``. The key of each cached
            item covers the case, its files' time stamps, the preprocessing settings and the
            cached transforms, so train/val pipelines and changed settings never share entries.

    Raises:
        ValueError: disk caching without a cache folder.
        PermissionError: the cache folder cannot be written.
    """
    cases = list(cases)
    kind = cfg.data.cache
    if kind == "memory":
        return CacheDataset(cases, transform=transforms, cache_rate=1.0, num_workers=cfg.data.num_workers,
                            progress=True)
    if kind == "disk":
        folder = cache_dir if cache_dir is not None else cfg.data.cache_dir
        if folder is None:
            raise InputError("data.cache is 'disk' but no cache folder was given: set data.cache_dir")
        folder = check_writable_dir(folder)
        # files hold plain tensors and metadata, loaded with weights_only=True: a planted file cannot run code
        return SafePersistentDataset(
            cases, transform=transforms, cache_dir=folder, hash_func=case_hash,
            hash_transform=functools.partial(_transform_hash, preprocess_hash(cfg)),
            track_meta=True,  # keep MetaTensors (affine, applied operations), as CacheDataset does
        )
    return Dataset(cases, transform=transforms)
