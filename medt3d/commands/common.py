"""Arguments shared by several commands: ``--config`` and repeated ``--set key=value``."""

from __future__ import annotations

import argparse

from medt3d.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser, default: str | None = "default") -> None:
    """Add ``--config`` (YAML path or preset name) and ``--set`` overrides."""
    parser.add_argument("--config", default=default,
                        help="YAML config file or preset name (default, ct_abdomen, mri, demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.max_epochs=3 (repeatable)")


def explicit_overrides(args: argparse.Namespace, flag_overrides: dict[str, object] | None = None) -> list[str]:
    """What the command line sets: ``--set`` overrides, then the plain flags that were given (which win)."""
    flags = [f"{key}={value}" for key, value in (flag_overrides or {}).items() if value is not None]
    return [*args.overrides, *flags]


def config_from_args(args: argparse.Namespace, flag_overrides: dict[str, object] | None = None) -> Config:
    """Load the config named by ``--config`` with ``--set`` overrides, then plain flags (which win)."""
    return load_config(args.config, explicit_overrides(args, flag_overrides))
