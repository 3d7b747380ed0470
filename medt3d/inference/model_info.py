"""What a batch records about its model (the sidecar's ``model``), and whether an earlier output was made by it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from medt3d.config import Config
from medt3d.inference.ensemble import Members
from medt3d.inference.predictor import sha256_file
from medt3d.models.loading import model_file

__all__ = ["describe_model", "same_model"]

logger = logging.getLogger("medt3d.inference.batch")


def describe_model(model_path: str | Path | None, cfg: Config, members: Members | None = None) -> dict[str, Any]:
    """The sidecar's ``model``: network, labels, the weights file and its hash (of each member of an
    ensemble, with one hash of their hashes), and the postprocessing plan of a cross-validation folder."""
    info: dict[str, Any] = {"network": cfg.network.name, "preset": cfg.network.preset,
                            "labels": list(cfg.data.labels), "in_channels": cfg.data.in_channels}
    if members is not None and len(members.sources) > 1:  # an ensemble: its members, one hash of their hashes
        files = [model_file(m) for m in members.sources]
        hashes = [sha256_file(f) for f in files]
        info.update({"ensemble": [{"path": str(m.resolve()), "file": str(f.resolve()), "sha256": h}
                                  for m, f, h in zip(members.sources, files, hashes)],
                     "sha256": hashlib.sha256("".join(hashes).encode()).hexdigest()})
    elif model_path is not None:
        file = model_file(members.sources[0] if members is not None else model_path)
        info.update({"path": str(Path(members.sources[0] if members is not None else model_path).resolve()),
                     "file": str(file.resolve()), "sha256": sha256_file(file)})
    if members is not None and members.postprocessing is not None:
        info["postprocessing"] = members.postprocessing.to_dict()["classes"]
    return info


def same_model(sidecar: Path, model_info: dict[str, Any]) -> bool:
    """Whether the outputs of ``sidecar`` were made by this model (same weights file hash and labels)."""
    try:
        previous = json.loads(sidecar.read_text()).get("model", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    keys = ("sha256", "labels")
    if all(previous.get(k) == model_info.get(k) for k in keys):
        return True
    logger.warning("%s: made by another model (sha256 %s, this one %s): segmenting the case again", sidecar,
                   previous.get("sha256", "unknown"), model_info.get("sha256", "unknown"))
    return False
