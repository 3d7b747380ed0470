"""A bundle's ``configs/metadata.json`` and generated ``docs/README.md``.

Both are made from the checkpoint's config (what the model takes and gives), the bundle source
(hand-written fields) and the run's evaluation ``summary.json`` (the metrics it reached).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

import medt3d
from medt3d.bundle.source import MEDT_REFERENCE, BundleSource
from medt3d.config import CT_WINDOWS, Config
from medt3d.errors import InputError
from medt3d.inference.inferer import inference_window
from medt3d.label_table import label_table
from medt3d.models.layout import RunLayout

__all__ = [
    "REQUIRED_PACKAGES",
    "SCHEMA_URL",
    "ModelFacts",
    "build_metadata",
    "build_readme",
    "find_summary",
    "input_value_range",
    "summary_from",
]

#: The MONAI bundle metadata schema the metadata follows (copy in ../shared/bundle/).
SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
              "meta_schema_20240725.json")
#: Distributions the bundle's configs need besides MONAI, PyTorch and NumPy (their installed versions are recorded).
REQUIRED_PACKAGES = ("medt3d", "pytorch-ignite", "nibabel", "pyyaml", "pydicom", "SimpleITK", "itk", "scipy")


class ModelFacts:
    """What export learned about the model: its config, checkpoint progress and evaluation.

    Attributes:
        cfg: the checkpoint's config.
        parameters: number of network parameters.
        epoch: epochs trained when the checkpoint was saved.
        best_epoch: epoch of the best validation metric (-1 if unknown).
        val_metrics: the checkpoint's validation metrics (``val_mean_dice``...).
        summary: the run's evaluation ``summary.json`` content, or ``None``.
        summary_path: where that summary was read.
        torchscript: how ``models/model.ts`` was made (``script`` or ``trace``).
        onnx: whether ``models/model.onnx`` was written.
        onnx_agreement: the fp16/int8 ONNX files written, and the share of voxels where their labels agree with
            the checkpoint's on the check windows.
        any_size: whether the exported models were checked on a size other than the ROI.
        recipe_differences: settings where the checkpoint differs from the source's recipe.
    """

    def __init__(self, cfg: Config, parameters: int, epoch: int = -1, best_epoch: int = -1,
                 val_metrics: dict[str, float] | None = None, summary: dict[str, Any] | None = None,
                 summary_path: Path | None = None, torchscript: str = "script", onnx: bool = False,
                 recipe_differences: list[str] | None = None, any_size: bool = False) -> None:
        self.cfg = cfg
        self.parameters = parameters
        self.epoch = epoch
        self.best_epoch = best_epoch
        self.val_metrics = dict(val_metrics or {})
        self.summary = summary
        self.summary_path = summary_path
        self.torchscript = torchscript
        self.onnx = onnx
        self.onnx_agreement: dict[str, float] = {}
        self.any_size = any_size
        self.recipe_differences = list(recipe_differences or [])


def find_summary(checkpoint: Path) -> Path | None:
    """The evaluation ``summary.json`` of a checkpoint's run, where ``medt3d evaluate``/``demo`` put it.

    Looks in the run folder (``<run>/summary.json``, ``<run>/evaluation/summary.json``) and beside it
    (``<run>/../evaluation/summary.json``, the demo's layout).
    """
    run_dir = RunLayout.of(checkpoint).root
    for candidate in (run_dir / "summary.json", run_dir / "evaluation" / "summary.json",
                      run_dir.parent / "evaluation" / "summary.json"):
        if candidate.is_file():
            return candidate
    return None


def input_value_range(cfg: Config) -> list[float]:
    """Value range of the network input after preprocessing; ``[]`` when unbounded (MR z-score).

    Read from the intensity transform medt3d builds, so it cannot disagree with it.
    """
    from medt3d.data.transforms import intensity_transform

    scaler = getattr(intensity_transform(cfg), "scaler", None)
    if scaler is None or not getattr(scaler, "clip", False) or scaler.b_min is None:
        return []
    return [float(scaler.b_min), float(scaler.b_max)]


def _versions() -> dict[str, str]:
    out = {}
    for name in REQUIRED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "medt3d":
                out[name] = medt3d.__version__
    return out


def _eval_metrics(facts: ModelFacts) -> dict[str, float]:
    metrics = {k: round(float(v), 4) for k, v in facts.val_metrics.items()}
    if facts.summary:
        fg = facts.summary.get("foreground_mean") or {}
        if "dice" in fg:
            metrics["mean_dice"] = round(float(fg["dice"]), 4)
        for name, values in (facts.summary.get("per_class") or {}).items():
            if values and "dice" in values:
                metrics[f"dice_{name}"] = round(float(values["dice"]["mean"]), 4)
    return metrics


def build_metadata(source: BundleSource, facts: ModelFacts) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json`` (MONAI schema 20240725)."""
    cfg = facts.cfg
    roi = [int(r) for r in cfg.patch.roi_size]
    table = label_table(cfg)
    labels = [entry["name"] for entry in table]
    ct = cfg.data.modality == "CT"
    if cfg.data.channels is not None:
        in_def = {str(i): name for i, name in enumerate(cfg.data.channels)}
    else:
        in_def = {"0": "CT"} if ct and cfg.data.in_channels == 1 else {
            str(i): f"{cfg.data.modality} channel {i}" for i in range(cfg.data.in_channels)}
    references = list(source.metadata.get("references") or [])
    if not any("Medical Transformer" in r for r in references):
        references.insert(0, MEDT_REFERENCE)
    hand = {k: v for k, v in source.metadata.items() if k != "references"}
    return {
        "schema": SCHEMA_URL,
        "version": source.version,
        "changelog": dict(source.changelog),
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": _versions(),
        "name": source.name,
        **hand,
        "references": references,
        "eval_metrics": _eval_metrics(facts),
        # names, RGB colours and SNOMED codes of the output classes (what medt3d's outputs carry)
        "label_table": table,
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if ct else "magnitude",
                    "modality": cfg.data.modality,
                    "num_channels": cfg.data.in_channels,
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": input_value_range(cfg),
                    "is_patch_data": True,
                    "channel_def": in_def,
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": cfg.data.num_classes,
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(entry["value"]): entry["name"] for entry in table},
                }
            },
            "post_processed_outputs": {
                "pred": {
                    "type": "image",
                    "format": "labels",
                    "num_channels": 1,
                    "spatial_shape": ["*", "*", "*"],
                    "dtype": "uint8",
                    "value_range": [0, cfg.data.num_classes - 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "label: " + ", ".join(f"{i} {n}" for i, n in enumerate(labels))},
                }
            },
        },
    }


