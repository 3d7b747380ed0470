"""Typed configuration: YAML files are loaded into dataclasses and validated.

The dataclass defaults below are the single source of truth for every default.
``configs/default.yaml`` documents them (a test checks that it matches) and the
other YAML files override only what they change.

Example:
    >>> cfg = load_config("demo", overrides=["train.max_epochs=3"])
    >>> cfg.train.max_epochs
    3
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from medt3d.networks.registry import NETWORKS, PRESETS

__all__ = [
    "AugmentConfig",
    "CodeConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "InferConfig",
    "LabelStyle",
    "NetworkConfig",
    "PatchConfig",
    "PreprocessConfig",
    "TrackingConfig",
    "TrainConfig",
    "config_to_dict",
    "config_from_dict",
    "apply_overrides",
    "load_config",
    "parse_override",
    "CT_WINDOWS",
]

#: CT window presets as (window width, window level) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 50.0),
    "soft_tissue": (350.0, 40.0),
    "liver": (150.0, 30.0),
    "mediastinum": (350.0, 50.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}

MODALITIES = ("CT", "MR")
LOSSES = ("dice_ce", "dice", "weighted_dice", "focal")
CLOCKS = ("wall", "cpu")
CACHE_KINDS = ("none", "memory", "disk")
SAMPLING_MODES = ("pos_neg", "class_ratio")
BLEND_MODES = ("gaussian", "constant")
#: ``infer.roi_size`` value that runs the whole resampled scan in one forward pass.
WHOLE_SCAN = "whole"
#: How a sliding window that overhangs the scan is padded, for networks that take no validity mask (MONAI's modes).
WINDOW_PADDING_MODES = ("constant", "replicate", "reflect")
PRECISIONS = ("fp32", "bf16", "fp16")
#: How a prediction goes back to the scan's grid: the label map (nearest), or the class
#: probabilities (linear, one class at a time) with the argmax taken on the scan's grid.
RESAMPLE_MODES = ("labels", "probabilities")
#: Folds of ``data.fold`` (as nnU-Net's 5-fold cross-validation).
N_FOLDS = 5
#: Label formats of ``medt3d infer --output-format``; the NIfTI label is always written (the sidecar,
#: ``--skip-existing`` and ``volumes.csv`` rest on it).
OUTPUT_FORMATS = ("nifti", "seg-nrrd", "dicom-seg")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or impossible."""


@dataclass
class CodeConfig:
    """A coded concept for DICOM and 3D Slicer (SNOMED CT by default).

    Attributes:
        code: the code value, e.g. ``"78961009"``.
        meaning: its meaning, e.g. ``Spleen``.
        scheme: the coding scheme designator.
    """

    code: str = ""
    meaning: str = ""
    scheme: str = "SCT"


@dataclass
class LabelStyle:
    """How one class is shown and coded; what is ``null`` is derived (see :mod:`medt3d.label_table`).

    Attributes:
        color: RGB, 0-255.
        category: segmented property category (e.g. SCT 123037004 Anatomical Structure).
        type: segmented property type (e.g. SCT 78961009 Spleen); given together with ``category``.
    """

    color: list[int] | None = None
    category: CodeConfig | None = None
    type: CodeConfig | None = None


