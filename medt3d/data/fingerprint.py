"""Dataset fingerprint (geometry, intensities, classes) and the plan it suggests.

The plan follows the reasoning nnU-Net made popular, in our own simple form: resample to the median
spacing (the coarse axis of strongly anisotropic data to a finer percentile), take a patch as large
as the median resampled volume allows, then shrink it until training fits a memory budget; for CT,
window the foreground's intensity range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medt3d.config import CT_WINDOWS, Config
from medt3d.errors import InputError

__all__ = [
    "ANISOTROPY_RATIO",
    "DEFAULT_MEMORY_GB",
    "PATCH_MULTIPLE",
    "PERCENTILES",
    "TRAIN_BYTES_PER_VOXEL",
    "estimate_training_memory_gb",
    "fingerprint_case",
    "fingerprint_dataset",
    "suggest_plan",
]

#: Intensity percentiles reported per case and for the dataset's foreground.
PERCENTILES: tuple[float, ...] = (0.5, 50.0, 99.5)
#: Memory budget (GB) for a training step when none is given.
DEFAULT_MEMORY_GB = 8.0
#: Training memory per patch voxel: about 2 KiB was measured for one sample's forward + backward
#: pass of the ``small`` MedT3D and of MONAI's UNet (fp32, CPU peak RSS at 32^3 and 48^3), plus
#: 50 % headroom for the optimiser, data and allocator slack. A rough figure, not a guarantee.
TRAIN_BYTES_PER_VOXEL = 3 * 1024
#: Patch sizes are multiples of this (four 2x downsamplings in the U-shaped networks).
PATCH_MULTIPLE = 16
#: Spacing is anisotropic when the coarsest axis is this many times the finest.
ANISOTROPY_RATIO = 3.0
#: On anisotropic data the coarse axis is resampled to this percentile of its spacings (finer than the median).
ANISOTROPIC_PERCENTILE = 10.0
#: Foreground voxels sampled per case for the dataset's foreground intensity percentiles.
FOREGROUND_SAMPLES = 10_000
#: A volume whose lowest value is below this (HU) looks like CT (air is about -1000 HU).
CT_MIN_HU = -500.0


def _ras_geometry(shape: Sequence[int], affine: np.ndarray) -> dict[str, list]:
    """Shape and spacing in RAS axis order (x, y, z), as the pipelines see them after ``Orientationd``."""
    import nibabel as nib

    from medt3d.data.geometry import voxel_spacing

    ornt = nib.io_orientation(affine)
    spacing = voxel_spacing(affine)
    ras_shape, ras_spacing = [0, 0, 0], [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        ras_shape[int(target)] = int(shape[axis])
        ras_spacing[int(target)] = spacing[axis]
    return {"ras_shape": ras_shape, "ras_spacing": ras_spacing}


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {f"p{p:g}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def _read_case(case: Mapping[str, Any], samples: int, seed: int, rois: Any = None) -> tuple[dict, np.ndarray]:
    """Fingerprint of one case and a random sample of its foreground intensities."""
    import nibabel as nib

    from medt3d.data.geometry import voxel_spacing
    from medt3d.data.readers import align_to, load_image, load_volume

    image_path = case["image"]
    uid = case.get("image_series_uid", case.get("series_uid"))
    image = load_image(image_path, uid, channels=None)  # a multi-channel case is described by its first channel
    affine = np.asarray(image.affine, dtype=np.float64)
    array = image[0].numpy()
    finite = array[np.isfinite(array)]
    out: dict[str, Any] = {
        "name": str(case.get("name", image_path)),
        "image": str(image_path) if isinstance(image_path, (str, Path)) else [str(p) for p in image_path],
        **({"series_uid": uid} if uid else {}),
        "shape": [int(s) for s in array.shape],
        "spacing": voxel_spacing(affine),
        "orientation": "".join(nib.aff2axcodes(affine)),
        **_ras_geometry(array.shape, affine),
        "intensity": {
            "min": float(finite.min()) if finite.size else math.nan,
            "max": float(finite.max()) if finite.size else math.nan,
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            **_percentiles(finite),
        },
        "nonfinite_voxels": int(array.size - finite.size),
    }
    sample = np.empty(0, dtype=np.float32)
    label_path = case.get("label")
    if label_path is None:
        return out, sample
    # a label in another axis order or direction over the same voxels is moved onto the image's grid
    label = align_to(load_volume(label_path, rois=rois), affine, array.shape,
                     what=f"label {label_path} (image {image_path})")
    lab = np.asarray(label[0])
    values, counts = np.unique(lab, return_counts=True)
    bad = [float(v) for v in values if not (np.isfinite(v) and v == round(v) and v >= 0)]
    if bad:
        listed = ", ".join(f"{v:g}" for v in bad[:10])
        raise InputError(f"label {label_path}: values {listed} are not class numbers (integers >= 0); "
                         "fix the label (whole numbers from 0)")
    out["label"] = str(label_path)
    out["classes"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
    foreground = array[(lab > 0) & np.isfinite(array)]
    if foreground.size:
        rng = np.random.default_rng(seed)
        take = min(samples, foreground.size)
        sample = rng.choice(foreground, size=take, replace=False).astype(np.float32)
        out["foreground_intensity"] = _percentiles(foreground)
    return out, sample


def fingerprint_case(case: Mapping[str, Any]) -> dict:
    """Geometry, intensities and classes of one case.

    Args:
        case: a dict with ``image`` (and optionally ``label``) paths and an optional ``name``.

    Returns:
        ``name``, ``image``, ``shape`` (voxels), ``spacing`` (mm), ``orientation`` (axis codes) of the
        stored grid, ``ras_shape`` and ``ras_spacing`` (the same in RAS axis order),
        ``intensity`` (min, max, mean, std and ``PERCENTILES``), ``nonfinite_voxels``; with a label
        also ``label``, ``classes`` (class value as a string -> voxel count) and
        ``foreground_intensity`` (percentiles inside the label).

    Raises:
        FileNotFoundError / ValueError: unreadable files, a label on another grid, or label values
            that are not class numbers; the message names the file.
    """
    return _read_case(case, FOREGROUND_SAMPLES, 0)[0]


def _cases_of(source: Any) -> tuple[list[dict], dict]:
    """Cases and dataset facts from a Datalist (``.train`` + ``.val``) or a list of case dicts."""
    if hasattr(source, "train"):
        cases = [*source.train, *getattr(source, "val", [])]
        facts = {k: getattr(source, k, None) for k in ("layout", "modality", "labels", "root")}
        facts["root"] = str(facts["root"]) if facts["root"] is not None else None
        return [dict(c) for c in cases], facts
    return [dict(c) for c in source], {}


def _guess_modality(cases: Sequence[dict]) -> str:
    lows = [c["intensity"]["min"] for c in cases if not math.isnan(c["intensity"]["min"])]
    return "CT" if lows and float(np.median(lows)) < CT_MIN_HU else "MR"


def fingerprint_dataset(
    source: Any,
    modality: str | None = None,
    labels: Sequence[str] | None = None,
    progress: bool = True,
    foreground_samples: int = FOREGROUND_SAMPLES,
    seed: int = 0,
    rois: Any = None,
) -> dict:
    """Fingerprint every case and summarise the dataset.

    Args:
        source: a ``Datalist`` (from :func:`medt3d.data.datalist.build_datalist`) or a list of case dicts.
        modality: ``CT`` or ``MR``; default: the datalist's, else guessed from intensities (air in HU).
        labels: class names, background first; default: the datalist's, else ``class_<n>``.
        progress: show a progress bar while reading.
        foreground_samples: foreground voxels sampled per case for the dataset percentiles.
        seed: seed of that sampling.
        rois: which class each ROI of an RTSTRUCT label becomes (``RoiMap.from_config(cfg.data)``).

    Returns:
        ``cases`` (per-case fingerprints), ``problems`` (one line per unreadable case, naming its
        file), ``n_cases``, ``modality``, ``labels``, ``median_spacing``, ``spacing_range``,
        ``spacings`` and ``median_shape`` (RAS axis order, mm / voxels), ``physical_size_mm``, ``foreground_intensity`` (pooled sample percentiles, mean, std),
        ``classes`` (per class: voxels, fraction of all voxels, fraction of foreground, cases that
        hold it) and, from a datalist, ``layout`` and ``root``.

    Raises:
        ValueError: no case could be read (the message lists why).
    """
    cases, facts = _cases_of(source)
    if not cases:
        raise InputError("no cases to fingerprint; pass a dataset with images")
    prints, problems, samples = _read_cases(cases, foreground_samples, seed, progress, rois)
    if not prints:
        raise InputError(f"none of the {len(cases)} case(s) could be read; fix them:\n  - " + "\n  - ".join(problems))

    spacings = np.array([p["ras_spacing"] for p in prints])
    shapes = np.array([p["ras_shape"] for p in prints])
    modality = modality or facts.get("modality") or _guess_modality(prints)
    pooled = np.concatenate(samples) if samples else np.empty(0)
    names = _class_names(prints, list(labels or facts.get("labels") or []), problems)
    classes = _class_table(prints, names)
    out: dict[str, Any] = {
        **{k: v for k, v in facts.items() if k in ("layout", "root") and v is not None},
        "n_cases": len(prints),
        "modality": modality,
        "labels": names,
        "median_spacing": [float(v) for v in np.median(spacings, axis=0)],
        "spacing_range": [[float(a), float(b)] for a, b in zip(spacings.min(axis=0), spacings.max(axis=0))],
        "spacings": spacings.tolist(),
        "median_shape": [float(v) for v in np.median(shapes, axis=0)],
        "physical_size_mm": [float(v) for v in np.median(shapes * spacings, axis=0)],
        "foreground_intensity": (
            {**_percentiles(pooled), "mean": float(pooled.mean()), "std": float(pooled.std())} if pooled.size else {}
        ),
        "classes": classes,
        "cases": prints,
        "problems": problems,
    }
    return out


def _read_cases(cases: Sequence[dict], foreground_samples: int, seed: int,
                progress: bool, rois: Any = None) -> tuple[list[dict], list[str], list[np.ndarray]]:
    """Each readable case's fingerprint and foreground sample; one problem line per unreadable or non-finite case."""
    prints: list[dict] = []
    problems: list[str] = []
    samples: list[np.ndarray] = []
    for i, case in enumerate(tqdm(cases, desc="reading cases", unit="case", disable=not progress)):
        try:
            fp, sample = _read_case(case, foreground_samples, seed + i, rois)
        except (InputError, FileNotFoundError) as err:  # another exception is a bug: it is not the case's
            problems.append(str(err))
            continue
        if fp["nonfinite_voxels"]:  # training on them would turn every weight into NaN
            problems.append(f"{fp['image']}: {fp['nonfinite_voxels']} voxel(s) are NaN or Inf")
        prints.append(fp)
        samples.append(sample)
    return prints, problems, samples


