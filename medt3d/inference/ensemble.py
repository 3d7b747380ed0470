"""Several models as one: the folds of a cross-validation folder, or several runs, averaged.

``medt3d infer --model A B ...`` (or ``--model CV_FOLDER``) loads every member here; the
:class:`~medt3d.inference.predictor.Predictor` runs them one after another on each scan and averages
their softmax probabilities (flip TTA included, per member), so only one member's activations exist at
a time. The members must read scans alike: the same classes, channels and preprocessing (the first
member's inference settings are used). A cross-validation folder brings its postprocessing plan.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from medt3d.config import Config, config_to_dict
from medt3d.errors import InputError
from medt3d.inference.engines import engine_networks
from medt3d.inference.postprocess import PostprocessingPlan
from medt3d.inference.predictor import Predictor
from medt3d.models.layout import CrossValLayout
from medt3d.models.loading import load_model

__all__ = ["Members", "expand_models", "load_members", "members_predictor"]

#: config sections that must agree between members (what the Predictor's one preprocessing reads)
_SHARED = ("preprocess",)


@dataclass
class Members:
    """The loaded members of an ensemble (one member for a plain model).

    Attributes:
        networks: one network per member (eval mode, on the CPU).
        cfg: the first member's config (inference settings, preprocessing, labels).
        sources: what each member was loaded from.
        postprocessing: the plan of a cross-validation folder, if it has one.
    """

    networks: list[torch.nn.Module]
    cfg: Config
    sources: list[Path]
    postprocessing: PostprocessingPlan | None = None


def expand_models(paths: Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """Member model paths (a cross-validation folder becomes its finished folds) and its postprocessing plan.

    Raises:
        InputError: a cross-validation folder with no finished fold, or a plan with several such folders.
    """
    members: list[Path] = []
    plans: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not CrossValLayout.is_crossval(path):
            members.append(path)
            continue
        layout = CrossValLayout(path)
        try:
            done = sorted(int(f) for f in json.loads(layout.state.read_text()).get("finished", []))
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise InputError(f"{layout.state}: unreadable ({err}); rerun medt3d train --folds ... --resume") from None
        if not done:
            raise InputError(f"{path}: no finished fold in this cross-validation folder; run medt3d train --folds "
                             "... --resume to finish it")
        members.extend(layout.fold(i) for i in done)
        if layout.postprocessing.is_file():
            plans.append(layout.postprocessing)
    if len(plans) > 1:
        raise InputError(f"several cross-validation folders bring a postprocessing plan ({', '.join(map(str, plans))}); "
                         "give one cross-validation folder, or its fold run folders")
    return members, plans[0] if plans else None


def _compatible(cfg: Config, other: Config, source: Path, first: Path) -> None:
    checks = {"data.labels": (list(cfg.data.labels), list(other.data.labels)),
              "data.in_channels": (cfg.data.in_channels, other.data.in_channels)}
    a, b = config_to_dict(cfg), config_to_dict(other)
    checks.update({section: (a[section], b[section]) for section in _SHARED})
    differ = [key for key, (x, y) in checks.items() if x != y]
    if differ:
        raise InputError(f"{source}: {', '.join(differ)} differ(s) from {first}'s, so the two models cannot be "
                         "averaged; give models trained with the same classes, channels and preprocessing")


def load_members(paths: Sequence[str | Path]) -> Members:
    """Load every member (on the CPU) and check that they can be averaged.

    Raises:
        FileNotFoundError, InputError: a member that cannot be loaded, or members that differ in classes,
            channels or preprocessing.
    """
    sources, plan_path = expand_models(paths)
    if not sources:
        raise InputError("no model given; pass --model MODEL (or several, or a cross-validation folder)")
    networks: list[torch.nn.Module] = []
    cfg: Config | None = None
    for source in sources:
        net, member_cfg = load_model(source)
        if cfg is None:
            cfg = member_cfg
        else:
            _compatible(cfg, member_cfg, source, sources[0])
        networks.append(net.eval())
    assert cfg is not None
    plan = PostprocessingPlan.load(plan_path) if plan_path is not None else None
    return Members(networks, cfg, sources, plan)


def members_predictor(members: Members, cfg: Config, device: torch.device, progress: bool = False) -> Predictor:
    """The predictor of loaded ``members`` under ``cfg``'s engine (an ensemble's move to the device one at a time),
    with a cross-validation folder's postprocessing plan."""
    nets = engine_networks(members.sources, members.networks, cfg, device)
    nets = nets if len(nets) > 1 else [nets[0].to(device)]
    return Predictor(nets, cfg, device, progress=progress, postprocessing=members.postprocessing)
