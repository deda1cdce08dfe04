"""Fixtures of the dbt tests: real lakes loaded with public FHIR data, and their marts builds.

Each lake is a real carelake lake (encrypted storage, SQLite Iceberg catalog) in a temporary
folder, its keys in another. The sample lake holds the Synthea Bulk NDJSON export (10 patients)
and the 40 Synthea R4 bundles; the edge lake holds the official FHIR R4 examples (partial dates,
every value[x], references that do not resolve). Each is built once per session.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from infra import marts  # noqa: E402
from infra.lake import Lake  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from tests.dbt import bronze_fixture  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRST_LOAD_AT = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
SECOND_LOAD_AT = dt.datetime(2026, 1, 6, 8, 0, tzinfo=dt.UTC)


@dataclass
class BuiltLake:
    lake: Any
    summary: dict[str, Any]
    loads: dict[str, dict[str, int]] = field(default_factory=dict)
    between_loads: dt.datetime | None = None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not folder.is_dir():
        pytest.fail(f"the public test data is missing: expected {folder} (shared/data/INDEX.md)")
    return folder


def open_lake(root: Path) -> Any:
    settings = load_settings(
        data_dir=root / "data", environ={"CARELAKE_KEYS__KEY_DIR": str(root / "keys")}
    )
    return Lake.open(settings)


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[BuiltLake]:
    """The Bulk NDJSON export, then the 40 bundles; built with docs, as `carelake run` does."""
    lake = open_lake(tmp_path_factory.mktemp("sample-lake"))
    loads = {
        "bulk": bronze_fixture.load(
            lake, bronze_fixture.read_ndjson(shared_data / "synthea-bulk-ndjson-10-patients"),
            source="bulk-ndjson", load_id="load-1", loaded_at=FIRST_LOAD_AT,
        )
    }
    between = dt.datetime.now(dt.UTC)
    bundles = sorted((shared_data / "synthea-r4-bundles-smart" / "bundles").glob("*.json"))
    loads["bundles"] = bronze_fixture.load(
        lake, bronze_fixture.read_bundles(bundles),
        source="bundle", load_id="load-2", loaded_at=SECOND_LOAD_AT,
    )
    summary = marts.build(lake, docs=True)
    yield BuiltLake(lake=lake, summary=summary, loads=loads, between_loads=between)


@pytest.fixture(scope="session")
def edge(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> BuiltLake:
    lake = open_lake(tmp_path_factory.mktemp("edge-lake"))
    files = sorted((shared_data / "fhir-r4-spec-examples").glob("*.json"))
    loads = {
        "examples": bronze_fixture.load(
            lake, bronze_fixture.read_resource_files(files),
            source="spec-examples", load_id="load-1", loaded_at=FIRST_LOAD_AT,
        )
    }
    summary = marts.build(lake)
    return BuiltLake(lake=lake, summary=summary, loads=loads)


def query(lake: Any, sql: str, parameters: list[Any] | None = None) -> list[tuple[Any, ...]]:
    connection = marts.connect_marts(lake)
    try:
        return connection.execute(sql, parameters or []).fetchall()
    finally:
        connection.close()
