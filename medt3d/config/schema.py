"""The schema of the config: the value lists, :class:`ConfigError` and one dataclass per section.

The dataclass defaults are the single source of truth for every default; ``configs/default.yaml``
documents them (a test checks that it matches).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medt3d.errors import ConfigError

__all__ = [
    "CT_WINDOWS",
    "MODALITIES",
    "LOSSES",
    "CLOCKS",
    "CACHE_KINDS",
    "SAMPLING_MODES",
    "BLEND_MODES",
    "WHOLE_SCAN",
    "WINDOW_PADDING_MODES",
    "PRECISIONS",
    "ENGINES",
    "ENGINE_PRECISIONS",
    "RESAMPLE_MODES",
    "N_FOLDS",
    "OUTPUT_FORMATS",
    "RTSTRUCT_MATCH",
    "ConfigError",
    "CodeConfig",
    "LabelStyle",
    "DataConfig",
    "PreprocessConfig",
    "PatchConfig",
    "AugmentConfig",
    "NetworkConfig",
    "TrainConfig",
    "InferConfig",
    "TrackingConfig",
    "Config",
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
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: What runs the network on each window: torch (the checkpoint's module) or ONNX Runtime (a bundle's ONNX files).
ENGINES = ("torch", "onnxruntime")
#: The precisions each engine runs: torch autocasts to bf16/fp16; ONNX Runtime runs an fp16 or int8 ONNX file.
ENGINE_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnxruntime": ("fp32", "fp16", "int8")}
#: How a prediction goes back to the scan's grid: the label map (nearest), or the class
#: probabilities (linear, one class at a time) with the argmax taken on the scan's grid.
RESAMPLE_MODES = ("labels", "probabilities")
#: Folds of ``data.fold`` (as nnU-Net's 5-fold cross-validation).
N_FOLDS = 5
#: Label formats of ``medt3d infer --output-format``; the NIfTI label is always written (the sidecar,
#: ``--skip-existing`` and ``volumes.csv`` rest on it).
OUTPUT_FORMATS = ("nifti", "seg-nrrd", "dicom-seg", "rtstruct")
#: ``data.rtstruct_match``: an RTSTRUCT label must reference the series it is read onto, or only share its frame
RTSTRUCT_MATCH = ("series", "frame_of_reference")
#: Label file names of ``medt3d infer --output-naming``: medt3d's ``CASE_seg.nii.gz`` or nnU-Net's
#: ``CASE.nii.gz`` (``inference.outputs.LABEL_NAMES`` has their suffixes; a test checks they agree).
OUTPUT_NAMINGS = ("medt3d", "nnunet")


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
        roi_names: for RTSTRUCT labels, ROI name -> class name of ``labels`` (``{GTV_Mass_CT: tumour}``);
            ``background`` leaves an ROI out; an ROI named as a class (any case) needs no entry.
        rtstruct_match: ``series``: an RTSTRUCT label must reference the series it is read onto;
            ``frame_of_reference``: any series of its frame of reference (a crop or copy that kept the
            original references).
        in_channels: image channels fed to the network.
        channels: name of each input channel (e.g. ``[CT, PET]`` or ``[T1, T2, FLAIR]``), as nnU-Net's
            ``channel_names``: a channel named ``CT`` gets the CT window, one named ``PET`` its SUV
            clipped to ``preprocess.suv_max`` and scaled to 0..1, any other a z-score over its nonzero
            voxels; ``null``: every channel is ``modality``.
        reference_channel: the channel (0-based) whose grid a case takes when its channel files lie on
            different grids of one frame of reference (PET/CT): the others are resampled onto it
            linearly, a label on another channel's grid by nearest neighbour.
        val_fraction: share of cases held out for validation when the data have no validation split.
        split_seed: seed of that split (the folds follow nnU-Net's rule and seed, see :mod:`medt3d.data.folds`).
        fold: with data that have no validation split, validate on this fold of nnU-Net's 5-fold split
            (the dataset's ``splits_final.json``, ``splits_file``, else nnU-Net's rule) instead of
            ``val_fraction``; ``null``: off.
        splits_file: an nnU-Net ``splits_final.json`` to take the folds from (``--splits``); ``null``: the
            dataset's own ``splits_final.json``, else nnU-Net's rule.
        cache: ``none``, ``memory`` (CacheDataset) or ``disk`` (PersistentDataset in ``cache_dir``).
        cache_dir: folder for the disk cache; defaults to ``<output>/cache``.
        num_workers: DataLoader worker processes.
    """

    modality: str = "CT"
    labels: list[str] = field(default_factory=lambda: ["background", "foreground"])
    label_table: dict[str, LabelStyle] = field(default_factory=dict)
    roi_names: dict[str, str] = field(default_factory=dict)
    rtstruct_match: str = "series"
    in_channels: int = 1
    channels: list[str] | None = None
    reference_channel: int = 0
    val_fraction: float = 0.2
    split_seed: int = 0
    fold: int | None = None
    splits_file: str | None = None
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
        return [kind == "CT" for kind in self.channel_kinds]

    @property
    def channel_kinds(self) -> list[str]:
        """How each input channel is normalised: ``CT`` (window), ``PET`` (SUV range) or ``MR`` (z-score),
        by ``channels`` names, else by ``modality`` for every channel."""
        names = self.channels if self.channels is not None else [self.modality] * self.in_channels
        return [name.upper() if name.upper() in ("CT", "PET") else "MR" for name in names]


