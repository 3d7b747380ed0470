"""The run folder before training: writable, with room for checkpoints, and holding no other run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from medt3d.errors import InputError
from medt3d.io_utils import check_writable_dir
from medt3d.models.layout import RunLayout

logger = logging.getLogger("medt3d.train")

MIN_FREE_DISK_MB = 200


def refuse_another_run(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds another run unless resuming or overwriting (nothing is changed here).

    A run folder belongs to one run: starting a new run over an old one would mix their checkpoints
    (an old ``best.pt`` next to a new ``last.pt``).
    """
    existing = RunLayout(run_dir).run_files()
    if existing and not resume and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise InputError(f"output folder {run_dir} already holds a training run ({names}): pass --resume to "
                         "continue it, --overwrite to replace it, or choose another --output")


def clear_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """After the data passed the gate: remove the run ``--overwrite`` replaces, and a killed run's temp files."""
    layout = RunLayout(run_dir)
    existing = layout.run_files()
    if existing and overwrite and not resume:
        logger.info("--overwrite: removing the previous run in %s (%s)", run_dir,
                    ", ".join(p.name for p in existing))
        # its TensorBoard curves go too; the MLflow store keeps every run, the old one included
        for path in [*existing, *([layout.tensorboard] if layout.tensorboard.exists() else [])]:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in layout.leftover_temp_files():
        path.unlink(missing_ok=True)


def check_output(run_dir: Path) -> None:
    check_writable_dir(run_dir)
    free_mb = shutil.disk_usage(run_dir).free / 2**20
    if free_mb < MIN_FREE_DISK_MB:
        raise PermissionError(f"output folder {run_dir} has only {free_mb:.0f} MB free "
                              f"(need at least {MIN_FREE_DISK_MB} MB for checkpoints); free space or choose another "
                              "--output")
