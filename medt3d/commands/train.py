"""``medt3d train``: train on a data folder with MONAI engines (also under ``torchrun``)."""

from __future__ import annotations

import argparse

from medt3d.commands.common import add_config_args, config_from_args, dataset_config, explicit_overrides
from medt3d.errors import InputError
from medt3d.networks.registry import NETWORKS

#: Plain flags and the config keys they set (they mean the same as ``--set KEY=VALUE``).
FLAG_KEYS = {
    "epochs": "train.max_epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "device": "train.device",
    "network": "network.name",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    p = sub.add_parser("train", help="train a segmentation network",
                       description="Train MedT3D (or a MONAI baseline) on a data folder.")
    add_config_args(p)
    p.add_argument("--data-dir", required=True, help="data folder, MSD dataset.json or datalist JSON")
    p.add_argument("--output", required=True, help="run folder (checkpoints, logs, tracking)")
    p.add_argument("--epochs", type=int, help="= --set train.max_epochs=N")
    p.add_argument("--batch-size", type=int, help="= --set train.batch_size=N")
    p.add_argument("--lr", type=float, help="= --set train.lr=X")
    p.add_argument("--device", help="cpu | cuda | cuda:N | mps (= --set train.device=...)")
    p.add_argument("--network", choices=NETWORKS, help="= --set network.name=...")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT from its checkpoints/last.pt, with the run's own config "
                        "(--set and the flags above still change it, e.g. --epochs to extend it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUTPUT (without --resume or --overwrite such a folder is refused)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///OUTPUT/mlflow.db)")
    p.add_argument("--folds", nargs="+", metavar="FOLD",
                   help="cross-validation: 'all' or fold numbers (e.g. 0 1 2 3 4), every fold into OUTPUT/fold_N, "
                        "then out-of-fold predictions, OUTPUT/crossval_summary.json and the postprocessing they "
                        "choose; with --resume, finished folds are left and an interrupted one continues")
    p.add_argument("--splits", metavar="FILE",
                   help="nnU-Net splits_final.json giving the folds (= --set data.splits_file=FILE; default: the "
                        "dataset's own splits_final.json, else nnU-Net's rule)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medt3d.training.engine import train

    if args.resume and args.overwrite:
        raise InputError("--resume continues the run in --output and --overwrite replaces it: pass one of them")
    flags = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}
    flags["data.splits_file"] = args.splits
    cfg = dataset_config(config_from_args(args, flags), args.data_dir, explicit_overrides(args, flags))
    if args.folds:
        from medt3d.crossval import parse_folds, train_folds

        train_folds(cfg, args.data_dir, args.output, parse_folds(args.folds), resume=args.resume,
                    overwrite=args.overwrite, tracking_uri=args.tracking_uri, overrides=explicit_overrides(args, flags))
        return 0
    train(cfg, args.data_dir, args.output, resume=args.resume, tracking_uri=args.tracking_uri,
          overwrite=args.overwrite, overrides=explicit_overrides(args, flags))  # it logs the outcome, once
    return 0
