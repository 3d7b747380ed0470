"""Synthetic CT-like phantoms: deterministic abdominal volumes in HU with three labelled organs.

Each phantom is a body (fat with a muscle wall) holding a spine, three labelled organs and two
unlabelled distractors. The organs' intensity ranges overlap each other and the distractors'
(the aorta is as bright as ``organ_c``, the bowel as bright as ``organ_b``, the muscle wall as
``organ_a``), so a model needs shape and position, not only intensity. Volumes have noise,
partial-volume blur, anisotropic spacing and, for some cases, a non-RAS voxel orientation.

Labels: 0 background, 1 ``organ_a`` (large, liver-like, on the right), 2 ``organ_b`` (spleen-like,
on the left), 3 ``organ_c`` (a kidney-like pair either side of the spine).

No library makes labelled CT phantoms of this kind, hence this module; writing uses nibabel and,
for DICOM, SimpleITK.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medt3d.data.geometry import flip_lps_ras, voxel_spacing
from medt3d.errors import InputError
from medt3d.io_utils import atomic_dir

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "Phantom",
    "make_phantom",
    "write_phantom_dataset",
    "write_dicom_series",
]

#: Names of the label values 0..3 (``configs/demo.yaml`` uses the same names).
CLASS_NAMES: tuple[str, ...] = ("background", "organ_a", "organ_b", "organ_c")
#: Default volume size in voxels (x, y, z).
DEFAULT_SHAPE: tuple[int, int, int] = (64, 64, 40)
#: Default voxel spacing in mm (x, y, z); the in-plane spacing is jittered per case when not given.
DEFAULT_SPACING: tuple[float, float, float] = (1.5, 1.5, 2.5)
#: Voxel orientations cycled through by case index: every second case is stored non-RAS.
ORIENTATIONS: tuple[str, ...] = ("RAS", "LPS", "RAS", "PLS")

# Tissue intensities in HU: mean of each structure (its texture and the noise spread it out).
_HU = {
    "air": -1000.0,
    "fat": -90.0,
    "muscle": 55.0,
    "bone": 450.0,
    "cortex": 800.0,
    "organ_a": 60.0,
    "organ_b": 95.0,
    "organ_c": 130.0,
    "bowel": 100.0,
    "aorta": 135.0,
}
_NOISE_HU = 14.0  # white noise std
_TEXTURE_HU = 9.0  # low-frequency texture amplitude inside organs
_BLUR_VOXELS = 0.5  # partial-volume blur


@dataclass
class Phantom:
    """One synthetic case.

    Attributes:
        name: case name, e.g. ``phantom_003``.
        image: float32 HU array in the voxel order of ``affine`` (x, y, z of the stored grid).
        label: uint8 array, same shape, values 0..3 (see ``CLASS_NAMES``).
        affine: 4x4 voxel-to-world (RAS, mm) matrix.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the stored array axes."""
        return tuple(voxel_spacing(self.affine))

    @property
    def axcodes(self) -> str:
        """Orientation of the stored array axes, e.g. ``RAS`` or ``LPS``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


