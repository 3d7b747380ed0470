"""Loading configs: YAML into the dataclasses (type checks whose messages name key and file), dotted
overrides, presets, saving."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from medt3d.config.schema import (
    Config,
    ConfigError,
)
from medt3d.config.validation import validate

__all__ = [
    "apply_overrides",
    "builtin_config_dir",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "override_config",
    "parse_override",
    "resolve_config_path",
    "save_config",
]

#: What to do about a bad value (the message convention of :mod:`medt3d.errors`).
_FIX = "; fix it in the config file or with --set KEY=VALUE"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str, source: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            raise ConfigError(f"{source}: '{path}' must not be null{_FIX}")
        errors: list[ConfigError] = []
        for arg in non_none:
            try:
                return _coerce(value, arg, path, source)
            except ConfigError as err:
                errors.append(err)
        sequences = [err for arg, err in zip(non_none, errors) if typing.get_origin(arg) in (tuple, list)]
        if isinstance(value, (list, tuple)) and len(sequences) == 1:
            raise sequences[0]  # a list was meant for the list-typed member: its error says what is wrong
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{source}: '{path}' = {value!r} does not match {_type_name(tp)}{_FIX}"
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{path}' must be a mapping of keys, got {value!r}{_FIX}")
        return _build_dataclass(tp, value, path, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"{source}: '{path}' must be a list of {len(args)} numbers, got {value!r}{_FIX}"
            )
        return tuple(_coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{source}: '{path}' must be a mapping of names, got {value!r}{_FIX}")
        return {k: _coerce(v, args[1], f"{path}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{path}' must be a list, got {value!r}{_FIX}")
        return [_coerce(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{path}' must be true or false, got {value!r}{_FIX}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{path}' must be an integer, got {value!r}{_FIX}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{path}' must be a number, got {value!r}{_FIX}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{path}' must be a string, got {value!r}{_FIX}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # programming error


def _one_line(err: BaseException) -> str:
    """A YAML or decoding error on one line (PyYAML's marks span several)."""
    return " ".join(str(err).split())


def _build_dataclass(cls: type, values: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = ", ".join(f"'{prefix + '.' if prefix else ''}{k}'" for k in unknown)
        raise ConfigError(f"{source}: unknown config key {where}; known keys here: {sorted(names)}; fix the spelling "
                          "(configs/default.yaml lists every key)")
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], path, source)
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (tuples become lists), suitable for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(values: dict, source: str = "<dict>") -> Config:
    """Build and validate a Config from a (partial) nested dict; missing keys keep defaults."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(values).__name__}; "
                          "write it as in configs/default.yaml")
    merged = _merge(config_to_dict(Config()), values)
    cfg = _build_dataclass(Config, merged, "", source)
    validate(cfg, source)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into a key path and a YAML-parsed value.

    Raises:
        ConfigError: when the text has no ``=`` or no key.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE; write it as e.g. --set train.max_epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty; write it as e.g. --set train.max_epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({_one_line(err)}); quote it as YAML, "
                          "e.g. --set 'data.labels=[background, liver]'") from None
    return key.split("."), value


def builtin_config_dir() -> Path:
    """Folder of the YAML presets shipped with medt3d (``configs/`` in the repository)."""
    return Path(str(resources.files("medt3d.configs")))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Map a preset name (``demo``, ``ct_abdomen``...) or a path to an existing YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}; check the path, or name a preset such as demo")
        return path
    candidate = builtin_config_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in builtin_config_dir().glob("*.yaml"))
    raise FileNotFoundError(f"config {str(name_or_path)!r} is neither a YAML file nor a preset {known}; "
                            "pass a .yaml path or one of the presets")


def _set_dotted(values: dict, keys: Sequence[str], value: Any, where: str) -> None:
    """Set ``values[k0][k1]...[kn] = value`` in place, making missing sections; the one place that walks a
    dotted key (``--set`` texts and :func:`override_config`). A tuple is stored as a list, as YAML gives it.

    Raises:
        ConfigError: a key descends into a value that is not a section (``where`` names the override).
    """
    node = values
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: '{k}' is not a section; fix the dotted key (configs/default.yaml lists "
                              "every key)")
    node[keys[-1]] = list(value) if isinstance(value, tuple) else value


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """A copy of the nested config dict ``values`` with ``section.key=value`` overrides set.

    Raises:
        ConfigError: an override without ``=`` or one that descends into a value that is not a section.
    """
    values = copy.deepcopy(values)
    for text in overrides:
        keys, value = parse_override(text)
        _set_dotted(values, keys, value, f"--set {text!r}")
    return values


def override_config(cfg: Config, overrides: dict[str, Any],
                    source: str = "model config with inference overrides") -> Config:
    """A copy of ``cfg`` with dotted keys replaced (``None`` values skipped), validated again.

    Example: ``override_config(cfg, {"infer.overlap": 0.5, "patch.roi_size": [64, 64, 32]})``.

    Raises:
        ConfigError: unknown key or impossible value (the message names the key).
    """
    values = config_to_dict(cfg)
    for key, value in overrides.items():
        if value is not None:
            _set_dotted(values, key.split("."), value, key)
    return config_from_dict(values, source=source)


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or preset name) and apply ``--set`` style overrides.

    Args:
        name_or_path: a YAML path or a preset name; ``None`` gives the defaults.
        overrides: ``section.key=value`` strings applied after the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unknown key, wrong type or impossible value (the message names key and file).
    """
    values: dict = {}
    source = "<defaults>"
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        source = str(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{source}: not valid YAML ({_one_line(err)}); fix the file "
                              "(configs/default.yaml shows the layout)") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections; write it as in "
                              "configs/default.yaml")
    if overrides:
        values = apply_overrides(values, overrides)
        source = f"{source} (with --set overrides)"
    return config_from_dict(values, source)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from medt3d.io_utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
