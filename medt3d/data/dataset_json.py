"""The JSON layouts of a datalist: an explicit list of cases (``json``) and an MSD ``dataset.json`` (``msd``).

An nnU-Net ``dataset.json`` is recognised here and read by :mod:`medt3d.data.nnunet`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from medt3d.data.case_names import case_name
from medt3d.data.datalist_types import Datalist
from medt3d.data.nnunet import from_nnunet
from medt3d.data.readers import image_files
from medt3d.errors import InputError

logger = logging.getLogger("medt3d.data.dataset_json")


def _resolve(base: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return os.path.normpath(path if path.is_absolute() else base / path)


def _json_cases(
    entries: Any, base: Path, what: str, problems: list[str], require_labels: bool
) -> list[dict[str, Any]]:
    """Validate and resolve a JSON list of cases (MONAI's own loader stops at the first bad entry)."""
    if not isinstance(entries, list):
        problems.append(f"{what} must be a list of cases, got {type(entries).__name__}")
        return []
    cases = []
    for i, entry in enumerate(entries):
        where = f"{what}[{i}]"
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict):
            problems.append(f"{where} must be an object with \"image\" and \"label\", got {entry!r}")
            continue
        image = entry.get("image")
        several = isinstance(image, list) and image and all(isinstance(p, str) for p in image)
        if not isinstance(image, str) and not several:
            problems.append(f"{where} has no \"image\" path (a path, or a list of one path per channel): {entry!r}")
            continue
        case = dict(entry)
        case["image"] = [_resolve(base, p) for p in image] if several else _resolve(base, image)
        if several and len(image) == 1:
            case["image"] = case["image"][0]
        if isinstance(entry.get("label"), str):
            case["label"] = _resolve(base, entry["label"])
        elif "label" in entry:
            problems.append(f"{where} has a \"label\" that is not a path: {entry['label']!r}")
            case.pop("label")
        elif require_labels:
            problems.append(f"{where}: image without a label: {case['image']}")
        case["name"] = str(entry.get("name") or case_name(image_files(case["image"])[0], "image"))
        cases.append(case)
    return cases


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}; fix "
                         "the file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}; check the file (UTF-8 JSON)") from None


def _msd_meta(data: dict[str, Any], path: Path, problems: list[str]) -> tuple[list[str] | None, str | None]:
    labels = modality = None
    raw_labels = data.get("labels")
    if isinstance(raw_labels, dict):
        try:
            keyed = {int(k): str(v) for k, v in raw_labels.items()}
        except ValueError:
            problems.append(f"{path}: \"labels\" keys must be class indices 0..n-1, got {sorted(raw_labels)}")
        else:
            if sorted(keyed) != list(range(len(keyed))):
                problems.append(f"{path}: \"labels\" keys must be 0..{len(keyed) - 1}, got {sorted(keyed)}")
            else:
                labels = [keyed[i] for i in range(len(keyed))]
    elif isinstance(raw_labels, list):
        labels = [str(v) for v in raw_labels]
    elif raw_labels is not None:
        problems.append(f"{path}: \"labels\" must be an object or a list, got {raw_labels!r}")
    raw_mod = data.get("modality")
    if isinstance(raw_mod, dict):
        modality = ", ".join(str(v) for _, v in sorted(raw_mod.items(), key=lambda kv: str(kv[0]).zfill(6)))
    elif isinstance(raw_mod, str):
        modality = raw_mod
    return labels, modality


def from_json(path: Path, problems: list[str], require_labels: bool) -> Datalist:
    data = _read_json(path)
    base = path.parent
    if isinstance(data, dict) and "training" not in data and ("channel_names" in data or "file_ending" in data):
        return from_nnunet(path, data, problems, require_labels)
    if isinstance(data, dict) and "training" in data:
        labels, modality = _msd_meta(data, path, problems)
        train = _json_cases(data["training"], base, f"{path} training", problems, require_labels)
        val = _json_cases(data.get("validation", []), base, f"{path} validation", problems, require_labels)
        # MSD test images come without labels (evaluate asks for labels itself), and users often leave
        # imagesTs/ out of their copy: a missing test image is left out with a warning, not a problem
        test = _json_cases(data.get("test", []), base, f"{path} test", problems, False)
        missing = [str(f) for c in test for f in image_files(c["image"]) if not f.exists()]
        if missing:
            logger.warning("%s: %d test image(s) listed but not found, left out: %s", path, len(missing),
                           ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""))
            test = [c for c in test if all(f.exists() for f in image_files(c["image"]))]
        return Datalist(train, val, "msd", labels, modality, base, test)
    if isinstance(data, list):
        return Datalist(_json_cases(data, base, str(path), problems, require_labels), [], "json", None, None, base)
    split_keys = {"train": ("train", "training"), "val": ("val", "validation"), "test": ("test",)}
    if isinstance(data, dict) and any(k in data for keys in split_keys.values() for k in keys):
        labels, modality = _msd_meta(data, path, problems)
        splits: dict[str, list[dict[str, Any]]] = {}
        for split, keys in split_keys.items():
            key = next((k for k in keys if k in data), None)
            splits[split] = _json_cases(data[key], base, f"{path} {key}", problems, require_labels) if key else []
        return Datalist(splits["train"], splits["val"], "json", labels, modality, base, splits["test"])
    raise InputError(
        f"{path}: expected a list of cases, an object with \"train\", \"val\" and/or \"test\" lists, or an MSD "
        "dataset.json with \"training\"; write it in one of these forms (docs/data.md)"
    )
