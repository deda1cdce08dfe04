"""The Bulk Data $export client against carelake's own loopback server, on the Synthea sample."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dlt
import msgspec
import pytest

from dlt_pipelines.fhir.auth import BearerToken, SmartBackendServices
from dlt_pipelines.fhir.bulk_export import (
    ExportReport,
    bulk_export_source,
    kick_off_url,
    run_export,
    scrub,
    source_from_settings,
)
from dlt_pipelines.fhir.testing import FhirTestServer, read_ndjson
from dlt_pipelines.fhir.testing.keys import signing_key
from dlt_pipelines.fhir.transport import RetryPolicy
from infra.errors import ConfigError, SourceError
from infra.settings import load_settings

SAMPLE = "synthea-bulk-ndjson-10-patients"


@pytest.fixture(scope="module")
def sample_folder(shared_data) -> Path:
    return shared_data / SAMPLE


@pytest.fixture(scope="module")
def sample(sample_folder: Path) -> list[bytes]:
    return read_ndjson(sample_folder)


def sleeping_policy(sleeps: list[float]) -> RetryPolicy:
    """Sleeps as asked and records each wait, so a test sees Retry-After honoured."""

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    return RetryPolicy(max_retries=2, sleep=sleep, jitter=lambda: 0.0)


def lines_per_type(records: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if record.kind == "resource":
            counts[record.resource_type] = counts.get(record.resource_type, 0) + 1
    return counts


def test_system_export_downloads_every_line(sample_folder: Path, sample: list[bytes]) -> None:
    sleeps: list[float] = []
    report = ExportReport()
    with FhirTestServer(resources=sample, auth="bearer", bearer_token="bulk-token",
                        export_pending_polls=1, export_retry_after="1",
                        export_error_lines=2) as server:
        records = list(run_export(server.base_url, auth=BearerToken("bulk-token"),
                                  policy=sleeping_policy(sleeps), report=report))
        stored = {
            stored.id: stored.body
            for resource_type in server.store.types()
            for stored in server.store.search(resource_type)
        }
        file_requests = server.api_requests(".ndjson")
        deletes = [r for r in server.requests if r.method == "DELETE"]
        (job,) = server.exports.jobs.values()

    expected = {
        path.name.split(".")[0]: sum(1 for line in path.open("rb") if line.strip())
        for path in sample_folder.glob("[A-Z]*.ndjson")
    }
    assert lines_per_type(records) == expected
    assert expected["DocumentReference"] == 1215 and expected["Procedure"] == 2056
    assert sum(expected.values()) == 7160 == report.counts()["resources"]
    assert sleeps == [1.0] and report.polls == 2
    # 13 types in 18 files of at most 1000 lines (Procedure takes 3), and one error file.
    assert report.files == 19 and len(file_requests) == 19
    assert all(r.authorization == "Bearer bulk-token" for r in file_requests)
    errors = [record for record in records if record.is_error]
    assert [e.line_number for e in errors] == [1, 2]
    assert report.error_lines == 2 and report.error_codes == {"processing": 2}
    assert report.status_deleted and job.closed and len(deletes) == 1
    # Every line is the server's bytes, unchanged.
    for record in records[:50] + records[-50:]:
        if record.kind == "resource":
            assert record.body == stored[msgspec.json.decode(record.body)["id"]]


def test_group_export_with_types(sample: list[bytes]) -> None:
    patients = [msgspec.json.decode(line) for line in sample
                if line.startswith(b'{"resourceType":"Patient"')]
    members = [patients[0]["id"], patients[3]["id"]]
    references = [b'"reference":"Patient/' + member.encode() + b'"' for member in members]
    conditions = sum(
        1 for line in sample if line.startswith(b'{"resourceType":"Condition"')
        and any(reference in line for reference in references)
    )
    report = ExportReport()
    with FhirTestServer(resources=sample, groups={"cohort-a": members},
                        export_retry_after="0") as server:
        records = list(run_export(
            server.base_url, auth=None, level="group", group_id="cohort-a",
            types=["Patient", "Condition", "Organization"], report=report,
            policy=sleeping_policy([]),
        ))
        kick_off = server.api_requests("/$export")[0]
    assert kick_off.path == "/fhir/Group/cohort-a/$export"
    assert kick_off.query == {"_outputFormat": ["application/fhir+ndjson"],
                              "_type": ["Patient,Condition,Organization"]}
    assert lines_per_type(records) == {"Patient": 2, "Condition": conditions}
    assert conditions == 111


def test_since_exports_only_what_changed(sample: list[bytes]) -> None:
    with FhirTestServer(resources=sample, export_retry_after="0") as server:
        first = ExportReport()
        list(run_export(server.base_url, auth=None, types=["Patient"], report=first,
                        policy=sleeping_policy([])))
        server.add(sample[:5])  # five AllergyIntolerances stored again, after the export
        gone = [msgspec.json.decode(line)["id"] for line in sample[5:7]]
        assert all(server.delete("AllergyIntolerance", resource_id) for resource_id in gone)
        second = ExportReport()
        records = list(run_export(server.base_url, auth=None, since=first.transaction_time,
                                  report=second, policy=sleeping_policy([])))
        asked = server.api_requests("/$export")[-1].query["_since"]
    assert first.lines == {"Patient": 13} and first.deletions == 0
    assert asked == [first.transaction_time]
    assert lines_per_type(records) == {"AllergyIntolerance": 5}
    (deleted,) = [record for record in records if record.kind == "deleted"]
    assert deleted.resource_type == "Bundle" and second.deletions == 2
    assert msgspec.json.decode(deleted.body)["entry"] == [
        {"request": {"method": "DELETE", "url": f"AllergyIntolerance/{resource_id}"}}
        for resource_id in gone
    ]


def test_failed_export_reports_the_servers_diagnostics(sample: list[bytes]) -> None:
    fault = "export job failed: disk quota exceeded writing Patient/abc-123 batch 77881"
    with FhirTestServer(resources=sample[:20], export_retry_after="0",
                        export_fail_with=fault) as server:
        with pytest.raises(SourceError) as raised:
            list(run_export(server.base_url, auth=None, policy=sleeping_policy([])))
        deletes = [r for r in server.requests if r.method == "DELETE"]
    message = str(raised.value)
    assert message.startswith("$export status at /fhir/_export/")
    assert message.endswith(
        ": the export failed or was cancelled (HTTP 500: error exception: export job failed: "
        "disk quota exceeded writing Patient/* batch *); start a new export"
    )
    assert "abc-123" not in message and len(deletes) == 1


def test_kick_off_refused_without_credentials(sample: list[bytes]) -> None:
    with FhirTestServer(resources=sample[:20], auth="bearer", bearer_token="t") as server:
        with pytest.raises(SourceError) as raised:
            list(run_export(server.base_url, auth=None, policy=sleeping_policy([])))
    assert str(raised.value) == (
        "$export kick-off at /fhir/$export answered HTTP 401 (error login: authorization "
        "required): check that the server offers Bulk Data export at this level and the "
        "credentials"
    )


def test_kick_off_url_levels() -> None:
    base = "https://fhir.example.org/r4/"
    assert kick_off_url(base) == (
        "https://fhir.example.org/r4/$export?_outputFormat=application/fhir%2Bndjson"
    )
    assert kick_off_url(base, level="patient", types=["Patient", "Observation"],
                        since="2026-01-01T00:00:00Z") == (
        "https://fhir.example.org/r4/Patient/$export?_outputFormat=application/fhir%2Bndjson"
        "&_type=Patient,Observation&_since=2026-01-01T00:00:00Z"
    )
    assert scrub("no match for 0a1b2c3d-0000-4000-8000-00000000abcd in Encounter/e1") == (
        "no match for * in Encounter/*"
    )


def test_dlt_source_keeps_the_transaction_time(tmp_path: Path, sample: list[bytes]) -> None:
    loaded: list[dict[str, Any]] = []

    @dlt.destination(batch_size=1000, name="collected", skip_dlt_columns_and_tables=True)
    def sink(items: list[dict[str, Any]], table: dict[str, Any]) -> None:
        loaded.extend(items)

    pipe = dlt.pipeline(pipeline_name="bulk_incremental",
                        pipelines_dir=str(tmp_path / "pipelines"), destination=sink)
    with FhirTestServer(resources=sample, export_retry_after="0") as server:
        first = ExportReport()
        pipe.run(bulk_export_source(server.base_url, auth=None, types=["Patient", "Device"],
                                    report=first, policy=sleeping_policy([])))
        after_first = len(loaded)
        server.add(sample[:3])
        pipe.run(bulk_export_source(server.base_url, auth=None, report=ExportReport(),
                                    policy=sleeping_policy([])))
        asked = server.api_requests("/$export")[-1].query["_since"]
    state = pipe.state["sources"]["fhir_bulk"]["resources"]["export_lines"]
    assert after_first == 29  # 13 Patients and 16 Devices
    assert asked == [first.transaction_time]
    assert len(loaded) == 32 and {item["resource_type"] for item in loaded[29:]} == {
        "AllergyIntolerance"
    }
    assert loaded[0]["body"] == server.store.search("Patient")[0].body
    assert state["since"] != first.transaction_time


def test_transient_status_failure_is_polled_again(sample: list[bytes]) -> None:
    sleeps: list[float] = []
    report = ExportReport()
    # Request 1 is the kick-off; request 2, the first status poll, answers 503 "transient".
    with FhirTestServer(resources=sample[:20], export_retry_after="0", unavailable=1,
                        unavailable_from=2) as server:
        records = list(run_export(server.base_url, auth=None, report=report,
                                  policy=sleeping_policy(sleeps)))
        statuses = [r.status for r in server.api_requests() if "/_export/" in r.path]
    assert statuses[:3] == [503, 202, 200]
    assert lines_per_type(records) == {"AllergyIntolerance": 11, "Condition": 9}
    assert report.polls == 3 and sleeps == [0.0, 0.0]


def test_export_cancelled_on_the_server_is_reported(sample: list[bytes]) -> None:
    with FhirTestServer(resources=sample[:20], export_retry_after="0",
                        export_pending_polls=5) as server:

        def cancel_on_the_server(seconds: float) -> None:
            for job in server.exports.jobs.values():
                job.closed = True

        policy = RetryPolicy(max_retries=2, sleep=cancel_on_the_server, jitter=lambda: 0.0)
        with pytest.raises(SourceError) as raised:
            list(run_export(server.base_url, auth=None, policy=policy))
    assert str(raised.value).endswith(
        ": the export failed or was cancelled (HTTP 404: error not-found: no such export job); "
        "start a new export"
    )


def test_source_from_settings_group_level(tmp_path: Path, sample: list[bytes]) -> None:
    patient_id = msgspec.json.decode(next(
        line for line in sample if line.startswith(b'{"resourceType":"Patient"')
    ))["id"]
    loaded: list[dict[str, Any]] = []

    @dlt.destination(batch_size=1000, name="collected", skip_dlt_columns_and_tables=True)
    def sink(items: list[dict[str, Any]], table: dict[str, Any]) -> None:
        loaded.extend(items)

    pipe = dlt.pipeline(pipeline_name="bulk_settings",
                        pipelines_dir=str(tmp_path / "pipelines"), destination=sink)
    with FhirTestServer(resources=sample, groups={"g-1": [patient_id]},
                        export_retry_after="0") as server:
        settings = load_settings(data_dir=tmp_path / "lake", environ={
            "CARELAKE_SOURCES__FHIR_BULK__BASE_URL": server.base_url,
            "CARELAKE_SOURCES__FHIR_BULK__LEVEL": "group",
            "CARELAKE_SOURCES__FHIR_BULK__GROUP_ID": "g-1",
            "CARELAKE_SOURCES__FHIR_BULK__TYPES": "Patient",
            "CARELAKE_SOURCES__FHIR_BULK__POLL_INTERVAL_S": "0",
        })
        report = ExportReport()
        pipe.run(source_from_settings(settings, report=report))
    assert report.lines == {"Patient": 1} and len(loaded) == 1
    assert msgspec.json.decode(loaded[0]["body"])["id"] == patient_id


def test_group_level_without_a_group_id_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "lake", environ={
        "CARELAKE_SOURCES__FHIR_BULK__BASE_URL": "https://bulk.example.org/fhir",
        "CARELAKE_SOURCES__FHIR_BULK__LEVEL": "group",
    })
    with pytest.raises(ConfigError, match="set sources.fhir_bulk.group_id"):
        source_from_settings(settings)


def test_token_never_sent_to_files_on_another_host(sample: list[bytes]) -> None:
    with FhirTestServer(resources=sample[:20], auth="bearer", bearer_token="t",
                        export_retry_after="0", export_files_host="localhost") as server:
        with pytest.raises(SourceError) as raised:
            list(run_export(server.base_url, auth=BearerToken("t"),
                            policy=sleeping_policy([])))
        file_requests = server.api_requests(".ndjson")
        deletes = [r for r in server.requests if r.method == "DELETE"]
    assert str(raised.value).startswith(
        "export file 1 lives on another host than the FHIR server and needs our access token"
    )
    assert file_requests == [] and len(deletes) == 1


def test_files_without_requires_access_token_go_without_one(sample: list[bytes]) -> None:
    with FhirTestServer(resources=sample[:20], export_retry_after="0",
                        export_files_host="localhost") as server:
        records = list(run_export(server.base_url, auth=BearerToken("not-for-files"),
                                  policy=sleeping_policy([])))
        file_requests = server.api_requests(".ndjson")
        kick_off = server.api_requests("/$export")[0]
    assert lines_per_type(records) == {"AllergyIntolerance": 11, "Condition": 9}
    assert kick_off.authorization == "Bearer not-for-files"
    assert [r.authorization for r in file_requests] == ["", ""]


def test_export_with_smart_backend_services(sample: list[bytes]) -> None:
    key = signing_key("ES384")
    report = ExportReport()
    with FhirTestServer(resources=sample, auth="smart", smart_clients={"bulk": key.public_pem},
                        export_retry_after="0") as server:
        auth = SmartBackendServices(token_url=server.token_url, client_id="bulk",
                                    private_key=key.private_pem, algorithm="ES384")
        records = list(run_export(server.base_url, auth=auth, types=["Encounter"],
                                  report=report, policy=sleeping_policy([])))
        file_requests = server.api_requests(".ndjson")
        issued = server.tokens_issued
    assert lines_per_type(records) == {"Encounter": 1215}
    assert [r.line_number for r in records][-1] == 215 and report.files == 2
    assert len(file_requests) == 2 and all(r.status == 200 for r in file_requests)
    assert issued == 1 and auth.tokens_fetched == 1


def test_download_cut_short_is_an_error_not_a_short_file(sample: list[bytes]) -> None:
    yielded: list[Any] = []
    with FhirTestServer(resources=sample[:20], export_retry_after="0",
                        export_cut_files=True) as server:
        with pytest.raises(SourceError) as raised:
            for record in run_export(server.base_url, auth=None, types=["Condition"],
                                     policy=sleeping_policy([])):
                yielded.append(record)
        deletes = [r for r in server.requests if r.method == "DELETE"]
    assert str(raised.value) == (
        "export file 1 (Condition) broke off while downloading (RemoteProtocolError): "
        "run the export again"
    )
    assert len(yielded) < 9 and len(deletes) == 1


def test_export_lands_in_bronze_and_applies_deletions(
    tmp_path: Path, sample: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlt_pipelines.fhir.pipeline import ingest
    from dlt_pipelines.fhir.rest_ingest import bulk_resources
    from infra.lake import Lake

    monkeypatch.setenv("CARELAKE_KEYS__KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("CARELAKE_SOURCES__FHIR_BULK__TYPES", "Patient,Condition,Immunization")
    monkeypatch.setenv("CARELAKE_SOURCES__FHIR_BULK__POLL_INTERVAL_S", "0")
    patients = [line for line in sample if line.startswith(b'{"resourceType":"Patient"')]
    condition_id = next(msgspec.json.decode(line)["id"] for line in sample
                        if line.startswith(b'{"resourceType":"Condition"'))
    with FhirTestServer(resources=sample, export_retry_after="0",
                        export_error_lines=1) as server:
        monkeypatch.setenv("CARELAKE_SOURCES__FHIR_BULK__BASE_URL", server.base_url)
        lake = Lake.open(load_settings(data_dir=tmp_path / "lake"))
        first_export = ExportReport()
        first = ingest(lake, [], extra_resources=bulk_resources(lake, report=first_export))
        server.add(patients[:2])
        assert server.delete("Condition", condition_id)
        second_export = ExportReport()
        second = ingest(lake, [], extra_resources=bulk_resources(lake, report=second_export))
        asked = server.api_requests("/$export")[-1].query["_since"]

    assert {t: c["loaded"] for t, c in first.per_type.items()} == {
        "Patient": 13, "Condition": 555, "Immunization": 161,
    }
    assert first_export.error_lines == 1 and first_export.deletions == 0
    assert asked == [first_export.transaction_time]
    assert second_export.lines == {"Patient": 2} and second_export.deletions == 1
    assert {t: (c["updated"], c["deleted"]) for t, c in second.per_type.items()} == {
        "Patient": (2, 0), "Condition": (0, 1),
    }
    assert lake.count("bronze.condition") == 554 and lake.count("bronze.patient") == 13
