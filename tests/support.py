"""Helpers shared by several test modules: tiny training configs and a deterministic threshold "network".

Plain helpers (classes, functions, constants) live here so that no test module imports another;
fixtures live in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medt3d.config import load_config

TINY = [
    "preprocess.spacing=[3.0, 3.0, 3.0]",
    "patch.roi_size=[16, 16, 16]",
    "patch.num_samples=1",
    "network.preset=tiny",
    "train.batch_size=1",
    "train.max_epochs=2",
    "train.max_seconds=null",
    "train.iterations_per_epoch=null",
    "train.val_interval=1",
    "train.warmup_epochs=1",
    "train.lr=0.003",
    "data.cache=memory",
    "infer.sw_batch_size=2",
]


def tiny_cli_args(*extra: str) -> list[str]:
    """``--config demo`` and a ``--set`` for each tiny setting (no tracking) and each of ``extra``, for the CLI."""
    args = ["--config", "demo"]
    for item in [*TINY, "tracking.mlflow=false", "tracking.tensorboard=false", *extra]:
        args += ["--set", item.replace(" ", "")]
    return args


def tiny_cfg(*extra: str, tracking: bool = False):
    overrides = [*TINY, f"tracking.mlflow={str(tracking).lower()}", f"tracking.tensorboard={str(tracking).lower()}"]
    return load_config("demo", [*overrides, *extra])


#: voxels above this (HU) are class 1 for ThresholdNet with the window below
THRESHOLD_HU = 500.0
WINDOW = "[1000,500]"


class ThresholdNet(torch.nn.Module):
    """Logits that favour class 1 where the (0..1 windowed) intensity exceeds 0.5, else class 0.

    With ``num_classes`` > 2 the further classes get logits far below both, so they are never chosen.
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.calls = 0
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # so .to(device) and parameters() work

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = torch.cat([0.5 - x, x - 0.5], dim=1) * 20.0
        return torch.cat([logits, *[torch.full_like(x, -100.0)] * (self.num_classes - 2)], dim=1)


def threshold_config(*overrides: str):
    """A two-class CT config whose window makes ThresholdNet answer ``scan > 500 HU``."""
    return load_config("demo", ["data.labels=[background,blob]", f"preprocess.window={WINDOW}",
                                "preprocess.spacing=null", "patch.roi_size=[16,16,16]", "infer.sw_batch_size=4",
                                *overrides])


def blob_volume(shape, spacing, frame: str | np.ndarray = "RAS", centre_shift=(4.0, -3.0, 2.0),
                radii=(9.0, 7.0, 11.0), origin=(10.0, -20.0, 5.0)) -> tuple[np.ndarray, np.ndarray]:
    """A 1000 HU ellipsoid in 0 HU, defined in world millimetres, and the grid's RAS affine.

    ``frame`` is axis codes (``RAS``, ``LPS``, ...) or a 3x3 rotation (an oblique grid). The
    ellipsoid sits off the volume's centre so a flipped or shifted answer would not match.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(frame, str):
        affine = np.diag([*map(float, spacing), 1.0])
        affine = affine @ nib.orientations.inv_ornt_aff(nib.orientations.axcodes2ornt(frame), shape)
    else:
        affine = np.eye(4)
        affine[:3, :3] = np.asarray(frame) @ np.diag(spacing)
    affine[:3, 3] += origin
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    world = np.einsum("ab,b...->a...", affine[:3, :3], ijk) + affine[:3, 3, None, None, None]
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3] + np.asarray(centre_shift)
    inside = sum(((world[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0
    return np.where(inside, 1000.0, 0.0).astype(np.float32), affine


def save(path: Path, image: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(image, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def root_cause(error: BaseException) -> BaseException:
    """The first exception of a chain: what a MONAI config expression raised before MONAI wrapped it."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def write_nnunet_phantoms(root: Path, n_cases: int = 5, shape=(24, 24, 24), seed: int = 0,
                          labels: dict | None = None) -> Path:
    """An nnU-Net v2 raw dataset of phantoms: ``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz``, dataset.json."""
    import json

    from medt3d.data.nifti import write_nifti
    from medt3d.data.phantoms import make_phantom

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n_cases):
        ph = make_phantom(i, shape=shape, seed=seed)
        write_nifti(ph.image, ph.affine, root / "imagesTr" / f"{ph.name}_0000.nii.gz", dtype=None)
        write_nifti(ph.label, ph.affine, root / "labelsTr" / f"{ph.name}.nii.gz", dtype=None)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels or {"background": 0, "organ": 1},
        "numTraining": n_cases, "file_ending": ".nii.gz"}))
    return root