@dataclass
class DataConfig:
    """What the data are.

    Attributes:
        modality: ``CT`` (intensity windowing in HU) or ``MR`` (z-score over nonzero voxels).
        labels: class names, background first; the number of output classes is ``len(labels)``.
        label_table: colour and SNOMED codes of classes, by name (any subset of ``labels``); the
            rest get a ``tab10`` colour and the codes pydicom's dictionary has for their name.
        in_channels: image channels fed to the network.
        channels: name of each input channel (e.g. ``[CT, PET]`` or ``[T1, T2, FLAIR]``), as nnU-Net's
            ``channel_names``: a channel named ``CT`` gets the CT window, any other a z-score over
            its nonzero voxels; ``null``: every channel is ``modality``.
        val_fraction: share of cases held out for validation when the data have no validation split.
        split_seed: seed of that split (and of the folds).
        fold: with data that have no validation split, validate on fold 0-4 of a seeded 5-fold split
            of the training cases (as nnU-Net's folds) instead of ``val_fraction``; ``null``: off.
        cache: ``none``, ``memory`` (CacheDataset) or ``disk`` (PersistentDataset in ``cache_dir``).
        cache_dir: folder for the disk cache; defaults to ``<output>/cache``.
        num_workers: DataLoader worker processes.
    """

    modality: str = "CT"
    labels: list[str] = field(default_factory=lambda: ["background", "foreground"])
    label_table: dict[str, LabelStyle] = field(default_factory=dict)
    in_channels: int = 1
    channels: list[str] | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    fold: int | None = None
    cache: str = "none"
    cache_dir: str | None = None
    num_workers: int = 0

    @property
    def num_classes(self) -> int:
        """Number of output classes, background included."""
        return len(self.labels)

    @property
    def ct_channels(self) -> list[bool]:
        """Whether each input channel is CT (CT window) rather than MR-like (z-score): by ``channels``
        names (``CT``), else by ``modality`` for every channel."""
        if self.channels is not None:
            return [name.upper() == "CT" for name in self.channels]
        return [self.modality == "CT"] * self.in_channels


@dataclass
class PreprocessConfig:
    """Deterministic preprocessing shared by training, validation and inference.

    Attributes:
        orientation: axis codes every volume is reoriented to.
        spacing: target voxel spacing in mm (x, y, z); ``null`` keeps each scan's own spacing.
        ct_window: CT window preset name (see ``CT_WINDOWS``); ignored for MR.
        window: explicit CT window (width, level) in HU; overrides ``ct_window`` when set.
        crop_foreground: crop each volume to its nonzero/body bounding box before patching.
    """

    orientation: str = "RAS"
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 2.0)
    ct_window: str = "abdomen"
    window: tuple[float, float] | None = None
    crop_foreground: bool = False


@dataclass
class PatchConfig:
    """Training patches and the sliding-window ROI.

    Attributes:
        roi_size: patch size (voxels) for training, and the inference sliding window unless
            ``infer.roi_size`` sets another.
        num_samples: patches drawn per volume per iteration.
        mode: ``pos_neg`` (foreground/background ratio) or ``class_ratio`` (per class).
        pos: weight of patches centred on foreground (``pos_neg``).
        neg: weight of patches centred on background (``pos_neg``).
        class_ratios: per-class weights, one per label (``class_ratio``); ``null`` means equal.
    """

    roi_size: tuple[int, int, int] = (96, 96, 96)
    num_samples: int = 2
    mode: str = "pos_neg"
    pos: float = 1.0
    neg: float = 1.0
    class_ratios: list[float] | None = None


@dataclass
class AugmentConfig:
    """Random augmentations for training; each one can be switched off.

    Attributes:
        flip: random flips along each axis, with probability ``flip_prob``.
        rotate90: random 90-degree rotations in the axial plane.
        affine: random rotation/zoom, with ``rotate_deg`` and ``scale`` ranges.
        intensity_shift: random intensity offset up to ``shift``.
        intensity_scale: random intensity scaling up to ``scale_intensity``.
        noise: additive Gaussian noise with std ``noise_std``.
        gamma: random gamma (contrast) curve with exponent in ``gamma_range``, probability ``gamma_prob``.
        low_res: simulated low resolution (downsample by a zoom in ``low_res_zoom``, upsample back),
            probability ``low_res_prob``, as nnU-Net augments.
    """

    flip: bool = True
    flip_prob: float = 0.5
    rotate90: bool = True
    rotate90_prob: float = 0.3
    affine: bool = True
    affine_prob: float = 0.2
    rotate_deg: float = 15.0
    scale: float = 0.1
    intensity_shift: bool = True
    shift: float = 0.1
    intensity_scale: bool = True
    scale_intensity: float = 0.1
    intensity_prob: float = 0.5
    noise: bool = True
    noise_std: float = 0.01
    noise_prob: float = 0.2
    gamma: bool = False
    gamma_range: tuple[float, float] = (0.7, 1.5)
    gamma_prob: float = 0.3
    low_res: bool = False
    low_res_zoom: tuple[float, float] = (0.5, 1.0)
    low_res_prob: float = 0.25


