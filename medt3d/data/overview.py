"""Overview PNG: middle slices of a few cases with their masks overlaid (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.data.geometry import to_ras
from medt3d.data.readers import load_image, load_volume
from medt3d.errors import InputError
from medt3d.io_utils import atomic_path

__all__ = ["MAX_OVERVIEW_CASES", "write_overview"]

#: Cases shown in the overview (the first ones of the list).
MAX_OVERVIEW_CASES = 4
_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def _centre(label: np.ndarray | None, shape: Sequence[int]) -> list[int]:
    """Middle of the mask's bounding box (the volume's middle without a mask)."""
    if label is not None and (label > 0).any():
        idx = np.argwhere(label > 0)
        return [int(v) for v in (idx.min(axis=0) + idx.max(axis=0)) // 2]
    return [int(s) // 2 for s in shape]


def write_overview(
    cases: Sequence[Mapping[str, Any]],
    path: str | Path,
    window: tuple[float, float] | None = None,
    labels: Sequence[str] | None = None,
    max_cases: int = MAX_OVERVIEW_CASES,
    rois: Any = None,
) -> Path:
    """Write a PNG with an axial and a coronal slice per case, the mask overlaid in colour.

    Slices pass through the middle of the mask (of the volume without one) and are shown in
    radiological convention (patient right on the left, anterior/superior up) with the true
    aspect ratio from the spacing.

    Args:
        cases: dicts with ``image`` and optionally ``label`` and ``name``.
        path: PNG to write (atomically).
        window: display range (low, high); default: the 1-99 percentiles of each image.
        labels: class names for the legend, background first.
        max_cases: how many cases to show.
        rois: which class each ROI of an RTSTRUCT label becomes (``RoiMap.from_config(cfg.data)``).

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    shown = list(cases)[:max_cases]
    if not shown:
        raise InputError("no cases to show in the overview; pass a dataset with images")
    fig, axes = plt.subplots(len(shown), 2, figsize=(8, 4 * len(shown)), squeeze=False)
    present: set[int] = set()
    for row, case in zip(axes, shown):
        image = load_image(case["image"], case.get("series_uid"), channels=None)  # the first channel is shown
        affine = np.asarray(image.affine, dtype=np.float64)
        img, spacing = to_ras(image[0].numpy(), affine)
        lab = None
        if case.get("label") is not None:
            lab = to_ras(load_volume(case["label"], rois=rois)[0].numpy().astype(np.int64), affine)[0]
            present |= {int(v) for v in np.unique(lab) if v > 0}
        lo, hi = window if window is not None else np.percentile(img, [1, 99])
        cx, cy, cz = _centre(lab, img.shape)
        views = [
            ("axial", img[:, :, cz], None if lab is None else lab[:, :, cz], spacing[1] / spacing[0], cz),
            ("coronal", img[:, cy, :], None if lab is None else lab[:, cy, :], spacing[2] / spacing[0], cy),
        ]
        for ax, (view, im, lb, aspect, index) in zip(row, views):
            ax.imshow(im.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
            if lb is not None and lb.max() > 0:
                cmap = ListedColormap(_COLOURS[: max(1, int(lb.max()))])
                masked = np.ma.masked_where(lb.T == 0, lb.T)
                ax.imshow(masked, cmap=cmap, vmin=1, vmax=max(1, int(lb.max())), origin="lower", aspect=aspect,
                          alpha=0.45, interpolation="nearest")
            ax.invert_xaxis()  # radiological convention: patient right on the viewer's left
            ax.set_title(f"{case.get('name', Path(str(case['image'])).name)}: {view} slice {index}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    if present:
        names = list(labels or [])
        handles = [Patch(color=_COLOURS[(v - 1) % len(_COLOURS)],
                         label=names[v] if v < len(names) else f"class {v}") for v in sorted(present)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=9)
    fig.tight_layout(rect=(0, 0.04 if present else 0, 1, 1))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
