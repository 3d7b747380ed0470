"""Shared test fixtures.

Tests that read the real scans in ``../shared/data`` use the ``shared_data`` fixture: it skips
with a reason when the folder is absent (a user's clone), and fails instead when
``MEDT3D_REQUIRE_SHARED=1`` (set by ``.ci/run``), so CI always runs them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# One thread per test process: pytest-xdist runs two processes on the 2-core CI machine, and torch's
# default of a thread per core (in each process and in every command a test starts) oversubscribed it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; skip (or fail under CI) when it is missing."""
    if not SHARED_DATA.is_dir():
        message = f"real test scans not found at {SHARED_DATA}"
        if os.environ.get("MEDT3D_REQUIRE_SHARED") == "1":
            pytest.fail(f"{message} (MEDT3D_REQUIRE_SHARED=1 requires them)")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small phantoms (2 train, 1 val), written once per test module."""
    from medt3d.data.phantoms import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("ph") / "data", n_train=2, n_val=1, shape=(32, 32, 20))


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests deterministic and light on the 2-core CI machine."""
    monkeypatch.setenv("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def meta_schema_file(shared_data: Path) -> Path:
    """The MONAI metadata schema in ../shared/bundle (beside ../shared/data; skips or fails like shared_data)."""
    path = shared_data.parent / "bundle" / "meta_schema_20240725.json"
    if not path.is_file():
        pytest.fail(f"MONAI metadata schema not found at {path}")
    return path


@pytest.fixture(scope="session")
def meta_schema(meta_schema_file: Path) -> dict:
    """The MONAI metadata schema, parsed."""
    return json.loads(meta_schema_file.read_text(encoding="utf-8"))