@dataclass
class NetworkConfig:
    """Network choice and size.

    Attributes:
        name: ``medt3d``, or a MONAI baseline for comparison: ``unet``, ``unetr``, ``swinunetr``.
        preset: MedT3D size preset: ``tiny`` (tests), ``small`` or ``base``.
        channels: per-stage widths; ``null`` keeps the preset's.
        blocks: gated axial blocks per encoder stage; ``null`` keeps the preset's.
        heads: attention heads; ``null`` keeps the preset's.
        span: clip of relative distances (positions attended with their own embedding); ``null`` keeps the preset's.
        stem_stride: downsampling of the convolutional stem before attention; ``null`` keeps the preset's.
        logo: add the local (LoGo) branch on non-overlapping sub-volumes.
        local_patch: size of the local branch's sub-volumes at the attention resolution; ``null`` keeps the preset's.
        dropout: dropout rate inside attention blocks.
        full_res_channels: width of MedT3D's optional full-resolution path (sharper boundaries, more
            memory); 0 turns it off; ``null`` keeps the preset's.
        stem_channels: widths of MedT3D's convolutional stem levels below the attention (one per
            level, strides 2 .. stem_stride/2); ``null`` keeps the preset's.
        input_head: add a pointwise term of the input intensities to MedT3D's logits (a direct
            intensity-to-class path); false leaves every logit to the encoder-decoder.
        deep_supervision: auxiliary logits heads on this many coarser decoder levels of MedT3D,
            trained with MONAI's ``DeepSupervisionLoss`` (0: off).
    """

    name: str = "medt3d"
    preset: str = "small"
    channels: list[int] | None = None
    blocks: list[int] | None = None
    heads: int | None = None
    span: int | None = None
    stem_stride: int | None = None
    logo: bool = True
    local_patch: int | None = None
    dropout: float = 0.0
    full_res_channels: int | None = None
    stem_channels: list[int] | None = None
    input_head: bool = True
    deep_supervision: int = 0


@dataclass
class TrainConfig:
    """Optimisation, validation and checkpointing.

    Attributes:
        max_epochs: training epochs.
        max_seconds: time budget in seconds, counted by ``clock``; training stops after the epoch that would
            overrun it. ``null``: no limit.
        clock: what ``max_seconds`` counts: ``wall`` (elapsed time) or ``cpu`` (the process's CPU time
            divided by torch's thread count: the same as ``wall`` on an idle machine whose threads are all
            busy, but not advanced by other processes or by time a virtual machine's host steals).
        iterations_per_epoch: batches per epoch; ``null`` means one pass over the training cases.
        batch_size: volumes per batch (each gives ``patch.num_samples`` patches).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length before cosine annealing.
        loss: ``dice_ce``, ``dice``, ``weighted_dice`` or ``focal``.
        class_weights: per-class weights for ``weighted_dice`` and ``focal``; one per label.
        max_norm: gradient clipping norm; ``null`` disables clipping.
        amp: mixed precision where the device supports it.
        freeze_gates_epochs: keep the attention gates frozen for this many epochs.
        val_interval: validate every this many epochs; 0 never validates during training (no ``best.pt``:
            ``last.pt`` is the model).
        early_stopping_patience: stop after this many validations without improvement; ``null`` disables.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        seed: global random seed.
    """

    max_epochs: int = 300
    max_seconds: float | None = None
    clock: str = "wall"
    iterations_per_epoch: int | None = None
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_epochs: int = 5
    loss: str = "dice_ce"
    class_weights: list[float] | None = None
    max_norm: float | None = 1.0
    amp: bool = True
    freeze_gates_epochs: int = 0
    val_interval: int = 1
    early_stopping_patience: int | None = None
    device: str = "auto"
    seed: int = 0


