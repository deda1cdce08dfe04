"""Staged data files: the workers write each batch's rows as Iceberg data files, and the load
commits those files as they are, or reads them back and merges; nothing is left behind."""

from __future__ import annotations

import time

import pyarrow.compute as pc
import pytest

from dlt_pipelines.fhir import pipeline
from dlt_pipelines.fhir.pipeline import ingest
from infra.maintenance import LOADS_FOLDER, referenced_files, remove_orphans, running_load

EDGE = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "edge"
SAMPLE = __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "sample"


def _unreferenced(lake) -> list[str]:
    """Data files under the bronze tables' folders that no snapshot reaches (older metadata
    files are left to maintenance, as every Iceberg commit leaves them)."""
    found = []
    for identifier in lake.tables("bronze"):
        table = lake.table(identifier)
        keep = referenced_files(table)
        location = table.metadata.location.split("://", 1)[-1].strip("/")
        found += [path for path in lake.fs.find(f"{location}/data")
                  if path.split("://", 1)[-1].strip("/") not in keep]
    return found


def _rows(lake) -> dict[str, set[tuple] | int]:
    """Per table, its (id, version) pairs; the Patient table's ids are pseudonyms of the lake's
    own keys, and its content hashes are keyed by the lake too, so they are counted."""
    rows: dict[str, set[tuple] | int] = {}
    for identifier in lake.tables("bronze"):
        table = lake.read_arrow(identifier)
        if identifier in {"bronze.patient", "bronze.quarantine"}:
            rows[identifier] = table.num_rows
            continue
        rows[identifier] = set(zip(table.column("id").to_pylist(),
                                   table.column("version_id").to_pylist()))
        assert len(rows[identifier]) == table.num_rows, f"{identifier} holds an id twice"
    return rows


def test_workers_stage_the_same_rows_as_one_process(make_lake, shared_data, monkeypatch):
    monkeypatch.setattr(pipeline, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(pipeline, "TASK_BYTES", 256 << 10)  # many tasks, for both workers
    bundles = sorted((shared_data / "synthea-r4-bundles-smart" / "bundles").glob("*.json"))[:6]
    sources = [*bundles, SAMPLE / "fhir"]
    alone = make_lake("alone", **{"lake.batch_rows": 700})
    together = make_lake("together", **{"lake.batch_rows": 700})
    one = ingest(alone, sources, workers=1)
    two = ingest(together, sources, workers=2)
    assert two.per_type == one.per_type
    assert sum(counts["loaded"] for counts in two.per_type.values()) == two.resources
    assert _rows(together) == _rows(alone)
    # Batches of at most 700 rows: the large types were staged in several files.
    observations = together.table("bronze.observation")
    files = list(observations.scan().plan_files())
    assert len(files) >= one.per_type["Observation"]["loaded"] // 700
    assert _unreferenced(together) == [] and _unreferenced(alone) == []
    assert not together.fs.exists(LOADS_FOLDER) or together.fs.find(LOADS_FOLDER) == []


def test_a_rerun_commits_nothing_and_leaves_no_staged_file(make_lake, monkeypatch):
    lake = make_lake()
    ingest(lake, [SAMPLE / "fhir"], workers=1)
    before = {name: lake.table(name).current_snapshot().snapshot_id
              for name in lake.tables("bronze")}
    again = ingest(lake, [SAMPLE / "fhir"], workers=1)
    assert sum(counts["loaded"] + counts["updated"] for counts in again.per_type.values()) == 0
    assert {name: lake.table(name).current_snapshot().snapshot_id
            for name in lake.tables("bronze")} == before
    assert _unreferenced(lake) == []


def test_newer_versions_are_merged_from_the_staged_files(make_lake):
    lake = make_lake()
    ingest(lake, [EDGE / "history.json"], workers=1)
    report = ingest(lake, [EDGE / "history-older.json"], workers=1)
    assert sum(counts["stale"] for counts in report.per_type.values()) > 0
    assert _unreferenced(lake) == []


def test_a_failed_merge_removes_its_staged_files(make_lake, monkeypatch):
    from dlt_pipelines.fhir import bronze

    lake = make_lake()

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    ingest(lake, [EDGE / "history.json"], workers=1)
    monkeypatch.setattr(bronze, "_commit_plan", broken)
    with pytest.raises(Exception, match="injected failure"):
        ingest(lake, [EDGE / "history-older.json"], workers=1)
    assert _unreferenced(lake) == []


def test_remove_orphans_spares_the_files_of_a_running_load(make_lake):
    lake = make_lake()
    ingest(lake, [EDGE / "history.json"], workers=1)
    identifier = lake.tables("bronze")[0]
    location = lake.table(identifier).metadata.location.split("://", 1)[-1].strip("/")
    with running_load(lake, "test-load"):
        lake.fs.pipe_file(f"{location}/data/staged-by-a-running-load.parquet", b"rows")
        assert remove_orphans(lake, identifier) == 0
        assert lake.fs.exists(f"{location}/data/staged-by-a-running-load.parquet")
    assert remove_orphans(lake, identifier) >= 1  # with the table's older metadata files
    assert not lake.fs.exists(f"{location}/data/staged-by-a-running-load.parquet")
    assert lake.fs.find(LOADS_FOLDER) == []


def test_the_mark_of_a_killed_load_does_not_keep_its_files(make_lake):
    import json
    import socket
    import subprocess

    lake = make_lake()
    ingest(lake, [EDGE / "history.json"], workers=1)
    identifier = lake.tables("bronze")[0]
    location = lake.table(identifier).metadata.location.split("://", 1)[-1].strip("/")
    gone = subprocess.Popen(["true"])
    gone.wait()
    lake.fs.pipe_file(f"{LOADS_FOLDER}/killed.json", json.dumps({
        "load_id": "killed", "host": socket.gethostname(), "pid": gone.pid,
        "started_at": time.time() - 5}).encode())
    lake.fs.pipe_file(f"{location}/data/left-by-a-killed-load.parquet", b"rows")
    assert remove_orphans(lake, identifier) >= 1
    assert not lake.fs.exists(f"{location}/data/left-by-a-killed-load.parquet")
    assert lake.fs.find(LOADS_FOLDER) == []


def test_dlt_carries_the_names_of_staged_batches_and_never_a_resource(make_lake, monkeypatch):
    """What dlt carries for a staged batch is a row naming it, its type and its row count; its
    keys and files stay with the load, and no resource text reaches dlt's files."""
    carried = []
    original = pipeline._Stager._ready

    def recording(self, **options):
        for item, size in original(self, **options):
            carried.append(item.data)
            yield item, size

    monkeypatch.setattr(pipeline._Stager, "_ready", recording)
    lake = make_lake()
    report = ingest(lake, [SAMPLE / "fhir"], workers=1)
    assert len(carried) >= len(report.per_type)
    assert all(table.schema.names == ["unit", "resource_type", "rows"] for table in carried)
    assert sum(table.column("rows")[0].as_py() for table in carried) == report.resources
    stored = lake.read_arrow("bronze.observation", columns=("resource",)).column("resource")
    assert pc.min(pc.utf8_length(stored)).as_py() > 0
