"""``medt3d distill``: train a student network from a trained teacher's soft labels (and the labels)."""

from __future__ import annotations

import argparse

from medt3d.commands.common import add_config_args, config_from_args, dataset_config, explicit_overrides
from medt3d.commands.train import FLAG_KEYS
from medt3d.errors import InputError
from medt3d.networks.registry import NETWORKS
from medt3d.training.distill_defaults import DEFAULT_ALPHA, DEFAULT_TEMPERATURE


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``distill`` command."""
    p = sub.add_parser("distill", help="train a (smaller) student network from a trained teacher",
                       description="Knowledge distillation: the student (--config) learns the teacher's "
                                   "temperature-scaled soft labels, plus the labels weighted by --alpha. The "
                                   "student's run folder is like medt3d train's: evaluate, infer and export it.")
    add_config_args(p)
    p.add_argument("--teacher", required=True, help="the teacher: a run folder, checkpoint or exported bundle")
    p.add_argument("--data-dir", required=True, help="data folder, MSD dataset.json or datalist JSON")
    p.add_argument("--output", required=True, help="the student's run folder")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help=f"softmax temperature of the soft labels (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"weight of the loss against the labels; 1 - alpha goes to the teacher's term "
                        f"(default {DEFAULT_ALPHA}; 0: the teacher only)")
    p.add_argument("--epochs", type=int, help="= --set train.max_epochs=N")
    p.add_argument("--batch-size", type=int, help="= --set train.batch_size=N")
    p.add_argument("--lr", type=float, help="= --set train.lr=X")
    p.add_argument("--device", help="cpu | cuda | cuda:N | mps (= --set train.device=...)")
    p.add_argument("--network", choices=NETWORKS, help="the student's network (= --set network.name=...)")
    p.add_argument("--resume", action="store_true", help="continue the student's run in OUTPUT (same --teacher)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUTPUT")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///OUTPUT/mlflow.db)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medt3d.training.distill import distill

    if args.resume and args.overwrite:
        raise InputError("--resume continues the run in --output and --overwrite replaces it: pass one of them")
    flags = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}  # the same plain flags as train's
    cfg = dataset_config(config_from_args(args, flags), args.data_dir, explicit_overrides(args, flags))
    distill(cfg, args.teacher, args.data_dir, args.output, temperature=args.temperature, alpha=args.alpha,
            resume=args.resume, tracking_uri=args.tracking_uri, overwrite=args.overwrite,
            overrides=explicit_overrides(args, flags))
    return 0
