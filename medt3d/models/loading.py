"""Load a trained model for use: from a checkpoint file, a training run folder or an exported bundle.

This is the one place that maps a ``--model`` argument to ``(network, config)``; inference,
evaluation and the bundle export all load through it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from medt3d.config import Config, config_from_dict, load_config
from medt3d.errors import InputError, brief
from medt3d.models.archive import unpack_bundle
from medt3d.models.checkpoint import load_checkpoint
from medt3d.models.layout import BUNDLE_CONFIG, BUNDLE_METADATA, BUNDLE_WEIGHTS, RUN_CHECKPOINTS

__all__ = [
    "check_state_dict",
    "is_bundle",
    "load_bundle_model",
    "load_checkpoint_model",
    "load_model",
    "model_from_checkpoint",
    "model_file",
]

_LISTED = 8  # keys listed per kind of mismatch in error messages


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


def check_state_dict(network: torch.nn.Module, state: Any, source: str, cfg: Config) -> None:
    """Check that ``state`` holds exactly ``network``'s tensors, with the same shapes, all finite.

    Raises:
        ValueError: naming ``source``, the network the config describes, and the missing,
            unexpected and mis-shaped keys (e.g. a first layer made for another channel count).
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{source}: 'network' is not a state_dict (a mapping of parameter names to tensors); "
                         "pass a checkpoint written by medt3d train or medt3d export")
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} (network needs {list(v.shape)})" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    poisoned = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if poisoned:  # a diverged training: every prediction would be background
        raise InputError(f"{source}: {len(poisoned)} weight tensor(s) hold NaN or Inf (e.g. {poisoned[0]}); the "
                         "training that wrote them diverged, so this model cannot be used: "
                         "train it again (e.g. with a lower train.lr) or use an earlier checkpoint")
    if not (missing or unexpected or shapes):
        return
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"wrong shapes: {_listed(shapes)}")
    n = cfg.network
    raise InputError(
        f"{source}: the weights do not fit the network its config describes ({n.name}, preset {n.preset}, "
        f"data.in_channels={cfg.data.in_channels}, {cfg.data.num_classes} classes {list(cfg.data.labels)}): "
        + "; ".join(problems) + "; use the config the weights were trained with (the bundle's or checkpoint's own)")


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[torch.nn.Module, Config]:
    """Rebuild the network of a loaded checkpoint (:func:`medt3d.models.checkpoint.load_checkpoint`) from its config.

    Returns:
        The network with the checkpoint's weights (eval mode, on the CPU), and its resolved config.

    Raises:
        ValueError: no network or config in the checkpoint, or weights that do not fit that network.
    """
    from medt3d.networks import build_network

    source = payload["path"]
    for key in ("network", "config"):
        if payload.get(key) is None:
            raise InputError(f"{source}: the checkpoint has no '{key}' entry (expected a medt3d training checkpoint); "
                             "pass a .pt file written by medt3d train")
    if not isinstance(payload["config"], dict):
        raise InputError(f"{source}: the checkpoint's 'config' entry is not a mapping; pass a .pt file written "
                         "by medt3d train")
    cfg = config_from_dict(payload["config"], source=f"{source} (embedded config)")
    model = build_network(cfg)
    check_state_dict(model, payload["network"], source, cfg)
    model.load_state_dict(payload["network"])
    return model.eval(), cfg


def load_checkpoint_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config]:
    """Rebuild the network from a checkpoint's config and load its weights (eval mode).

    Args:
        path: a checkpoint file, or a run folder (its best, else last checkpoint).
        device: where the network goes.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: unreadable checkpoint, or weights that do not fit the network its config describes.
    """
    model, cfg = model_from_checkpoint(load_checkpoint(path))
    return model.to(device), cfg


def is_bundle(path: str | Path) -> bool:
    """True for an exported bundle folder (``configs/medt3d.yaml`` + ``models/model.pt``) or a ``.zip`` of one."""
    path = Path(path)
    if path.is_file() and path.suffix == ".zip":
        return True
    return path.is_dir() and (path / BUNDLE_CONFIG).is_file() and (path / BUNDLE_WEIGHTS).is_file()


def _load_bundle_dir(root: Path, device: torch.device | str) -> tuple[torch.nn.Module, Config]:
    from medt3d.networks import build_network

    cfg_file, weights = root / BUNDLE_CONFIG, root / BUNDLE_WEIGHTS
    for needed in (cfg_file, weights):
        if not needed.is_file():
            raise FileNotFoundError(f"bundle {root}: {needed.relative_to(root)} not found; export the bundle again "
                                    "with medt3d export")
    cfg = load_config(cfg_file)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt/unsafe files
        raise InputError(f"{weights}: not a readable state_dict ({brief(err)}); "
                         "export the bundle again with medt3d export") from None
    network = build_network(cfg)
    check_state_dict(network, state, str(weights), cfg)
    network.load_state_dict(state)
    return network.to(device).eval(), cfg


def load_bundle_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config]:
    """Network and config of an exported bundle folder, or of a bundle ``.zip`` (unpacked safely).

    Raises:
        FileNotFoundError: the bundle lacks ``configs/medt3d.yaml`` or ``models/model.pt``.
        ValueError: the weights do not fit the config, or the zip is unsafe (see :mod:`medt3d.models.archive`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bundle not found: {path}; check the path")
    if path.is_file():
        with tempfile.TemporaryDirectory(prefix="medt3d-bundle-") as tmp:
            root = unpack_bundle(path, Path(tmp) / "bundle", only=(BUNDLE_CONFIG, BUNDLE_WEIGHTS))  # what loading reads
            try:
                return _load_bundle_dir(root, device)
            except (InputError, FileNotFoundError) as err:  # name the zip, not the temporary folder
                kind = FileNotFoundError if isinstance(err, FileNotFoundError) else InputError
                raise kind(str(err).replace(str(root), f"{path}!")) from None
    return _load_bundle_dir(path, device)


def model_file(path: str | Path) -> Path:
    """The weights file behind ``path``: a checkpoint, a run folder's checkpoint, or a bundle's ``model.pt``.

    Raises:
        FileNotFoundError: nothing there, or a run folder without checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}; check the path (a checkpoint, run folder or "
                                "bundle)")
    if not path.is_dir():
        return path
    if (path / BUNDLE_METADATA).is_file() and (path / BUNDLE_WEIGHTS).is_file():
        return path / BUNDLE_WEIGHTS  # an exported MONAI bundle (medt3d export)
    for name in RUN_CHECKPOINTS:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no checkpoint in run folder {path} (looked for {', '.join(RUN_CHECKPOINTS)}); "
                            "pass a checkpoint file, or train the run first")


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config]:
    """Load a model from a checkpoint file, a training run folder or an exported bundle (folder or zip).

    Args:
        path: what ``--model`` names.
        device: where the network goes.

    Returns:
        The network in eval mode, and its resolved config.

    Raises:
        FileNotFoundError: no model at ``path``.
        ValueError: unreadable checkpoint, weights that do not fit its config, a MONAI bundle not
            made by ``medt3d export``, or an unsafe bundle zip.
    """
    path = Path(path)
    if is_bundle(path):
        return load_bundle_model(path, device)
    if path.is_dir() and (path / BUNDLE_METADATA).is_file():
        raise InputError(f"{path} is a MONAI bundle folder without {BUNDLE_CONFIG} and {BUNDLE_WEIGHTS}; "
                         "medt3d loads only bundles written by 'medt3d export': "
                         "export the model with it")
    return load_checkpoint_model(model_file(path), device)
