"""Pictures for people: contour overlays of ground truth and prediction, and training curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medt3d.io_utils import atomic_path  # noqa: E402

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


def save_overlay(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray | None, path: str | Path,
                 spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), title: str = "",
                 affine: np.ndarray | None = None) -> Path:
    """Middle slices on the three axes with ground-truth and predicted contours in two colours.

    Args:
        image: intensity volume (X, Y, Z).
        label: ground-truth labels (X, Y, Z) or None.
        pred: predicted labels (X, Y, Z) or None.
        path: PNG to write (atomically).
        spacing: voxel spacing, for the right aspect ratio (ignored with ``affine``).
        title: figure title.
        affine: the volumes' voxel-to-RAS affine: they are then shown in RAS order (superior and
            anterior up, whatever the storage order: LPS or LAS scans are not upside down).
    """
    image = np.asarray(image, dtype=np.float32).squeeze()
    if affine is not None:
        from medt3d.data.geometry import to_ras

        image, ras_spacing = to_ras(image, affine)
        spacing = tuple(float(s) for s in ras_spacing)
        label = None if label is None else to_ras(np.asarray(label).squeeze(), affine)[0]
        pred = None if pred is None else to_ras(np.asarray(pred).squeeze(), affine)[0]
    lo, hi = np.percentile(image, [1, 99])
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
        for vol, colour in ((label, GT_COLOUR), (pred, PRED_COLOUR)):
            if vol is None:
                continue
            sl = _slice(np.asarray(vol).squeeze(), axis, mid)
            for value in np.unique(sl):
                if value > 0:
                    ax.contour((sl == value).astype(float), levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(f"{_PLANES[axis]} slice {mid}" if affine is not None else f"{'XYZ'[axis]} = {mid}")
        ax.axis("off")
    handles = [plt.Line2D([], [], color=GT_COLOUR, label="ground truth"),
               plt.Line2D([], [], color=PRED_COLOUR, label="prediction")]
    fig.legend(handles=handles, loc="lower center", ncol=2)
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
        raise FileNotFoundError(f"training history not found: {history_file}")
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