@dataclass
class InferConfig:
    """Sliding-window inference.

    Attributes:
        roi_size: sliding-window size (voxels); ``None`` = ``patch.roi_size``; ``whole`` = the whole resampled
            scan in one forward pass (see ``whole_max_gb``). Each edge larger than the scan is cut to the
            scan (MedT3D, which masks its own padding) or to the scan rounded up to the network's size
            multiple (the convolutional baselines), so a window never overhangs a scan by more than the
            network needs, whatever the training patch.
        padding_mode: how the baselines' windows are padded up to their multiple where the scan ends:
            ``constant`` (zeros), ``replicate`` or ``reflect``. MedT3D masks its padding instead.
        whole_max_gb: memory budget of ``roi_size: whole``; a scan whose estimated forward pass needs more
            runs with sliding windows of ``patch.roi_size`` instead (with a log line).
        sw_batch_size: windows evaluated together.
        overlap: overlap between neighbouring windows (0 to <1).
        mode: blending of overlapping windows: ``gaussian`` or ``constant``.
        tta_flips: test-time augmentation by flips along every axis.
        largest_component: keep only the largest connected component per class.
        save_probabilities: also write per-class probability maps.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast where supported).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        resample: back to the scan's grid: ``labels`` (the argmax, nearest neighbour) or
            ``probabilities`` (each class's probability, linearly, then the argmax there: smoother
            boundaries on scans finer than the model's spacing).
    """

    roi_size: tuple[int, int, int] | str | None = None
    padding_mode: str = "constant"
    whole_max_gb: float = 8.0
    sw_batch_size: int = 2
    overlap: float = 0.25
    mode: str = "gaussian"
    tta_flips: bool = False
    largest_component: bool = False
    save_probabilities: bool = False
    precision: str = "fp32"
    device: str = "auto"
    resample: str = "labels"


@dataclass
class TrackingConfig:
    """Experiment tracking.

    Attributes:
        tensorboard: write TensorBoard event files to ``<run>/tensorboard``.
        mlflow: log to MLflow.
        mlflow_uri: tracking URI; ``null`` means a SQLite store ``<run>/mlflow.db``.
        experiment: MLflow experiment name.
    """

    tensorboard: bool = True
    mlflow: bool = True
    mlflow_uri: str | None = None
    experiment: str = "medt3d"