@dataclass
class PreprocessConfig:
    """Deterministic preprocessing shared by training, validation and inference.

    Attributes:
        orientation: axis codes every volume is reoriented to.
        spacing: target voxel spacing in mm (x, y, z); ``null`` keeps each scan's own spacing.
        ct_window: CT window preset name (see ``CT_WINDOWS``); ignored for MR.
        suv_max: a channel named ``PET`` (``data.channels``) is clipped to 0..``suv_max`` (SUV, g/ml)
            and scaled to 0..1, so that an SUV means the same in every scan (a z-score would not).
        window: explicit CT window (width, level) in HU; overrides ``ct_window`` when set.
        crop_foreground: crop each volume to its nonzero/body bounding box before patching.
    """

    orientation: str = "RAS"
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 2.0)
    ct_window: str = "abdomen"
    suv_max: float = 10.0
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
        field_of_view: for MedT3D, a random field of view: with probability ``field_of_view_prob`` the
            patch's mask of scan voxels is cut to a random box whose sides are ``field_of_view_min`` to 1
            of the patch's (:class:`~medt3d.data.field_of_view.RandFieldOfViewd`); the network sees only the
            box, so its labels depend less on the inference window. Networks that take no mask (the MONAI
            baselines) skip it: they would see the whole patch and only lose the gradient outside the box.
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
    field_of_view: bool = False
    field_of_view_prob: float = 0.5
    field_of_view_min: float = 0.5


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
        norm: the normalisation of MedT3D's convolutions: ``instance`` (statistics over the window's scan
            voxels) or ``batch`` (over the training batch's scan voxels; at inference, training's running
            statistics, so the norms do not depend on the window, though the attention does; it
            transferred 0.1 Dice worse across patients: docs/benchmarks.md, "Borders").
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
    norm: str = "instance"


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
            scan in one forward pass (see ``whole_max_gb``). Along an axis where the scan is longer the window
            slides; elsewhere it is the scan, raised to ``patch.roi_size`` where the scan is thinner (padded
            by ``padding_mode``) and, for the baselines, rounded up to their size multiple; so the labels do
            not depend on the window (``medt3d.inference.inferer.fitted_window``).
        padding_mode: how a scan thinner than the training patch is padded up to it: ``replicate`` (the
            edge slices repeated; measured best on CT slabs for MedT3D and UNet), ``reflect`` or ``constant``
            (zeros). MedT3D's own padding up to its size multiple is masked instead.
        whole_max_gb: memory budget of ``roi_size: whole``; a scan whose estimated forward pass needs more
            runs with sliding windows of ``patch.roi_size`` instead (with a log line).
        sw_batch_size: windows evaluated together.
        overlap: overlap between neighbouring windows (0 to <1).
        mode: blending of overlapping windows: ``gaussian`` or ``constant``.
        tta_flips: test-time augmentation by flips along every axis.
        largest_component: keep only the largest connected component per class.
        save_probabilities: also write per-class probability maps.
        precision: ``fp32``, ``bf16`` or ``fp16`` (torch autocast where supported); with ``engine:
            onnxruntime``, ``fp32``, ``fp16`` or ``int8``: which of the bundle's ONNX files runs.
        engine: ``torch`` (the network itself) or ``onnxruntime`` (the bundle's ``models/model*.onnx``, from
            ``medt3d export --onnx``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        resample: back to the scan's grid: ``labels`` (the argmax, nearest neighbour) or
            ``probabilities`` (each class's probability, linearly, then the argmax there: smoother
            boundaries on scans finer than the model's spacing).
        max_voxels: the most voxels (all channels) one scan's header may claim; a larger claim is refused
            before any voxel is read (10^9 voxels are 4 GB as float32).
    """

    roi_size: tuple[int, int, int] | str | None = None
    padding_mode: str = "replicate"
    whole_max_gb: float = 8.0
    sw_batch_size: int = 2
    overlap: float = 0.25
    mode: str = "gaussian"
    tta_flips: bool = False
    largest_component: bool = False
    save_probabilities: bool = False
    precision: str = "fp32"
    engine: str = "torch"
    device: str = "auto"
    resample: str = "labels"
    max_voxels: int = 1_000_000_000


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
