"""Typed configuration: YAML files are loaded into dataclasses and validated.

The dataclass defaults (:mod:`~medt3d.config.schema`) are the single source of truth for every default.
``configs/default.yaml`` documents them (a test checks that it matches) and the
other YAML files override only what they change.

Example:
    >>> cfg = load_config("demo", overrides=["train.max_epochs=3"])
    >>> cfg.train.max_epochs
    3

The package: :mod:`~medt3d.config.schema` (the value lists and one dataclass per section),
:mod:`~medt3d.config.loading` (YAML, overrides, presets, saving) and :mod:`~medt3d.config.validation`.
Every name is imported from ``medt3d.config``.
"""

from medt3d.config.loading import (
    apply_overrides,
    builtin_config_dir,
    config_from_dict,
    config_to_dict,
    load_config,
    override_config,
    parse_override,
    resolve_config_path,
    save_config,
)
from medt3d.config.schema import (
    BLEND_MODES,
    CACHE_KINDS,
    CLOCKS,
    CT_WINDOWS,
    ENGINE_PRECISIONS,
    ENGINES,
    LOSSES,
    MODALITIES,
    N_FOLDS,
    OUTPUT_FORMATS,
    OUTPUT_NAMINGS,
    PRECISIONS,
    RESAMPLE_MODES,
    SAMPLING_MODES,
    WHOLE_SCAN,
    WINDOW_PADDING_MODES,
    AugmentConfig,
    CodeConfig,
    Config,
    ConfigError,
    DataConfig,
    InferConfig,
    LabelStyle,
    NetworkConfig,
    PatchConfig,
    PreprocessConfig,
    TrackingConfig,
    TrainConfig,
)
from medt3d.config.validation import validate

__all__ = [
    "AugmentConfig",
    "BLEND_MODES",
    "CACHE_KINDS",
    "CLOCKS",
    "CT_WINDOWS",
    "CodeConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "InferConfig",
    "LOSSES",
    "LabelStyle",
    "MODALITIES",
    "N_FOLDS",
    "NetworkConfig",
    "OUTPUT_FORMATS",
    "OUTPUT_NAMINGS",
    "PRECISIONS",
    "ENGINES",
    "ENGINE_PRECISIONS",
    "PatchConfig",
    "PreprocessConfig",
    "RESAMPLE_MODES",
    "SAMPLING_MODES",
    "TrackingConfig",
    "TrainConfig",
    "WHOLE_SCAN",
    "WINDOW_PADDING_MODES",
    "apply_overrides",
    "builtin_config_dir",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "override_config",
    "parse_override",
    "resolve_config_path",
    "save_config",
    "validate",
]