@dataclass
class Config:
    """The whole configuration: one section per pipeline step."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# --------------------------------------------------------------------------- conversion


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
            raise ConfigError(f"{source}: '{path}' must not be null")
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
            f"{source}: '{path}' = {value!r} does not match {_type_name(tp)}"
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{path}' must be a mapping of keys, got {value!r}")
        return _build_dataclass(tp, value, path, source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(
                f"{source}: '{path}' must be a list of {len(args)} numbers, got {value!r}"
            )
        return tuple(_coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{source}: '{path}' must be a mapping of names, got {value!r}")
        return {k: _coerce(v, args[1], f"{path}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{path}' must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{path}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{path}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{path}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{path}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # programming error


def _build_dataclass(cls: type, values: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = ", ".join(f"'{prefix + '.' if prefix else ''}{k}'" for k in unknown)
        raise ConfigError(f"{source}: unknown config key {where}; known keys here: {sorted(names)}")
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
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(values).__name__}")
    merged = _merge(config_to_dict(Config()), values)
    cfg = _build_dataclass(Config, merged, "", source)
    validate(cfg, source)
    return cfg


# --------------------------------------------------------------------------- validation


def _require(cond: bool, source: str, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{source}: '{path}' {message}")


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
    d, p, pt, a, n, t, i = cfg.data, cfg.preprocess, cfg.patch, cfg.augment, cfg.network, cfg.train, cfg.infer
    _one_of(d.modality, MODALITIES, source, "data.modality")
    _require(len(d.labels) >= 2, source, "data.labels", f"needs background and at least one class, got {d.labels}")
    _require(len(set(d.labels)) == len(d.labels), source, "data.labels", f"has duplicate names: {d.labels}")
    _validate_label_table(d, source)
    _require(d.in_channels >= 1, source, "data.in_channels", f"must be >= 1, got {d.in_channels}")
    if d.channels is not None:
        _require(len(d.channels) == d.in_channels, source, "data.channels",
                 f"needs one name per input channel (data.in_channels={d.in_channels}), got {d.channels}")
    _require(0.0 <= d.val_fraction < 1.0, source, "data.val_fraction", f"must be in [0, 1), got {d.val_fraction}")
    if d.fold is not None:
        _require(0 <= d.fold < N_FOLDS, source, "data.fold", f"must be 0..{N_FOLDS - 1} or null, got {d.fold}")
    _one_of(d.cache, CACHE_KINDS, source, "data.cache")
    _require(d.num_workers >= 0, source, "data.num_workers", f"must be >= 0, got {d.num_workers}")

    if p.spacing is not None:
        _require(all(s > 0 for s in p.spacing), source, "preprocess.spacing", f"must be positive, got {list(p.spacing)}")
    _require(len(p.orientation) == 3 and set(p.orientation.upper()) <= set("RLAPSI"), source,
             "preprocess.orientation", f"= {p.orientation!r} is not a 3-letter axis code like 'RAS'")
    _one_of(p.ct_window, tuple(CT_WINDOWS), source, "preprocess.ct_window")
    if p.window is not None:
        _require(p.window[0] > 0, source, "preprocess.window", f"width must be positive, got {list(p.window)}")

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

    for name in ("flip_prob", "rotate90_prob", "affine_prob", "intensity_prob", "noise_prob", "gamma_prob",
                 "low_res_prob"):
        value = getattr(a, name)
        _require(0.0 <= value <= 1.0, source, f"augment.{name}", f"must be a probability in [0, 1], got {value}")
    for name in ("rotate_deg", "scale", "shift", "scale_intensity", "noise_std"):
        value = getattr(a, name)
        _require(value >= 0, source, f"augment.{name}", f"must be >= 0, got {value}")
    _require(0 < a.gamma_range[0] <= a.gamma_range[1], source, "augment.gamma_range",
             f"must be (low, high) with 0 < low <= high, got {list(a.gamma_range)}")
    _require(0 < a.low_res_zoom[0] <= a.low_res_zoom[1] <= 1, source, "augment.low_res_zoom",
             f"must be (low, high) with 0 < low <= high <= 1, got {list(a.low_res_zoom)}")

    _one_of(n.name, NETWORKS, source, "network.name")
    _one_of(n.preset, PRESETS, source, "network.preset")
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
    _one_of(i.resample, RESAMPLE_MODES, source, "infer.resample")


def _valid_device(dev: str) -> bool:
    if dev in ("auto", "cpu", "cuda", "mps"):
        return True
    return dev.startswith("cuda:") and dev[5:].isdigit()


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into a key path and a YAML-parsed value.

    Raises:
        ConfigError: when the text has no ``=`` or no key.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.max_epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from None
    return key.split("."), value


def builtin_config_dir() -> Path:
    """Folder of the YAML presets shipped with medt3d (``configs/`` in the repository)."""
    return Path(str(resources.files("medt3d.configs")))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Map a preset name (``demo``, ``ct_abdomen``...) or a path to an existing YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    candidate = builtin_config_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in builtin_config_dir().glob("*.yaml"))
    raise FileNotFoundError(f"config {str(name_or_path)!r} is neither a YAML file nor a preset {known}")


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """A copy of the nested config dict ``values`` with ``section.key=value`` overrides set.

    Raises:
        ConfigError: an override without ``=`` or one that descends into a value that is not a section.
    """
    values = copy.deepcopy(values)
    for text in overrides:
        keys, value = parse_override(text)
        node = values
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return values


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
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
    if overrides:
        values = apply_overrides(values, overrides)
        source = f"{source} (with --set overrides)"
    return config_from_dict(values, source)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from medt3d.io_utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
