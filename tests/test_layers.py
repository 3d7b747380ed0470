"""The layers contract (pyproject.toml) holds, and an upward import breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` run from ``root``, reading the ``medt3d`` package there (not the installed one)."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([exe, "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=120)  # its banner is box-drawing Unicode


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "medt3d", tmp_path / "medt3d", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_an_upward_import_breaks_the_layers_contract(copy: Path):
    assert _lint_imports(copy).returncode == 0  # the copy as it is: kept
    module = copy / "medt3d" / "networks" / "registry.py"
    module.write_text(module.read_text() + "\nimport medt3d.commands  # noqa: E402,F401\n")
    result = _lint_imports(copy)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "medt3d.networks.registry -> medt3d.commands" in result.stdout


def test_siblings_of_one_layer_may_not_import_each_other(copy: Path):
    module = copy / "medt3d" / "evaluation" / "splits.py"
    module.write_text(module.read_text() + "\nimport medt3d.training.optim  # noqa: E402,F401\n")
    result = _lint_imports(copy)
    assert result.returncode != 0 and "medt3d.evaluation.splits -> medt3d.training.optim" in result.stdout
