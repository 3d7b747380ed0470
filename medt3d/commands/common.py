"""Arguments shared by several commands: ``--config`` and repeated ``--set key=value``."""

from __future__ import annotations

import argparse

from medt3d.config import Config, load_config


def add_set_arg(parser: argparse.ArgumentParser,
                help: str = "override a config key, e.g. --set train.max_epochs=3 (repeatable)") -> None:
    """Add the repeatable ``--set KEY=VALUE`` (collected in ``args.overrides``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_config_args(parser: argparse.ArgumentParser, default: str | None = "default") -> None:
    """Add ``--config`` (YAML path or preset name) and ``--set`` overrides."""
    parser.add_argument("--config", default=default,
                        help="YAML config file or preset name (default, ct_abdomen, mri, demo)")
    add_set_arg(parser)


def explicit_overrides(args: argparse.Namespace, flag_overrides: dict[str, object] | None = None) -> list[str]:
    """What the command line sets: ``--set`` overrides, then the plain flags that were given (which win)."""
    flags = [f"{key}={value}" for key, value in (flag_overrides or {}).items() if value is not None]
    return [*args.overrides, *flags]


def config_from_args(args: argparse.Namespace, flag_overrides: dict[str, object] | None = None) -> Config:
    """Load the config named by ``--config`` with ``--set`` overrides, then plain flags (which win)."""
    return load_config(args.config, explicit_overrides(args, flag_overrides))


def dataset_config(cfg: Config, data_dir: str, overrides: list[str]) -> Config:
    """``cfg`` with the class names (and channel names) of the dataset's ``dataset.json``, used as they are,
    unless the command line sets ``data.labels`` (``data.channels``, ``data.in_channels``) itself."""
    import logging

    from medt3d.config import override_config
    from medt3d.data.datalist import build_datalist

    try:
        datalist = build_datalist(data_dir, require_labels=False)
    except (ValueError, FileNotFoundError):
        return cfg  # the training's own checks report the data's problems, each naming its file
    given = {o.split("=", 1)[0].strip() for o in overrides}
    changes: dict[str, object] = {}
    if datalist.labels is not None and "data.labels" not in given and list(datalist.labels) != list(cfg.data.labels):
        changes["data.labels"] = list(datalist.labels)
        changes["data.label_table"] = {k: v for k, v in _table(cfg).items() if k in datalist.labels}
    channels = datalist.channels
    if channels is not None and not given & {"data.channels", "data.in_channels"} and (
            len(channels) != cfg.data.in_channels or cfg.data.channels not in (None, list(channels))):
        changes.update({"data.in_channels": len(channels), "data.channels": list(channels)})
    if not changes:
        return cfg
    logging.getLogger("medt3d.train").info("%s: using the dataset's %s", data_dir, ", ".join(
        f"{k.split('.')[-1]} {v}" for k, v in changes.items() if k != "data.label_table"))
    return override_config(cfg, changes, source=f"config with the class names of {data_dir}")


def _table(cfg: Config) -> dict:
    from medt3d.config import config_to_dict

    return config_to_dict(cfg)["data"].get("label_table") or {}