# --------------------------------------------------------------------------------------------- README


def _intensity_text(cfg: Config) -> str:
    kinds = cfg.data.channel_kinds
    if len(set(kinds)) > 1 or kinds[0] == "PET":  # only with data.channels naming them
        from medt3d.data.transforms import window_bounds

        low, high = window_bounds(cfg)
        text = {"CT": f"clipped to {low:g}..{high:g} HU and scaled to 0..1",
                "PET": f"SUV clipped to 0..{cfg.preprocess.suv_max:g} and scaled to 0..1",
                "MR": "z-scored over nonzero voxels"}
        return "per channel: " + ", ".join(f"{n} {text[k]}" for n, k in zip(cfg.data.channels or kinds, kinds))
    if cfg.data.modality == "CT":
        from medt3d.data.transforms import window_bounds

        low, high = window_bounds(cfg)
        width, level = cfg.preprocess.window or CT_WINDOWS[cfg.preprocess.ct_window]
        name = "explicit window" if cfg.preprocess.window else f"`{cfg.preprocess.ct_window}` window"
        rng = input_value_range(cfg)
        return (f"CT in Hounsfield units, clipped to the {name} (width {width:g}, level {level:g} HU: "
                f"{low:g} to {high:g} HU) and scaled to {rng[0]:g}..{rng[1]:g}")
    return "MR, z-scored per channel over nonzero voxels (no fixed range)"


def _augment_text(cfg: Config) -> str:
    a = cfg.augment
    parts = [name for name, on in (("flips", a.flip), ("90-degree rotations", a.rotate90),
                                   (f"affine (+/-{a.rotate_deg:g} deg, +/-{a.scale:g} zoom)", a.affine),
                                   ("intensity shift", a.intensity_shift), ("intensity scaling", a.intensity_scale),
                                   ("Gaussian noise", a.noise)) if on]
    return ", ".join(parts) if parts else "none"


