"""The ingest on real Synthea data and on edge-case files: exact counts, versions, quarantine."""

from __future__ import annotations

import decimal

import msgspec
import pytest

from dlt_pipelines.fhir.pipeline import ingest, open_quarantined
from infra.reidentify import restore_resource

EDGE = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "edge"
DECODE = msgspec.json.Decoder(float_hook=decimal.Decimal)


def _counts(lake, identifier):
    return lake.read_arrow(identifier).num_rows


def test_sample_loads_every_resource_type(sample_lake):
    lake, report = sample_lake
    per_type = {kind: counts["loaded"] for kind, counts in report.per_type.items()}
    assert per_type["Patient"] == 7          # 4 bulk patients + 3 bundle patients
    assert per_type["DocumentReference"] == 101
    assert per_type["Encounter"] == 101 + 22
    assert report.as_json()["quarantined"] == 0
    assert _counts(lake, "bronze.patient") == 7
    assert _counts(lake, "bronze.observation") == per_type["Observation"]


def test_bundle_references_are_normalized_and_patients_pseudonymized(sample_lake):
    lake, _ = sample_lake
    observations = lake.read_arrow("bronze.observation", columns=("resource", "patient_key"))
    patients = set(lake.read_arrow("bronze.patient").column("id").to_pylist())
    for resource_json, patient_key in zip(*[observations.column(c).to_pylist()
                                            for c in ("resource", "patient_key")]):
        assert "urn:uuid:" not in resource_json
        resource = DECODE.decode(resource_json)
        assert resource["subject"]["reference"] == f"Patient/{patient_key}"
        assert patient_key in patients
        assert resource["encounter"]["reference"].startswith("Encounter/")


def test_rerun_adds_nothing(make_lake, shared_data):
    lake = make_lake()
    bundles = sorted((shared_data / "synthea-r4-bundles-smart" / "bundles").glob("*.json"))[:2]
    first = ingest(lake, bundles, workers=1)
    snapshots = {name: lake.table(name).current_snapshot().snapshot_id
                 for name in lake.tables("bronze")}
    second = ingest(lake, bundles, workers=1)
    assert sum(c["loaded"] + c["updated"] for c in second.per_type.values()) == 0
    assert {kind: c["unchanged"] for kind, c in second.per_type.items()} == \
        {kind: c["loaded"] for kind, c in first.per_type.items()}
    assert {name: lake.table(name).current_snapshot().snapshot_id
            for name in lake.tables("bronze")} == snapshots


def test_decimals_keep_their_written_precision(make_lake, shared_data):
    lake = make_lake()
    ingest(lake, [shared_data / "fhir-r4-spec-examples" / "observation-decimal.json",
                  EDGE / "bad-records.ndjson"], workers=1)
    rows = lake.read_arrow("bronze.observation", columns=("id", "resource")).to_pylist()
    by_id = {row["id"]: row["resource"] for row in rows}
    assert '"value":0.700' in by_id["obs-good"]
    assert '"value":1.2E+2' in by_id["obs-sci"]
    spec = by_id["decimal"]
    for written in ('"value":1.0,', '"value":1.00', '"value":1E-22', '"value":1000000000000000000',
                    '"value":1.000000000000000000E-245', '"value":-1.000000000000000000E+245'):
        assert written in spec


