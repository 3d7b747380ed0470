"""The ``nnunet`` layout of a datalist: an nnU-Net v2 raw dataset, one ``_XXXX`` image file per channel."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from medt3d.data.case_names import folder_entries
from medt3d.data.datalist_types import Datalist

#: nnU-Net's channel file names: ``<case>_0000``, ``<case>_0001``, ... (without the file ending)
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def channel_file(stem: str) -> tuple[str, int] | None:
    """(case, channel) of an nnU-Net channel file name without its ending (``la_003_0001`` -> ``("la_003", 1)``), or None."""
    match = _CHANNEL_FILE.match(stem)
    return None if match is None else (match["case"], int(match["channel"]))


def _nnunet_labels(raw: Any, path: Path, problems: list[str]) -> list[str] | None:
    """Class names ordered by value, from nnU-Net v2's ``labels`` (name -> value)."""
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{path}: \"labels\" must map class names to values, e.g. {{\"background\": 0, \"spleen\": 1}}")
        return None
    regions = sorted(name for name, value in raw.items() if isinstance(value, (list, tuple)))
    if regions:
        problems.append(f"{path}: region-based labels ({', '.join(regions)} list several values) are not supported; "
                        "give each class one value")
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        problems.append(f"{path}: \"labels\" values must be integers, got {raw}")
        return None
    by_value = sorted(raw.items(), key=lambda item: item[1])
    values = [v for _, v in by_value]
    if values != list(range(len(values))):
        problems.append(f"{path}: \"labels\" values must be 0..{len(values) - 1} (nnU-Net's rule: background 0, "
                        f"then consecutive integers), got {values}")
        return None
    return [name for name, _ in by_value]


def from_nnunet(path: Path, data: dict[str, Any], problems: list[str], require_labels: bool) -> Datalist:
    """An nnU-Net v2 raw dataset: images found by name, one ``_XXXX`` file per channel."""
    base = path.parent
    raw_channels = data.get("channel_names")
    if not isinstance(raw_channels, dict) or not raw_channels:
        problems.append(f"{path}: \"channel_names\" must map channel numbers to names, e.g. {{\"0\": \"CT\"}}")
        return Datalist([], [], "nnunet", None, None, base)
    try:
        channel_map = {int(k): str(v) for k, v in raw_channels.items()}
    except ValueError:
        problems.append(f"{path}: \"channel_names\" keys must be channel numbers, got {sorted(raw_channels)}")
        return Datalist([], [], "nnunet", None, None, base)
    if sorted(channel_map) != list(range(len(channel_map))):
        problems.append(f"{path}: \"channel_names\" keys must be 0..{len(channel_map) - 1}, got {sorted(channel_map)}")
        return Datalist([], [], "nnunet", None, None, base)
    channels = [channel_map[i] for i in range(len(channel_map))]
    labels = _nnunet_labels(data.get("labels"), path, problems)
    ending = data.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        problems.append(f"{path}: \"file_ending\" must be a file suffix like \".nii.gz\", got {ending!r}")
        ending = ".nii.gz"

    def cases_in(images_dir: Path, labels_dir: Path | None, split: str, need_labels: bool) -> list[dict[str, Any]]:
        if not images_dir.is_dir():
            return []
        files: dict[str, dict[int, Path]] = defaultdict(dict)
        for entry in folder_entries(images_dir):
            parts = channel_file(entry.name[: -len(ending)]) if entry.name.endswith(ending) else None
            if parts is None:
                problems.append(f"{entry}: not an nnU-Net image file <case>_XXXX{ending} (XXXX: the channel number)")
                continue
            files[parts[0]][parts[1]] = entry
        cases = []
        for case, by_channel in sorted(files.items()):
            if sorted(by_channel) != list(range(len(channels))):
                found = ", ".join(f"_{c:04d}" for c in sorted(by_channel))
                problems.append(f"{split} case {case!r} in {images_dir}: channel files {found}, but channel_names "
                                f"lists {len(channels)} channel(s) (_0000 to _{len(channels) - 1:04d})")
                continue
            image = [str(by_channel[c]) for c in range(len(channels))]
            entry: dict[str, Any] = {"name": case, "image": image if len(image) > 1 else image[0]}
            label = labels_dir / f"{case}{ending}" if labels_dir is not None else None
            if label is not None and label.is_file():
                entry["label"] = str(label)
            elif need_labels:
                problems.append(f"{split} case {case!r}: no label {label}")
            cases.append(entry)
        return cases

    train = cases_in(base / "imagesTr", base / "labelsTr", "training", require_labels)
    test = cases_in(base / "imagesTs", base / "labelsTs", "test", False)
    expected = data.get("numTraining")
    if isinstance(expected, int) and expected != len(train) and not problems:
        problems.append(f"{path}: numTraining is {expected} but {base / 'imagesTr'} holds {len(train)} case(s)")
    datalist = Datalist(train, [], "nnunet", labels, ", ".join(channels), base, test)
    datalist.channels = channels
    return datalist
