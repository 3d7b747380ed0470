"""Pictures for people: contour overlays of ground truth and prediction, and training curves."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medt3d.io_utils import atomic_path  # noqa: E402
from medt3d.label_table import default_color  # noqa: E402

__all__ = ["save_overlay", "save_curves"]

GT_COLOUR = "lime"
PRED_COLOUR = "magenta"


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    # volumes are (X, Y, Z) in RAS order: after rot90 superior (or anterior, axially) is up; the
    # coronal and axial planes are then mirrored left-right into radiological orientation (the
    # patient's right on the viewer's left)
    plane = np.rot90(np.take(volume, index, axis=axis))
    return np.fliplr(plane) if axis != 0 else plane


def _aspect(spacing: tuple[float, float, float], axis: int) -> float:
    rows, cols = [s for i, s in enumerate(spacing) if i != axis]
    # after rot90 the displayed rows follow the second remaining axis
    return cols / rows


#: Panel names of the three planes of a RAS-ordered volume.
_PLANES = ("sagittal", "coronal", "axial")


def _class_styles(label: np.ndarray | None, pred: np.ndarray | None,
                  classes: Sequence[Mapping[str, Any]] | None) -> dict[int, tuple[str, Any]]:
    """Name and colour of each foreground class present, or ``{}`` when one colour per source will do."""
    present = sorted({int(v) for vol in (label, pred) if vol is not None for v in np.unique(vol) if v > 0})
    if len(present) < 2:
        return {}
    known = {int(c["value"]): c for c in classes or ()}
    styles = {}
    for value in present:
        entry = known.get(value)
        rgb = entry["color"] if entry is not None else default_color(value)
        styles[value] = (entry["name"] if entry is not None else f"class {value}", tuple(c / 255 for c in rgb))
    return styles


def save_overlay(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray | None, path: str | Path,
                 spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), title: str = "",
                 affine: np.ndarray | None = None, classes: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Middle slices on the three axes with ground-truth and predicted contours.

    With one foreground class the ground truth is drawn in one colour and the prediction in another.
    With several, each class has its own colour (from ``classes``, else the label table's default),
    the ground truth drawn solid and the prediction dashed, so that a structure labelled as the wrong
    class shows in that class's colour.

    Args:
        image: intensity volume (X, Y, Z).
        label: ground-truth labels (X, Y, Z) or None.
        pred: predicted labels (X, Y, Z) or None.
        path: PNG to write (atomically).
        spacing: voxel spacing, for the right aspect ratio (ignored with ``affine``).
        title: figure title.
        affine: the volumes' voxel-to-RAS affine: they are then shown in RAS order (superior and
            anterior up, whatever the storage order: LPS or LAS scans are not upside down).
        classes: the label table (``value``, ``name``, ``color`` RGB 0-255 per class), as
            :func:`medt3d.label_table.label_table` gives it.
    """
    image = np.asarray(image, dtype=np.float32).squeeze()
    if affine is not None:
        from medt3d.data.geometry import to_ras

        image, ras_spacing = to_ras(image, affine)
        spacing = tuple(float(s) for s in ras_spacing)
        label = None if label is None else to_ras(np.asarray(label).squeeze(), affine)[0]
        pred = None if pred is None else to_ras(np.asarray(pred).squeeze(), affine)[0]
    lo, hi = np.percentile(image, [1, 99])
    styles = _class_styles(label, pred, classes)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, ax in enumerate(axes):
        mid = image.shape[axis] // 2
        for vol in (label, pred):
            if vol is not None:
                nonzero = np.nonzero(np.asarray(vol).squeeze())
                if nonzero[axis].size:  # show the slice through the structure's centre
                    mid = int(np.median(nonzero[axis]))
                    break
        ax.imshow(_slice(image, axis, mid), cmap="gray", vmin=lo, vmax=hi, aspect=_aspect(spacing, axis))
        for vol, colour, line in ((label, GT_COLOUR, "solid"), (pred, PRED_COLOUR, "dashed")):
            if vol is None:
                continue
            sl = _slice(np.asarray(vol).squeeze(), axis, mid)
            for value in np.unique(sl):
                if value > 0:
                    ax.contour((sl == value).astype(float), levels=[0.5], linewidths=1.0,
                               colors=[styles[int(value)][1]] if styles else colour,
                               linestyles=line if styles else "solid")
        ax.set_title(f"{_PLANES[axis]} slice {mid}" if affine is not None else f"{'XYZ'[axis]} = {mid}")
        ax.axis("off")
    if styles:
        handles = [plt.Line2D([], [], color="grey", label="ground truth", linestyle="solid"),
                   plt.Line2D([], [], color="grey", label="prediction", linestyle="dashed"),
                   *(plt.Line2D([], [], color=rgb, label=name, linewidth=3) for name, rgb in styles.values())]
    else:
        handles = [plt.Line2D([], [], color=GT_COLOUR, label="ground truth"),
                   plt.Line2D([], [], color=PRED_COLOUR, label="prediction")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.94))  # room for the title above the panel titles
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)


def save_curves(history_file: str | Path, path: str | Path, key_metric: str = "val_mean_dice") -> Path:
    """Training loss and validation Dice per epoch, from a run's ``history.json``.

    Raises:
        FileNotFoundError: the history file does not exist.
    """
    history_file = Path(history_file)
    if not history_file.is_file():
        raise FileNotFoundError(f"training history not found: {history_file}; pass a run folder of medt3d train")
    history = json.loads(history_file.read_text())
    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="tab:blue")
    val = [(h["epoch"], h[key_metric]) for h in history if key_metric in h]
    ax2 = ax1.twinx()
    if val:
        ax2.plot(*zip(*val), "o-", color="tab:red", label="validation Dice")
    ax2.set_ylabel("validation mean Dice", color="tab:red")
    ax2.set_ylim(0, 1)
    fig.suptitle("training curves")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)
