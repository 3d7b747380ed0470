"""Validation of a whole config: every value against its list, its range and the other sections."""

from __future__ import annotations

import dataclasses

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
    PRECISIONS,
    RESAMPLE_MODES,
    RTSTRUCT_MATCH,
    SAMPLING_MODES,
    WHOLE_SCAN,
    WINDOW_PADDING_MODES,
    AugmentConfig,
    Config,
    ConfigError,
    DataConfig,
    InferConfig,
    NetworkConfig,
    PatchConfig,
    PreprocessConfig,
    TrainConfig,
)
from medt3d.errors import hint_of
from medt3d.networks.registry import NETWORKS, NORMS, PRESETS

__all__ = ["validate"]


def _require(cond: bool, source: str, path: str, message: str) -> None:
    if not cond:
        hint = "" if hint_of(message) else f"; set {path} in the config file or with --set {path}=VALUE"
        raise ConfigError(f"{source}: '{path}' {message}{hint}")


def _one_of(value: str, allowed: tuple[str, ...], source: str, path: str) -> None:
    _require(value in allowed, source, path, f"= {value!r} is not one of {list(allowed)}")


def _validate_label_table(d: DataConfig, source: str) -> None:
    for name, style in d.label_table.items():
        key = f"data.label_table.{name}"
        _require(name in d.labels, source, key, f"names no class of data.labels {d.labels}")
        if style.color is not None:
            _require(len(style.color) == 3 and all(0 <= c <= 255 for c in style.color), source, f"{key}.color",
                     f"must be 3 integers 0-255 (RGB), got {style.color}")
        _require((style.category is None) == (style.type is None), source, key,
                 "needs both category and type codes, or neither")
        for part in ("category", "type"):
            code = getattr(style, part)
            if code is not None:
                _require(bool(code.code and code.meaning and code.scheme), source, f"{key}.{part}",
                         f"needs code, meaning and scheme, got {dataclasses.asdict(code)}")


def validate(cfg: Config, source: str = "<config>") -> None:
    """Reject impossible values; each message names the dotted key and the source file."""
    _validate_data(cfg.data, source)
    _validate_preprocess(cfg.preprocess, source)
    _validate_patch(cfg.data, cfg.patch, source)
    _validate_augment(cfg.augment, source)
    _validate_network(cfg.network, source)
    _validate_train(cfg.data, cfg.train, cfg.infer, source)
    _validate_infer(cfg.infer, source)