def _metrics_text(facts: ModelFacts) -> list[str]:
    lines: list[str] = []
    if facts.val_metrics:
        vm = ", ".join(f"`{k}` {v:.4f}" for k, v in facts.val_metrics.items())
        lines.append(f"Validation during training (sliding window on the resampled volumes): {vm}"
                     + (f" at epoch {facts.best_epoch}." if facts.best_epoch >= 0 else "."))
        lines.append("")
    s = facts.summary
    if not s:
        lines.append("No evaluation `summary.json` was found for this checkpoint: run `medt3d evaluate` on held-out "
                     "data and export again to report Dice, IoU and surface distances here.")
        return lines
    lines.append(f"`medt3d evaluate` on {s.get('n_cases', '?')} case(s) (split `{s.get('split', '?')}`), "
                 "in each scan's own geometry, from `" + str(facts.summary_path.name if facts.summary_path else "") + "`:")
    lines.append("")
    lines.append("| class | Dice | IoU | HD95 (mm) | ASD (mm) |")
    lines.append("|---|---|---|---|---|")
    for name, values in (s.get("per_class") or {}).items():
        if not values:
            lines.append(f"| {name} | - | - | - | - |")
            continue
        cells = [f"{values[m]['mean']:.3f} ± {values[m]['std']:.3f}" if m in values else "-"
                 for m in ("dice", "iou", "hd95_mm", "asd_mm")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    fg = s.get("foreground_mean") or {}
    if fg:
        lines.append("| **foreground mean** | " + " | ".join(
            f"{fg[m]:.3f}" if m in fg else "-" for m in ("dice", "iou", "hd95_mm", "asd_mm")) + " |")
    if s.get("empty_rule"):
        lines += ["", f"Empty structures: {s['empty_rule']}."]
    return lines


def build_readme(source: BundleSource, facts: ModelFacts, bundle_name: str) -> str:
    """The bundle's generated ``docs/README.md``."""
    cfg = facts.cfg
    t, p, i = cfg.train, cfg.patch, cfg.infer
    labels = ", ".join(f"{n} ({k})" for k, n in enumerate(cfg.data.labels) if k > 0)
    spacing = ("each scan's own spacing" if cfg.preprocess.spacing is None
               else " x ".join(f"{s:g}" for s in cfg.preprocess.spacing) + " mm")
    roi = " x ".join(str(r) for r in p.roi_size)
    configured = inference_window(cfg)
    window = configured if isinstance(configured, str) else " x ".join(str(r) for r in configured)
    readme = source.readme
    lines = [
        f"# {source.name}",
        "",
        f"MONAI bundle `{bundle_name}`, version {source.version}, exported by medt3d {medt3d.__version__}.",
        "",
        "## What it segments",
        "",
        readme.get("overview") or source.metadata.get("description", ""),
        "",
        f"Output labels: 0 background, {labels}.",
        "",
        "## Input",
        "",
        f"- Modality: {cfg.data.modality}, {cfg.data.in_channels} channel(s); NIfTI, NRRD or a DICOM series folder.",
        f"- Orientation: reoriented to {cfg.preprocess.orientation}; spacing: resampled to {spacing}.",
        f"- Intensity: {_intensity_text(cfg)}.",
        "- Body crop: " + ("cropped to the body's bounding box" if cfg.preprocess.crop_foreground else "none") + ".",
        f"- Network input: windows of {window} voxels, cut to the scan where larger than the training patch "
        f"(sliding window, overlap "
        f"{i.overlap:g}, {i.mode} blending, "
        f"{i.sw_batch_size} windows per batch" + (", flip test-time augmentation" if i.tta_flips else "") + ").",
        "- Output: a label map (uint8) on the scan's own grid, `<case>_seg.nii.gz`"
        + (", largest connected component per class" if i.largest_component else "") + ".",
        "",
        "## Training",
        "",
        f"- Network: MedT3D (`{cfg.network.name}`, preset `{cfg.network.preset}`"
        + (", LoGo local branch" if cfg.network.logo else "") + f"), {facts.parameters:,} parameters.",
        f"- Loss `{t.loss}`, AdamW (lr {t.lr:g}, weight decay {t.weight_decay:g}), {t.warmup_epochs} warm-up epoch(s) "
        f"then cosine decay; batch {t.batch_size} volume(s) x {p.num_samples} patch(es) of {roi} ({p.mode} sampling).",
        f"- Augmentation: {_augment_text(cfg)}.",
        f"- Epochs: {t.max_epochs} planned" + (f", checkpoint saved after epoch {facts.epoch}" if facts.epoch >= 0 else "")
        + (f", best validation at epoch {facts.best_epoch}" if facts.best_epoch >= 0 else "")
        + f"; validation every {t.val_interval} epoch(s); seed {t.seed}.",
    ]
    if readme.get("data"):
        lines.append(f"- Data: {readme['data']}")
    lines.append(f"- Data source: {source.metadata.get('data_source', 'not recorded')}")
    if facts.recipe_differences:
        lines.append(f"- Differs from the maintained recipe ({source.config_ref}): "
                     + "; ".join(facts.recipe_differences) + ".")
    lines.append("- The full resolved config is `configs/medt3d.yaml`.")
    lines += ["", "## Metrics", "", *_metrics_text(facts), ""]
    lines += [
        "## How to run it",
        "",
        "Requirements: the versions in `configs/metadata.json` (`pip install medt3d` brings the rest). From the "
        "bundle folder (or pass `--bundle_root PATH`):",
        "",
        "```bash",
        "# predict every scan under DATA into OUT (<case>_seg.nii.gz on each scan's own grid)",
        "python -m monai.bundle run --config_file configs/inference.json --dataset_dir DATA --output_dir OUT",
        "# the same in bfloat16 (CPU or GPU) or float16 (GPU)",
        "python -m monai.bundle run --config_file configs/inference.json --dataset_dir DATA --output_dir OUT "
        "--precision bf16",
        "# Dice against labels (any data layout medt3d reads)",
        "python -m monai.bundle run --config_file \"['configs/inference.json','configs/evaluate.json']\" "
        "--dataset_dir DATA --output_dir OUT",
        "# train again with medt3d's engine: OUT becomes a run folder (checkpoints/best.pt, last.pt,",
        "# history.json); --tracking mlflow logs to OUT/mlflow.db; --medt3d_overrides \"['train.lr=0.0005']\"",
        "# changes any other medt3d setting",
        "python -m monai.bundle run --config_file configs/train.json --dataset_dir DATA --output_dir OUT "
        "--train#trainer#max_epochs 50",
        "# continue an interrupted run from OUT/checkpoints/last.pt",
        "python -m monai.bundle run --config_file configs/train.json --dataset_dir DATA --output_dir OUT --resume true",
        "# export the trained run as a new bundle",
        "medt3d export --model OUT --output NEW_BUNDLE",
        "# several GPUs (or CPU processes with gloo)",
        "torchrun --standalone --nproc_per_node=2 -m monai.bundle run "
        "--config_file \"['configs/train.json','configs/multi_gpu_train.json']\" --dataset_dir DATA --output_dir OUT",
        "# or with medt3d itself",
        "medt3d infer DATA --model . --output OUT",
        "```",
        "",
        f"`models/model.ts` is TorchScript (made by `monai.bundle ckpt_export`, by {facts.torchscript}) with the "
        "metadata and `inference.json` embedded; it runs without medt3d's Python code on a preprocessed "
        f"(B, {cfg.data.in_channels}, X, Y, Z) float32 tensor and returns (B, {cfg.data.num_classes}, X, Y, Z) logits:",
        "",
        "```python",
        "import torch",
        "from monai.data import load_net_with_metadata",
        "net, meta, extra = load_net_with_metadata('models/model.ts', more_extra_files=['inference.json'])",
        "```",
        "",
    ]
    sizes = ("any spatial size (checked on the ROI and on another size)" if facts.any_size
             else f"patches of {roi} voxels (sliding windows)")
    which = "`models/model.ts` and `models/model.onnx` take" if facts.onnx else "`models/model.ts` takes"
    lines += [f"{which} {sizes}; the batch size may vary.", ""]
    if facts.onnx:
        lines += [
            "`models/model.onnx` (ONNX opset 17, input `image`, output `pred`) runs with onnxruntime and gives "
            "the same logits. `medt3d infer --engine onnxruntime` runs whole scans through it, as does "
            "`python -m monai.bundle run --config_file \"['configs/inference.json','configs/inference_onnx.json']\"`.",
            "",
        ]
        for precision, share in facts.onnx_agreement.items():
            lines += [f"`models/model_{precision}.onnx` (`--precision {precision}`) gives the checkpoint's labels on "
                      f"{100 * share:.2f}% of the voxels of the export's check windows.", ""]
    lines += [
        "Preprocessing is not inside the TorchScript/ONNX model: apply the steps under *Input* first "
        "(`medt3d.data.transforms.build_infer_transforms`).",
        "",
        "## Limits",
        "",
    ]
    if readme.get("limitations"):
        lines.append(readme["limitations"])
        lines.append("")
    lines += [
        f"- Trained for {cfg.data.modality} with {cfg.data.in_channels} input channel(s); other modalities or "
        "channel layouts are refused or meaningless.",
        f"- Intended use: {source.metadata.get('intended_use', 'research only')}",
        "- Not a medical device: review every segmentation before any use.",
        "",
        "## References",
        "",
        *[f"- {r}" for r in (source.metadata.get("references") or [MEDT_REFERENCE])],
        "",
        "## Licence",
        "",
        "See `LICENSE`.",
        "",
    ]
    return "\n".join(lines)


def summary_from(path: Path) -> dict[str, Any]:
    """Read an evaluation ``summary.json``, with a clear error when it is not one."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable summary.json ({' '.join(str(err).split())}); pass the "
                         "summary.json that medt3d evaluate wrote") from None
    if not isinstance(summary, dict) or "per_class" not in summary or "foreground_mean" not in summary:
        raise InputError(f"{path}: not a medt3d evaluation summary (needs 'per_class' and 'foreground_mean'); "
                         "pass the summary.json that medt3d evaluate wrote")
    return summary
