"""Erasure and time travel on real Synthea patients: every table, older snapshots, backups."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import pytest

from dlt_pipelines.fhir.pipeline import ingest
from infra.errors import KeyError_
from infra.forget import forget, resolve_patient
from infra.keys_admin import backup, restore
from infra.lake import Lake
from infra.reidentify import restore_resource
from infra.timetravel import bronze_connection

PHI_SCAN = __import__("pathlib").Path(__file__).resolve().parents[2] / ".." / "shared" / "tools" / \
    "phi_scan.py"


def _patient_files(shared_data):
    folder = shared_data / "synthea-r4-bundles-smart" / "bundles"
    return sorted(folder.glob("*.json"))[:3]


def _sentinels(path) -> list[str]:
    bundle = json.loads(path.read_text())
    patient = next(e["resource"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    values = [patient["name"][0]["family"], *patient["name"][0]["given"], patient["id"]]
    values += [identifier["value"] for identifier in patient.get("identifier", [])]
    values += patient["address"][0]["line"]
    return [value for value in values if len(value) >= 4]


def test_forget_erases_everywhere_and_shreds_older_snapshots(make_lake, shared_data, tmp_path):
    lake = make_lake()
    files = _patient_files(shared_data)
    ingest(lake, files[:2], workers=1)
    key_backup = tmp_path / "keys-backup.json"
    backup(lake, key_backup)
    ingest(lake, files[2:], workers=1)
    forgotten_source = json.loads(files[0].read_text())["entry"][0]["resource"]["id"]
    patient_key = resolve_patient(lake, source_id=f"Patient/{forgotten_source}")
    before = {name: lake.table(name).current_snapshot().snapshot_id
              for name in lake.tables("bronze")}
    old_row = lake.read_arrow("bronze.patient", where=f"id == '{patient_key}'").to_pylist()[0]

    report = forget(lake, patient_key, retention_days=365)  # a legal hold keeps the snapshots

    assert report.key_destroyed and report.rows["bronze"] > 100
    for name in lake.tables("bronze"):
        assert lake.count(name, f"patient_key == '{patient_key}'") == 0, name
    assert lake.count("bronze.patient") == 2
    # The held snapshot still has the rows, but nothing under the patient's key opens.
    held = lake.read_arrow("bronze.patient", snapshot_id=before["bronze.patient"],
                           where=f"id == '{patient_key}'").to_pylist()
    assert held == [old_row]
    with pytest.raises(KeyError_, match="erased"):
        restore_resource(lake, held[0]["resource"], patient_key=patient_key)
    assert lake.patients.key_for_source(f"Patient/{forgotten_source}", create=False) is None

    # A key backup taken before the erasure does not bring the patient back.
    restore(lake.settings, key_backup)
    reopened = Lake.open(lake.settings)
    assert reopened.patients.by_pseudonym(patient_key) is None
    assert len(reopened.patients.pseudonyms()) == 2

    auditor = Lake.open(lake.settings, role="auditor")
    erasures = [e for e in auditor.audit.entries() if e["event"] == "erasure"]
    assert erasures[0]["fields"]["patient_key"] == patient_key


def test_forget_without_hold_removes_old_snapshots_and_files(make_lake, shared_data, tmp_path):
    lake = make_lake()
    files = _patient_files(shared_data)
    ingest(lake, files, workers=1)
    source = json.loads(files[1].read_text())["entry"][0]["resource"]["id"]
    patient_key = resolve_patient(lake, source_id=source)

    report = forget(lake, patient_key, retention_days=0)

    assert report.snapshots_expired > 0 and report.files_removed > 0
    for name in lake.tables("bronze"):
        snapshots = lake.table(name).metadata.snapshots
        assert len(snapshots) == 1, name
    sentinels = tmp_path / "sentinels.txt"
    sentinels.write_text("\n".join(_sentinels(files[1])))
    scan = subprocess.run([sys.executable, str(PHI_SCAN), str(lake.data_dir), "--sentinels",
                           str(sentinels)], capture_output=True, text=True)
    assert scan.returncode == 0, scan.stdout[-2000:]


def test_time_travel_reads_tables_as_of_a_timestamp(make_lake, shared_data):
    lake = make_lake()
    files = _patient_files(shared_data)
    ingest(lake, files[:1], workers=1)
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    ingest(lake, files[1:], workers=1)

    then = bronze_connection(lake, as_of=between)
    now = bronze_connection(lake)
    assert then.sql("select count(*) from bronze.patient").fetchone() == (1,)
    assert now.sql("select count(*) from bronze.patient").fetchone() == (3,)
    snapshot = lake.table("bronze.patient").metadata.snapshots[0].snapshot_id
    one = bronze_connection(lake, snapshot_id=snapshot, table="patient")
    assert one.sql("select count(*) from bronze.patient").fetchone() == (1,)