def _class_names(prints: list[dict], names: list[str], problems: list[str]) -> list[str]:
    """The class names: ``names`` when given (label values beyond them go to ``problems``), else one per value found."""
    if names:  # a label list was given: values beyond it are a problem, not new classes
        for p in prints:
            outside = [int(k) for k in p.get("classes", {}) if int(k) >= len(names)]
            if outside:
                problems.append(f"{p['label']}: label values {', '.join(map(str, sorted(outside)))} are outside "
                                f"0..{len(names) - 1} (the labels are {', '.join(names)})")
        return names
    # no label list anywhere: name the values found
    values = sorted({int(k) for p in prints for k in p.get("classes", {})})
    n_classes = (values[-1] + 1) if values else 0
    return [("background" if v == 0 else f"class_{v}") for v in range(n_classes)]


def _class_table(prints: list[dict], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per class: its value, voxels, share of all voxels and of the foreground, and the cases that hold it."""
    total = sum(sum(p.get("classes", {}).values()) for p in prints)
    foreground_total = sum(c for p in prints for k, c in p.get("classes", {}).items() if k != "0")
    classes = {}
    for v in range(len(names)):
        voxels = sum(p.get("classes", {}).get(str(v), 0) for p in prints)
        classes[names[v]] = {
            "value": v,
            "voxels": int(voxels),
            "fraction": voxels / total if total else 0.0,
            "foreground_fraction": (voxels / foreground_total if foreground_total and v > 0 else None),
            "cases": sum(1 for p in prints if str(v) in p.get("classes", {})),
        }
    return classes


# ------------------------------------------------------------------------------------ plan


def _round_up(value: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(value / multiple)) * multiple)


def estimate_training_memory_gb(roi_size: Sequence[int], patches_per_step: int) -> float:
    """Rough training memory (GB) for ``patches_per_step`` patches of ``roi_size`` voxels."""
    return float(np.prod(roi_size)) * patches_per_step * TRAIN_BYTES_PER_VOXEL / 1e9


def _targetvoxel_spacing(fingerprint: dict) -> list[float]:
    spacings = np.asarray(fingerprint.get("spacings") or [fingerprint["median_spacing"]], dtype=np.float64)
    target = np.median(spacings, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] >= ANISOTROPY_RATIO * target.min():
        # strongly anisotropic: a finer coarse axis keeps thin structures (nnU-Net's reasoning)
        target[coarse] = np.percentile(spacings[:, coarse], ANISOTROPIC_PERCENTILE)
    return [round(float(v), 3) for v in target]


def _nearest_preset(width: float, level: float) -> str:
    lo, hi = level - width / 2, level + width / 2

    def overlap(name: str) -> float:
        w, lv = CT_WINDOWS[name]
        a, b = lv - w / 2, lv + w / 2
        inter = max(0.0, min(hi, b) - max(lo, a))
        return inter / (max(hi, b) - min(lo, a))

    return max(CT_WINDOWS, key=overlap)


def suggest_plan(
    fingerprint: dict,
    memory_budget_gb: float = DEFAULT_MEMORY_GB,
    cfg: Config | None = None,
) -> dict:
    """A config fragment for this dataset: ``preprocess.spacing``, ``patch.roi_size`` and, for CT, ``preprocess.window``.

    - spacing: the median spacing; on strongly anisotropic data (coarsest axis >= ``ANISOTROPY_RATIO``
      times the finest) the coarse axis takes the ``ANISOTROPIC_PERCENTILE`` of its spacings;
    - patch: the median volume resampled to that spacing, rounded up to multiples of
      ``PATCH_MULTIPLE``, then shrunk (the physically longest axis first) until
      ``batch_size * num_samples`` patches fit ``memory_budget_gb`` (see ``TRAIN_BYTES_PER_VOXEL``);
    - window (CT): [width, level] spanning the foreground's 0.5-99.5 percentiles.

    Args:
        fingerprint: from :func:`fingerprint_dataset`.
        memory_budget_gb: memory for one training step.
        cfg: config whose ``train.batch_size`` and ``patch.num_samples`` count the patches per step
            (default: the config defaults).

    Raises:
        ValueError: a non-positive budget.
    """
    if memory_budget_gb <= 0:
        raise InputError(f"memory budget must be positive, got {memory_budget_gb} GB; pass a size in GB")
    cfg = cfg or Config()
    patches = cfg.train.batch_size * cfg.patch.num_samples
    spacing = _targetvoxel_spacing(fingerprint)
    shapes = np.asarray([c["ras_shape"] for c in fingerprint.get("cases", [])] or [fingerprint["median_shape"]])
    spacings = np.asarray(fingerprint.get("spacings") or [fingerprint["median_spacing"]])
    resampled = np.median(shapes * spacings / np.asarray(spacing), axis=0)
    roi = [_round_up(v, PATCH_MULTIPLE) for v in resampled]
    while estimate_training_memory_gb(roi, patches) > memory_budget_gb:
        shrinkable = [i for i in range(3) if roi[i] > PATCH_MULTIPLE]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda i: roi[i] * spacing[i])
        roi[axis] -= PATCH_MULTIPLE
    plan: dict[str, Any] = {"preprocess": {"spacing": spacing}, "patch": {"roi_size": roi}}
    fg = fingerprint.get("foreground_intensity") or {}
    low, high = f"p{PERCENTILES[0]:g}", f"p{PERCENTILES[-1]:g}"
    if fingerprint.get("modality") == "CT" and low in fg and high in fg:
        width = max(1.0, round(fg[high] - fg[low]))
        level = round((fg[high] + fg[low]) / 2)
        plan["preprocess"]["window"] = [float(width), float(level)]
        plan["preprocess"]["ct_window"] = _nearest_preset(width, level)
    return plan


def resampled_shapes(fingerprint: dict, spacing: Iterable[float]) -> list[list[int]]:
    """Each case's shape after resampling to ``spacing`` (rounded to voxels)."""
    target = np.asarray(list(spacing), dtype=np.float64)
    return [[int(round(s * sp / t)) for s, sp, t in zip(c["ras_shape"], c["ras_spacing"], target)]
            for c in fingerprint.get("cases", [])]