def _ellipsoid(grid: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    u, v, w = grid
    return ((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2 + (
        (w - centre[2]) / radii[2]
    ) ** 2 <= 1.0


def _cylinder(grid: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    u, v, _ = grid
    return ((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2 <= 1.0


def _ras_phantom(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Image (HU) and label on a RAS grid; geometry in normalised coordinates [-1, 1] per axis."""
    from scipy import ndimage

    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")

    def jitter(scale: float, n: int = 3) -> np.ndarray:
        return rng.uniform(-scale, scale, size=n)

    image = np.full(shape, _HU["air"], dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    body_r = np.array([0.90, 0.78]) * (1 + jitter(0.04, 2))
    body = _cylinder(grid, (0, 0), body_r)
    inner = _cylinder(grid, (0, 0), body_r - 0.08)
    image[body] = _HU["muscle"]  # the wall; overlaps organ_a's range
    image[inner] = _HU["fat"]

    spine_c = (0.0, -0.50 + jitter(0.02, 1)[0])
    image[_cylinder(grid, spine_c, (0.13, 0.13))] = _HU["cortex"]
    image[_cylinder(grid, spine_c, (0.09, 0.09))] = _HU["bone"]

    # unlabelled distractors with organ-like intensities
    aorta_c = (-0.06 + jitter(0.02, 1)[0], -0.27)
    image[_cylinder(grid, aorta_c, (0.08, 0.08))] = _HU["aorta"]
    bowel = np.zeros(shape, dtype=bool)
    for _ in range(3):
        centre = (-0.12, 0.38, 0.0) + jitter(0.12)
        bowel |= _ellipsoid(grid, centre, (0.09, 0.07, 0.25) * (1 + jitter(0.2)))
    image[bowel & inner] = _HU["bowel"]

    organs = {
        1: _ellipsoid(grid, (0.36, 0.15, 0.05) + jitter(0.04), (0.38, 0.42, 0.70) * (1 + jitter(0.08))),
        2: _ellipsoid(grid, (-0.52, 0.05, 0.15) + jitter(0.04), (0.22, 0.30, 0.45) * (1 + jitter(0.08))),
        3: _ellipsoid(grid, (-0.33, -0.42, -0.15) + jitter(0.03), (0.15, 0.17, 0.38) * (1 + jitter(0.08)))
        | _ellipsoid(grid, (0.33, -0.42, -0.12) + jitter(0.03), (0.15, 0.17, 0.38) * (1 + jitter(0.08))),
    }
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=3.0)
    texture *= _TEXTURE_HU / max(float(texture.std()), 1e-6)
    for value, mask in organs.items():
        mask &= inner
        name = CLASS_NAMES[value]
        image[mask] = _HU[name] + texture[mask]
        label[mask] = value

    image = ndimage.gaussian_filter(image, sigma=_BLUR_VOXELS)
    image[body] += rng.normal(0.0, _NOISE_HU, size=int(body.sum())).astype(np.float32)
    image[~body] += rng.normal(0.0, _NOISE_HU / 2, size=int((~body).sum())).astype(np.float32)
    return image.astype(np.float32), label


def make_phantom(
    index: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] | None = None,
    seed: int = 0,
) -> Phantom:
    """Build phantom number ``index``; the same (index, shape, spacing, seed) gives the same volume.

    Args:
        index: case number (>= 0); it picks the random geometry and the stored orientation.
        shape: volume size in voxels (x, y, z) in RAS order (permuted for non-RAS cases).
        spacing: voxel size in mm (x, y, z); ``None`` uses ``DEFAULT_SPACING`` with a small
            per-case in-plane jitter.
        seed: dataset seed.

    Raises:
        ValueError: a negative index, a shape below 8 voxels per axis, or a non-positive spacing.
    """
    import nibabel as nib

    if index < 0:
        raise InputError(f"phantom index must be >= 0, got {index}; pass a non-negative index")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(f"phantom shape must be 3 sizes of at least 8 voxels, got {list(shape)}; pass such a shape")
    rng = np.random.default_rng([int(seed), int(index)])
    if spacing is None:
        inplane = DEFAULT_SPACING[0] * (1 + rng.uniform(-0.08, 0.08))
        spacing = (inplane, inplane, DEFAULT_SPACING[2])
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"phantom spacing must be 3 positive sizes in mm, got {list(spacing)}; pass such a spacing")

    image, label = _ras_phantom(shape, rng)
    ras_affine = np.diag([*spacing, 1.0])
    ras_affine[:3, 3] = -(np.array(shape) - 1) / 2 * np.array(spacing)  # centred on the origin

    codes = ORIENTATIONS[index % len(ORIENTATIONS)]
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(codes))
    image = np.ascontiguousarray(nib.orientations.apply_orientation(image, ornt), dtype=np.float32)
    label = np.ascontiguousarray(nib.orientations.apply_orientation(label, ornt), dtype=np.uint8)
    affine = ras_affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return Phantom(name=f"phantom_{index:03d}", image=image, label=label, affine=affine)


def write_dicom_series(image: np.ndarray, affine: np.ndarray, folder: str | Path, name: str = "phantom") -> Path:
    """Write a HU volume as a CT DICOM series (one int16 file per slice along the third axis).

    Args:
        image: HU array in the voxel order of ``affine``.
        affine: 4x4 voxel-to-world RAS matrix.
        folder: output folder (created; written atomically as a whole).
        name: patient/series description.

    Returns:
        The series folder.
    """
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"DICOM output folder {folder} is not empty; choose a new or empty folder")
    lps = flip_lps_ras(affine)  # RAS -> LPS (ITK's world frame)
    spacing = voxel_spacing(lps)
    direction = lps[:3, :3] / spacing
    hu = np.clip(np.rint(image), -32768, 32767).astype(np.int16)
    volume = sitk.GetImageFromArray(np.transpose(hu, (2, 1, 0)))  # ITK arrays are z, y, x
    volume.SetSpacing([float(s) for s in spacing])
    volume.SetOrigin([float(o) for o in lps[:3, 3]])
    volume.SetDirection([float(d) for d in direction.ravel()])

    # deterministic UIDs derived from the case name and geometry
    seed_text = [name, str(image.shape), np.array2string(affine, precision=4)]
    series_uid = generate_uid(entropy_srcs=[*seed_text, "series"])
    study_uid = generate_uid(entropy_srcs=[*seed_text, "study"])
    frame_uid = generate_uid(entropy_srcs=[*seed_text, "frame"])
    row, col = direction[:, 0], direction[:, 1]
    common = {
        "0008|0060": "CT",
        "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
        "0010|0010": name,
        "0010|0020": name,
        "0020|000d": study_uid,
        "0020|000e": series_uid,
        "0020|0052": frame_uid,
        "0008|103e": f"medt3d phantom {name}",
        "0020|0037": "\\".join(f"{v:.6f}" for v in (*row, *col)),
        "0028|1052": "0",  # rescale intercept
        "0028|1053": "1",  # rescale slope
        "0028|1054": "HU",
    }
    with atomic_dir(folder) as tmp:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(volume.GetDepth()):
            slice_ = volume[:, :, k]
            for tag, value in common.items():
                slice_.SetMetaData(tag, value)
            position = volume.TransformIndexToPhysicalPoint((0, 0, k))
            slice_.SetMetaData("0020|0032", "\\".join(f"{p:.6f}" for p in position))
            slice_.SetMetaData("0020|0013", str(k + 1))
            slice_.SetMetaData("0008|0018", generate_uid(entropy_srcs=[*seed_text, f"slice{k}"]))
            writer.SetFileName(str(tmp / f"slice_{k:04d}.dcm"))
            writer.Execute(slice_)
    return folder


def write_phantom_dataset(
    out_dir: str | Path,
    n_train: int,
    n_val: int,
    n_test: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
    dicom: bool = False,
) -> Path:
    """Write phantoms in the ``train|val/images|masks`` layout (and ``test/images``) as NIfTI.

    Case names run on across splits (train first, then val, then test), so every case is distinct.
    The dataset is built in a temporary folder and moved into place at the end, so an interrupted
    run leaves nothing half-written.

    Args:
        out_dir: dataset folder; it must not exist or be empty.
        n_train: training cases (>= 1).
        n_val: validation cases (>= 0).
        n_test: held-out cases written to ``test/images`` (their masks to ``test/masks``).
        shape: volume size in voxels (x, y, z).
        seed: dataset seed.
        dicom: also write each image as a DICOM series in ``dicom/<split>/<case>/``.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: bad counts, or ``out_dir`` exists and is not empty.
    """
    from medt3d.data.nifti import write_nifti

    out_dir = Path(out_dir)
    if n_train < 1 or n_val < 0 or n_test < 0:
        raise InputError(f"phantom counts must be n_train >= 1, n_val >= 0, n_test >= 0; got {n_train}, {n_val}, {n_test}; "
                         "pass such counts")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"phantom output folder {out_dir} already exists and is not empty; choose a new folder")
    with atomic_dir(out_dir) as tmp:
        splits = [("train", n_train), ("val", n_val), ("test", n_test)]
        index = 0
        for split, count in splits:
            for _ in range(count):
                ph = make_phantom(index, shape=shape, seed=seed)
                write_nifti(ph.image, ph.affine, tmp / split / "images" / f"{ph.name}.nii.gz", dtype=None)
                write_nifti(ph.label, ph.affine, tmp / split / "masks" / f"{ph.name}.nii.gz", dtype=None)
                if dicom:
                    write_dicom_series(ph.image, ph.affine, tmp / "dicom" / split / ph.name, name=ph.name)
                index += 1
    return out_dir
