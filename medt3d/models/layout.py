"""Where things live in a training run folder and in an exported bundle: the one owner of these names."""

from __future__ import annotations

from pathlib import Path

from medt3d.io_utils import leftover_temp_files

__all__ = [
    "BUNDLE_CONFIG",
    "BUNDLE_METADATA",
    "BUNDLE_ONNX",
    "BUNDLE_WEIGHTS",
    "CrossValLayout",
    "RUN_CHECKPOINTS",
    "RunLayout",
]

#: A run folder's checkpoints, in the order a ``--model RUN`` tries them.
RUN_CHECKPOINTS = ("checkpoints/best.pt", "checkpoints/last.pt", "best.pt")

#: The medt3d config shipped in an exported bundle (relative to the bundle root).
BUNDLE_CONFIG = "configs/medt3d.yaml"
#: The bundle's state_dict.
BUNDLE_WEIGHTS = "models/model.pt"
#: The bundle's ONNX networks by precision (``medt3d export --onnx``, ``--onnx-precision``), run by ``--engine onnxruntime``.
BUNDLE_ONNX = {"fp32": "models/model.onnx", "fp16": "models/model_fp16.onnx", "int8": "models/model_int8.onnx"}
#: The bundle's MONAI metadata.
BUNDLE_METADATA = "configs/metadata.json"


class RunLayout:
    """The files of a training run folder.

    Args:
        root: the run folder (``medt3d train --output``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, model: str | Path) -> RunLayout:
        """The run folder of ``model``: a run folder itself, or a checkpoint inside its ``checkpoints/``."""
        model = Path(model)
        if model.is_dir():
            return cls(model)
        return cls(model.parent.parent if model.parent.name == "checkpoints" else model.parent)

    @property
    def checkpoints(self) -> Path:
        """Folder of the checkpoints."""
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        """Checkpoint of the best validation score."""
        return self.checkpoints / "best.pt"

    @property
    def last(self) -> Path:
        """Checkpoint of the last finished epoch (what ``--resume`` continues from)."""
        return self.checkpoints / "last.pt"

    @property
    def config(self) -> Path:
        """The resolved config of the run."""
        return self.root / "config.yaml"

    @property
    def history(self) -> Path:
        """Per-epoch loss, learning rate, time and validation score."""
        return self.root / "history.json"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files."""
        return self.root / "tensorboard"

    @property
    def mlflow_db(self) -> Path:
        """MLflow's SQLite store."""
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        """MLflow's artifact folder."""
        return self.root / "mlflow-artifacts"

    @property
    def cache(self) -> Path:
        """Default disk cache of preprocessed volumes."""
        return self.root / "cache"

    @property
    def splits(self) -> Path:
        """The folds a ``data.fold`` run took its validation cases from, as nnU-Net's ``splits_final.json``."""
        return self.root / "splits_final.json"

    def run_files(self) -> list[Path]:
        """What marks a training run here (config, history, checkpoints), if anything.

        The tracking stores are left out: an MLflow database holds many runs (and a bundle's
        ``--tracking mlflow`` creates it before training starts).
        """
        return [p for p in (self.config, self.history, self.checkpoints) if p.exists()]

    def leftover_temp_files(self) -> list[Path]:
        """Hidden ``.NAME.*.tmp*`` files of atomic writes that a killed process left behind."""
        return [*leftover_temp_files(self.root), *leftover_temp_files(self.checkpoints)]


class CrossValLayout:
    """The files of a cross-validation folder (``medt3d train --folds``).

    Args:
        root: the folder: one run folder per fold, the folds used, the out-of-fold predictions, their
            summary and the postprocessing chosen from them.
    """

    #: the file that marks a cross-validation folder (folds asked for, folds finished)
    MARKER = "crossval.json"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def is_crossval(cls, path: str | Path) -> bool:
        """Whether ``path`` is a cross-validation folder."""
        return (Path(path) / cls.MARKER).is_file()

    @property
    def state(self) -> Path:
        """``crossval.json``: the folds asked for and those finished."""
        return self.root / self.MARKER

    def fold(self, index: int) -> Path:
        """The run folder of fold ``index``."""
        return self.root / f"fold_{index}"

    @property
    def splits(self) -> Path:
        """The folds in use, as nnU-Net's ``splits_final.json``."""
        return self.root / "splits_final.json"

    @property
    def oof(self) -> Path:
        """Out-of-fold predictions: each training case predicted by the fold that validated on it."""
        return self.root / "oof_predictions"

    @property
    def summary(self) -> Path:
        """The cross-validation summary (out-of-fold scores, per fold and overall)."""
        return self.root / "crossval_summary.json"

    @property
    def postprocessing(self) -> Path:
        """The postprocessing chosen from the out-of-fold predictions (applied by ``medt3d infer``)."""
        return self.root / "postprocessing.json"