def _validate_data(d: DataConfig, source: str) -> None:
    """The ``data`` section's checks (in the schema's order)."""
    _one_of(d.modality, MODALITIES, source, "data.modality")
    _require(len(d.labels) >= 2, source, "data.labels", f"needs background and at least one class, got {d.labels}")
    _require(len(set(d.labels)) == len(d.labels), source, "data.labels", f"has duplicate names: {d.labels}")
    _validate_label_table(d, source)
    for roi, name in d.roi_names.items():
        _require(name in d.labels, source, f"data.roi_names.{roi}", f"= {name!r} names no class of data.labels {d.labels}")
    _one_of(d.rtstruct_match, RTSTRUCT_MATCH, source, "data.rtstruct_match")
    _require(d.in_channels >= 1, source, "data.in_channels", f"must be >= 1, got {d.in_channels}")
    if d.channels is not None:
        _require(len(d.channels) == d.in_channels, source, "data.channels",
                 f"needs one name per input channel (data.in_channels={d.in_channels}), got {d.channels}")
    _require(0 <= d.reference_channel < d.in_channels, source, "data.reference_channel",
             f"must name an input channel, 0..{d.in_channels - 1} (data.in_channels={d.in_channels}), "
             f"got {d.reference_channel}")
    _require(0.0 <= d.val_fraction < 1.0, source, "data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    if d.fold is not None:
        _require(0 <= d.fold < N_FOLDS, source, "data.fold", f"must be 0..{N_FOLDS - 1} or null, got {d.fold}")
    _one_of(d.cache, CACHE_KINDS, source, "data.cache")
    _require(d.num_workers >= 0, source, "data.num_workers", f"must be >= 0, got {d.num_workers}")


def _validate_preprocess(p: PreprocessConfig, source: str) -> None:
    """The ``preprocess`` section's checks (in the schema's order)."""
    if p.spacing is not None:
        _require(all(s > 0 for s in p.spacing), source, "preprocess.spacing", f"must be positive, got {list(p.spacing)}")
    _require(len(p.orientation) == 3 and set(p.orientation.upper()) <= set("RLAPSI"), source,
             "preprocess.orientation", f"= {p.orientation!r} is not a 3-letter axis code like 'RAS'")
    _one_of(p.ct_window, tuple(CT_WINDOWS), source, "preprocess.ct_window")
    _require(p.suv_max > 0, source, "preprocess.suv_max", f"must be a positive SUV, got {p.suv_max}")
    if p.window is not None:
        _require(p.window[0] > 0, source, "preprocess.window", f"width must be positive, got {list(p.window)}")


def _validate_patch(d: DataConfig, pt: PatchConfig, source: str) -> None:
    """The ``patch`` section's checks (in the schema's order)."""
    _require(all(r >= 1 for r in pt.roi_size), source, "patch.roi_size", f"must be positive, got {list(pt.roi_size)}")
    _require(pt.num_samples >= 1, source, "patch.num_samples", f"must be >= 1, got {pt.num_samples}")
    _one_of(pt.mode, SAMPLING_MODES, source, "patch.mode")
    _require(pt.pos >= 0 and pt.neg >= 0 and pt.pos + pt.neg > 0, source, "patch.pos",
             f"pos/neg must be >= 0 and not both 0, got pos={pt.pos}, neg={pt.neg}")
    if pt.class_ratios is not None:
        _require(len(pt.class_ratios) == d.num_classes, source, "patch.class_ratios",
                 f"needs one value per label ({d.num_classes}), got {pt.class_ratios}")
        _require(all(r >= 0 for r in pt.class_ratios) and sum(pt.class_ratios) > 0, source,
                 "patch.class_ratios", f"must be >= 0 and not all 0, got {pt.class_ratios}")


def _validate_augment(a: AugmentConfig, source: str) -> None:
    """The ``augment`` section's checks (in the schema's order)."""
    for name in ("flip_prob", "rotate90_prob", "affine_prob", "intensity_prob", "noise_prob", "gamma_prob",
                 "low_res_prob", "field_of_view_prob"):
        value = getattr(a, name)
        _require(0.0 <= value <= 1.0, source, f"augment.{name}", f"must be a probability in [0, 1], got {value}")
    for name in ("rotate_deg", "scale", "shift", "scale_intensity", "noise_std"):
        value = getattr(a, name)
        _require(value >= 0, source, f"augment.{name}", f"must be >= 0, got {value}")
    _require(0 < a.gamma_range[0] <= a.gamma_range[1], source, "augment.gamma_range",
             f"must be (low, high) with 0 < low <= high, got {list(a.gamma_range)}")
    _require(0 < a.low_res_zoom[0] <= a.low_res_zoom[1] <= 1, source, "augment.low_res_zoom",
             f"must be (low, high) with 0 < low <= high <= 1, got {list(a.low_res_zoom)}")
    _require(0 < a.field_of_view_min <= 1, source, "augment.field_of_view_min",
             f"must be a fraction of the patch in (0, 1], got {a.field_of_view_min}")


def _validate_network(n: NetworkConfig, source: str) -> None:
    """The ``network`` section's checks (in the schema's order)."""
    _one_of(n.name, NETWORKS, source, "network.name")
    _one_of(n.preset, PRESETS, source, "network.preset")
    _one_of(n.norm, NORMS, source, "network.norm")
    for name in ("heads", "span", "stem_stride", "local_patch"):
        value = getattr(n, name)
        if value is not None:
            _require(value >= 1, source, f"network.{name}", f"must be >= 1, got {value}")
    _require(n.deep_supervision >= 0, source, "network.deep_supervision", f"must be >= 0, got {n.deep_supervision}")
    if n.full_res_channels is not None:
        _require(n.full_res_channels >= 0, source, "network.full_res_channels",
                 f"must be >= 0, got {n.full_res_channels}")
    if n.channels is not None:
        _require(len(n.channels) >= 1 and all(c >= 1 for c in n.channels), source, "network.channels",
                 f"must be positive widths, got {n.channels}")
    if n.stem_channels is not None:
        _require(all(c >= 1 for c in n.stem_channels), source, "network.stem_channels",
                 f"must be positive widths, got {n.stem_channels}")
    if n.blocks is not None:
        _require(all(b >= 0 for b in n.blocks), source, "network.blocks", f"must be >= 0, got {n.blocks}")
    _require(0.0 <= n.dropout < 1.0, source, "network.dropout", f"must be in [0, 1), got {n.dropout}")


def _validate_train(d: DataConfig, t: TrainConfig, i: InferConfig, source: str) -> None:
    """The ``train`` section's checks (in the schema's order)."""
    _require(t.max_epochs >= 1, source, "train.max_epochs", f"must be >= 1, got {t.max_epochs}")
    if t.max_seconds is not None:
        _require(t.max_seconds > 0, source, "train.max_seconds", f"must be positive, got {t.max_seconds}")
    _one_of(t.clock, CLOCKS, source, "train.clock")
    if t.iterations_per_epoch is not None:
        _require(t.iterations_per_epoch >= 1, source, "train.iterations_per_epoch",
                 f"must be >= 1, got {t.iterations_per_epoch}")
    _require(t.batch_size >= 1, source, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _require(t.lr > 0, source, "train.lr", f"must be positive, got {t.lr}")
    _require(t.weight_decay >= 0, source, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    _require(t.warmup_epochs >= 0, source, "train.warmup_epochs", f"must be >= 0, got {t.warmup_epochs}")
    _one_of(t.loss, LOSSES, source, "train.loss")
    if t.class_weights is not None:
        _require(len(t.class_weights) == d.num_classes, source, "train.class_weights",
                 f"needs one weight per label ({d.num_classes}), got {t.class_weights}")
        _require(all(w >= 0 for w in t.class_weights), source, "train.class_weights",
                 f"must be >= 0, got {t.class_weights}")
    if t.max_norm is not None:
        _require(t.max_norm > 0, source, "train.max_norm", f"must be positive, got {t.max_norm}")
    _require(t.freeze_gates_epochs >= 0, source, "train.freeze_gates_epochs",
             f"must be >= 0, got {t.freeze_gates_epochs}")
    _require(t.val_interval >= 0, source, "train.val_interval", f"must be >= 0, got {t.val_interval}")
    if t.early_stopping_patience is not None:
        _require(t.early_stopping_patience >= 1, source, "train.early_stopping_patience",
                 f"must be >= 1, got {t.early_stopping_patience}")
        _require(t.val_interval > 0, source, "train.early_stopping_patience",
                 "needs validation during training, but train.val_interval is 0")
    for path, dev in (("train.device", t.device), ("infer.device", i.device)):
        _require(_valid_device(dev), source, path, f"= {dev!r} is not one of auto, cpu, cuda, cuda:N, mps")


def _validate_infer(i: InferConfig, source: str) -> None:
    """The ``infer`` section's checks (in the schema's order)."""
    if isinstance(i.roi_size, str):
        _require(i.roi_size == WHOLE_SCAN, source, "infer.roi_size",
                 f"must be three positive sizes, null or {WHOLE_SCAN!r}, got {i.roi_size!r}")
    elif i.roi_size is not None:
        _require(all(r >= 1 for r in i.roi_size), source, "infer.roi_size", f"must be positive, got {list(i.roi_size)}")
    _one_of(i.padding_mode, WINDOW_PADDING_MODES, source, "infer.padding_mode")
    _require(i.whole_max_gb > 0, source, "infer.whole_max_gb", f"must be > 0, got {i.whole_max_gb}")
    _require(i.sw_batch_size >= 1, source, "infer.sw_batch_size", f"must be >= 1, got {i.sw_batch_size}")
    _require(0.0 <= i.overlap < 1.0, source, "infer.overlap", f"must be in [0, 1), got {i.overlap}")
    _one_of(i.mode, BLEND_MODES, source, "infer.mode")
    _one_of(i.precision, PRECISIONS, source, "infer.precision")
    _one_of(i.engine, ENGINES, source, "infer.engine")
    if i.engine in ENGINE_PRECISIONS:
        _one_of(i.precision, ENGINE_PRECISIONS[i.engine], source, f"infer.precision (with infer.engine={i.engine})")
    _one_of(i.resample, RESAMPLE_MODES, source, "infer.resample")
    _require(i.max_voxels >= 8, source, "infer.max_voxels", f"must be >= 8 (a 2x2x2 volume), got {i.max_voxels}")


def _valid_device(dev: str) -> bool:
    if dev in ("auto", "cpu", "cuda", "mps"):
        return True
    return dev.startswith("cuda:") and dev[5:].isdigit()