def test_bad_records_are_quarantined_with_reasons_and_replayable(make_lake):
    lake = make_lake()
    report = ingest(lake, [EDGE / "bad-records.ndjson"], workers=1)
    assert report.as_json()["quarantined"] == 6
    rows = sorted(lake.read_arrow("bronze.quarantine").to_pylist(), key=lambda r: r["locator"])
    assert [(row["locator"], row["reason"]) for row in rows] == [
        ("line 2", "malformed JSON: Input data was truncated"),
        ("line 3", "Patient.birthDate is not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
        ("line 4", "Patient.birthDate is not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
        ("line 5", "Observation.effectiveDateTime is not a valid FHIR dateTime (a date, or a date "
                   "and time with seconds and a zone)"),
        ("line 6", "resource has no valid resourceType"),
        ("line 7", "Observation has no id (and no urn:uuid fullUrl or Type/id request url to take "
                   "one from)"),
    ]
    assert rows[0]["patient_key"] is None
    patient_key = lake.read_arrow("bronze.patient").column("id")[0].as_py()
    assert rows[3]["patient_key"] == patient_key  # attributable, so erasure reaches it
    assert {row["source"] for row in rows} == {report.as_json()["per_resource_type"] and
                                               rows[0]["source"]}
    key = lake.keys.material("quarantine")
    assert open_quarantined(key, rows[1]["record"]) == \
        b'{"resourceType":"Patient","id":"edge-2","birthDate":"202510"}'
    assert all("edge-" not in (row["reason"] or "") for row in rows)


def test_history_versions_and_deletes(make_lake):
    lake = make_lake()
    first = ingest(lake, [EDGE / "history.json"], workers=1)
    assert first.per_type["Patient"] == {"loaded": 1, "updated": 0, "deleted": 0,
                                         "unchanged": 0, "stale": 1}
    assert first.per_type["Observation"]["deleted"] == 0  # hist-o1 inserted and deleted in one
    patient = lake.read_arrow("bronze.patient").to_pylist()[0]
    assert patient["version_id"] == "2"
    observations = lake.read_arrow("bronze.observation").to_pylist()
    assert [row["id"] for row in observations] == ["hist-o2"]
    assert DECODE.decode(observations[0]["resource"])["subject"]["reference"] == \
        f"Patient/{patient['id']}"

    second = ingest(lake, [EDGE / "history-older.json"], workers=1)
    assert second.per_type["Patient"]["stale"] == 1
    assert second.per_type["Observation"]["updated"] == 1
    assert lake.read_arrow("bronze.patient").to_pylist()[0]["version_id"] == "2"
    assert DECODE.decode(lake.read_arrow("bronze.observation").to_pylist()[0]["resource"])[
        "status"] == "amended"


def test_transaction_requests_are_applied_or_recorded(make_lake):
    lake = make_lake()
    report = ingest(lake, [EDGE / "transaction.json"], workers=1)
    assert report.as_json()["recorded_requests"] == {
        "GET request": 1,
        "conditional DELETE (recorded, not applied)": 1,
        "conditional PUT without an id (recorded, not applied: it needs the server's search)": 1,
    }
    assert report.as_json()["quarantined"] == 0
    assert _counts(lake, "bronze.patient") == 2
    observation = lake.read_arrow("bronze.observation").to_pylist()[0]
    assert observation["id"] == "0b7a3c52-7d51-4d2e-9f0e-6b0f3a1d2c11"
    resource = DECODE.decode(observation["resource"])
    assert resource["subject"]["reference"] == f"Patient/{observation['patient_key']}"
    assert resource["subject"]["display"].startswith("clp1:")
    assert resource["hasMember"] == [{"reference": "#inner"}]
    encounter = DECODE.decode(lake.read_arrow("bronze.encounter").to_pylist()[0]["resource"])
    assert encounter["serviceProvider"]["reference"] == \
        "Organization?identifier=http://example.org|hospital"

    original = restore_resource(lake, observation["resource"],
                                patient_key=observation["patient_key"])
    assert original["subject"] == {"reference": "Patient/9c8f0a41-52d3-4b1e-8a77-3e2d1c0b9a01",
                                   "display": "Transactiontestname Person"}


def test_every_spec_example_loads_or_is_quarantined(make_lake, shared_data):
    lake = make_lake()
    folder = shared_data / "fhir-r4-spec-examples"
    report = ingest(lake, [folder], workers=1).as_json()
    assert report["files"] == 108
    assert report["resources"] == 145
    assert report["quarantine_reasons"] == {
        "Patient has no id (and no urn:uuid fullUrl or Type/id request url to take one from)": 1}
    assert sum(report["recorded_requests"].values()) == 16


@pytest.mark.parametrize("name", ["patient-example.json", "patient-example-f001-pieter.json",
                                  "documentreference-example.json", "patient-example-chinese.json",
                                  "patient-glossy-example.json"])
def test_reidentification_restores_the_exact_resource(make_lake, shared_data, name):
    lake = make_lake()
    path = shared_data / "fhir-r4-spec-examples" / name
    ingest(lake, [path], workers=1)
    document = DECODE.decode(path.read_bytes())
    originals = [entry["resource"] for entry in document.get("entry", []) if "resource" in entry] \
        if document["resourceType"] == "Bundle" else [document]
    for original in originals:
        if original["resourceType"] not in {"Patient", "DocumentReference"}:
            continue
        rows = lake.read_arrow(f"bronze.{original['resourceType'].lower()}").to_pylist()
        restored = [restore_resource(lake, row["resource"], patient_key=row["patient_key"])
                    for row in rows]
        assert original in restored


def test_quarantine_replay_after_the_code_is_fixed(make_lake, monkeypatch):
    from dlt_pipelines.fhir import transform
    from dlt_pipelines.fhir.commands import replay

    lake = make_lake()
    ingest(lake, [EDGE / "bad-records.ndjson"], workers=1)
    # Suppose the code is fixed to accept a time without a zone: the replay loads that record.
    lenient = transform._DATE_TIME.pattern.replace("(Z|(\\+|-)", "(Z?|(\\+|-)")
    monkeypatch.setattr(transform, "_DATE_TIME", __import__("re").compile(lenient))
    result = replay(lake)
    assert result == {"replayed": 6, "loaded": 1, "still_quarantined": 5}
    assert "obs-nozone" in lake.read_arrow("bronze.observation").column("id").to_pylist()
    rows = lake.read_arrow("bronze.quarantine").to_pylist()
    assert sum(1 for row in rows if row["replayed_load_id"]) == 6
    assert sum(1 for row in rows if not row["replayed_load_id"]) == 5


def test_gzipped_bundles_and_hiv_bundles_load(make_lake, shared_data, tmp_path):
    import gzip

    lake = make_lake()
    folder = shared_data / "synthea-hiv-bundles-fhir-data-pipes"
    bundles = sorted(folder.rglob("*.json"))
    zipped = tmp_path / "inputs" / "first.json.gz"
    zipped.parent.mkdir()
    zipped.write_bytes(gzip.compress(bundles[0].read_bytes()))
    report = ingest(lake, [zipped, *bundles[1:]], workers=1).as_json()
    assert report["files"] == len(bundles)
    assert report["quarantined"] == 0
    patient_bundles = list((folder / "bundles").glob("*.json"))
    assert report["per_resource_type"]["Patient"]["loaded"] == len(patient_bundles)
    # CIEL codes labelled as LOINC are kept exactly as written (a dbt test flags them).
    codes = lake.duckdb().sql(
        "select json_extract_string(resource, '$.code.coding[0].system') as system, "
        "json_extract_string(resource, '$.code.coding[0].code') as code "
        f"from {lake.scan_sql('bronze.observation')}").fetchall()
    assert codes and all(system == "http://loinc.org" for system, _ in codes)
    loinc = __import__("re").compile(r"^\d{1,5}-\d$")
    assert sum(not loinc.match(code) for _, code in codes) > len(codes) // 2  # CIEL ids


def test_maintenance_compacts_and_expires(make_lake):
    from infra.maintenance import maintain

    lake = make_lake()
    for name in ("history.json", "history-older.json", "transaction.json"):
        ingest(lake, [EDGE / name], workers=1)
    before = lake.count("bronze.patient")
    reports = {report.table: report for report in maintain(lake, snapshot_days=0)}
    assert reports["bronze.patient"].expired_snapshots >= 1
    assert reports["bronze.patient"].removed_files >= 1
    assert lake.count("bronze.patient") == before
    assert len(lake.table("bronze.patient").metadata.snapshots) == 1


def test_export_patient_is_a_bundle_of_the_original_resources(make_lake):
    from infra.lake import Lake
    from infra.reidentify import export_patient

    lake = make_lake()
    ingest(lake, [EDGE / "history.json"], workers=1)
    patient_key = lake.read_arrow("bronze.patient").column("id")[0].as_py()
    reidentifier = Lake.open(lake.settings, role="reidentifier")
    bundle = export_patient(reidentifier, patient_key, reason="subject access request 42")
    assert bundle["type"] == "collection"
    assert sorted(entry["fullUrl"] for entry in bundle["entry"]) == [
        "Observation/hist-o2", "Patient/hist-1"]
    observation = next(e["resource"] for e in bundle["entry"]
                       if e["resource"]["resourceType"] == "Observation")
    # The absolute reference named an entry of the same bundle, so the ingest resolved it.
    assert observation["subject"] == {"reference": "Patient/hist-1"}
    audit = Lake.open(lake.settings, role="auditor").audit.entries()
    assert audit[-1]["event"] == "reidentification"
    assert audit[-1]["fields"]["resources"] == 2
