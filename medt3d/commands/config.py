"""``medt3d config show``: print the resolved config of a run, a preset or a config file with overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from medt3d.commands.common import add_set_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``config`` command (its one subcommand: ``show``)."""
    p = sub.add_parser("config", help="show a resolved config",
                       description="Config tools. 'medt3d config show' prints the resolved config (every key, "
                                   "defaults filled in) as YAML.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="print the resolved config of a run, a checkpoint, a bundle, a preset or a YAML file",
        description="Print the resolved config as YAML: of a training run folder (its config.yaml), a checkpoint "
                    "(.pt), an exported bundle, a cross-validation folder (its first fold), a preset name "
                    "(default, ct_abdomen, mri, demo) or a YAML file, with --set overrides applied.")
    show.add_argument("source", nargs="?", default="default",
                      help="run folder, checkpoint, bundle, cross-validation folder, preset name or YAML file "
                           "(default: the defaults)")
    add_set_arg(show)
    show.set_defaults(func=run)


def resolved_config(source: str, overrides: list[str]):  # noqa: ANN201 - Config, imported lazily
    """The config ``source`` names, with ``overrides`` applied and validated."""
    from medt3d.config import apply_overrides, config_from_dict, config_to_dict, load_config
    from medt3d.models.layout import BUNDLE_CONFIG, CrossValLayout, RunLayout

    path = Path(source)
    if CrossValLayout.is_crossval(path):
        path = CrossValLayout(path).fold(0)
    if path.is_dir():
        for candidate in (RunLayout(path).config, path / BUNDLE_CONFIG):
            if candidate.is_file():
                return load_config(candidate, overrides)
        from medt3d.models.checkpoint import load_checkpoint
        from medt3d.models.loading import model_file

        payload = load_checkpoint(model_file(path))  # a run folder without config.yaml: its checkpoint's
    elif path.suffix == ".pt" and path.is_file():
        from medt3d.models.checkpoint import load_checkpoint

        payload = load_checkpoint(path)
    else:
        return load_config(source, overrides)
    values = apply_overrides(config_to_dict(config_from_dict(payload["config"], str(path))), overrides)
    return config_from_dict(values, f"{path} (with --set overrides)" if overrides else str(path))


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    import yaml

    from medt3d.config import config_to_dict

    cfg = resolved_config(args.source, args.overrides)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0
