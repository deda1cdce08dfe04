"""Fixtures shared by every test: the real public data, fresh lakes, and the loaded sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import infra  # noqa: F401  (telemetry off before any library loads)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the public test data is not beside this clone ({SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture
def make_lake(tmp_path, monkeypatch):
    """A function that opens a fresh lake in the test's folder (keys in a folder beside it)."""
    from infra.lake import Lake
    from infra.settings import load_settings

    monkeypatch.setenv("CARELAKE_KEYS__KEY_DIR", str(tmp_path / "keys"))

    def make(name: str = "data", **overrides):
        settings = load_settings(data_dir=tmp_path / name)
        if overrides:
            settings = settings.with_overrides(**overrides)
        return Lake.open(settings)

    return make


@pytest.fixture(scope="session")
def sample_lake(tmp_path_factory):
    """The bundled sample loaded once into a lake that read-only tests share."""
    from dlt_pipelines.fhir.pipeline import ingest
    from infra.lake import Lake
    from infra.settings import load_settings

    root = tmp_path_factory.mktemp("sample-lake")
    os.environ["CARELAKE_KEYS__KEY_DIR"] = str(root / "keys")
    lake = Lake.open(load_settings(data_dir=root / "data"))
    report = ingest(lake, [SAMPLE / "fhir"], workers=1)
    return lake, report
