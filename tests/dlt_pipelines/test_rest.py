"""The FHIR REST source against carelake's own loopback FHIR server, on the Synthea bulk sample."""

from __future__ import annotations

import argparse
import io
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dlt
import msgspec
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from dlt_pipelines.fhir.auth import (
    BearerToken,
    SmartBackendServices,
    auth_from_config,
    open_client,
)
from dlt_pipelines.fhir.check import register
from dlt_pipelines.fhir.rest import (
    SearchReport,
    fhir_rest_source,
    iter_search_pages,
    source_from_settings,
)
from dlt_pipelines.fhir.testing import FhirTestServer, read_ndjson
from dlt_pipelines.fhir.testing.keys import self_signed_loopback_cert, signing_key
from dlt_pipelines.fhir.transport import RetryPolicy, retry_after_seconds, safe_url
from infra.errors import ConfigError, SourceError
from infra.settings import load_settings

SAMPLE = "synthea-bulk-ndjson-10-patients"


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> dict[str, list[bytes]]:
    folder = shared_data / SAMPLE
    return {
        resource_type: read_ndjson(folder, types=[resource_type])
        for resource_type in ("Patient", "Condition", "MedicationRequest")
    }


def no_wait(sleeps: list[float] | None = None, *, max_retries: int = 5) -> RetryPolicy:
    """A retry policy that records its waits instead of sleeping, with no jitter."""
    record = sleeps if sleeps is not None else []
    return RetryPolicy(max_retries=max_retries, sleep=record.append, jitter=lambda: 0.0)


def entry_ids(pages: list[Any]) -> list[str]:
    ids = []
    for page in pages:
        bundle = msgspec.json.decode(page.body)
        ids.extend(entry["resource"]["id"] for entry in bundle.get("entry", []))
    return ids


def line_ids(lines: list[bytes]) -> list[str]:
    return [msgspec.json.decode(line)["id"] for line in lines]


# -- paging -----------------------------------------------------------------------------------


def test_pages_every_resource_through_next_links(sample: dict[str, list[bytes]]) -> None:
    resources = sample["Patient"] + sample["Condition"] + sample["MedicationRequest"]
    report = SearchReport()
    with FhirTestServer(resources=resources) as server:
        pages = list(iter_search_pages(
            server.base_url, ["Patient", "Condition", "MedicationRequest"], auth=None,
            page_size=200, policy=no_wait(), report=report,
        ))
        counts = {t: server.api_requests(f"/{t}") for t in ("Condition", "MedicationRequest")}

    by_type = {t: [p for p in pages if p.resource_type == t] for t in report.types}
    assert [len(by_type[t]) for t in ("Patient", "Condition", "MedicationRequest")] == [1, 3, 9]
    assert [p.entries for p in by_type["Condition"]] == [200, 200, 155]
    assert {t: r.entries for t, r in report.types.items()} == {
        "Patient": 13, "Condition": 555, "MedicationRequest": 1745,
    }
    assert report.warning_count == 0
    assert all(r.complete for r in report.types.values())
    assert sorted(entry_ids(by_type["Condition"])) == sorted(line_ids(sample["Condition"]))
    assert len(counts["Condition"]) == 3 and len(counts["MedicationRequest"]) == 9
    assert counts["Condition"][0].query["_count"] == ["200"]
    assert [p.number for p in by_type["MedicationRequest"]] == list(range(1, 10))
    # The bodies are the server's bytes: Synthea's "1.0" doses stay "1.0" in all 332 places.
    assert sum(p.body.count(b'"value":1.0}') for p in by_type["MedicationRequest"]) == 332
    assert by_type["Condition"][1].url.endswith("/fhir/Condition?_count=200&_getpagesoffset=200")


def test_decimals_keep_their_written_precision() -> None:
    observation = (
        b'{"resourceType":"Observation","id":"obs-decimal","status":"final",'
        b'"code":{"text":"potassium"},"valueQuantity":{"value":0.700,"unit":"mmol/L"},'
        b'"referenceRange":[{"low":{"value":3.50},"high":{"value":5.10e0}}]}'
    )
    with FhirTestServer(resources=[observation]) as server:
        (page,) = iter_search_pages(server.base_url, ["Observation"], auth=None, page_size=10)
    assert b'"valueQuantity":{"value":0.700,"unit":"mmol/L"}' in page.body
    assert b'{"low":{"value":3.50},"high":{"value":5.10e0}}' in page.body
    assert page.last_updated_max == "2026-01-01T00:00:00.000Z"


# -- incremental loads in a dlt pipeline ---------------------------------------------------


class Collected:
    """A dlt destination that keeps what was loaded, so the test can count it."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.failing = False

        @dlt.destination(batch_size=500, name="collected", skip_dlt_columns_and_tables=True)
        def sink(items: list[dict[str, Any]], table: dict[str, Any]) -> None:
            if self.failing:
                raise RuntimeError("destination unavailable")
            self.items.extend(items)

        self.destination = sink

    def entries(self, resource_type: str) -> int:
        return sum(i["entries"] for i in self.items if i["resource_type"] == resource_type)


def pipeline(tmp_path: Path, collected: Collected) -> Any:
    return dlt.pipeline(
        pipeline_name="rest_incremental", pipelines_dir=str(tmp_path / "pipelines"),
        destination=collected.destination,
    )


def marks(pipe: Any) -> dict[str, str | None]:
    resources = pipe.state.get("sources", {}).get("fhir_rest", {}).get("resources", {})
    return {name: state.get("last_updated") for name, state in resources.items()}


def test_incremental_second_run_fetches_only_newer(
    tmp_path: Path, sample: dict[str, list[bytes]]
) -> None:
    collected = Collected()
    pipe = pipeline(tmp_path, collected)
    with FhirTestServer(resources=sample["Patient"] + sample["Condition"]) as server:
        types = ["Patient", "Condition"]
        pipe.run(fhir_rest_source(server.base_url, types, auth=None, page_size=100,
                                  policy=no_wait()))
        first = {t: collected.entries(t) for t in types}
        after_first = marks(pipe)

        collected.items.clear()
        server.add(sample["Condition"][:7])  # seven Conditions updated again, later
        pipe.run(fhir_rest_source(server.base_url, types, auth=None, page_size=100,
                                  policy=no_wait()))
        second = {t: collected.entries(t) for t in types}
        asked = server.api_requests("/Condition")[-1].query["_lastUpdated"]

        collected.items.clear()
        pipe.run(fhir_rest_source(server.base_url, types, auth=None, page_size=100,
                                  policy=no_wait()))
        third = {t: collected.entries(t) for t in types}

    assert first == {"Patient": 13, "Condition": 555}
    # 568 resources one second apart from 2026-01-01T00:00:00Z, the 13 Patients first.
    assert after_first == {"patient": "2026-01-01T00:00:12.000Z",
                           "condition": "2026-01-01T00:09:27.000Z"}
    assert asked == ["gt2026-01-01T00:09:27.000Z"]
    assert second == {"Patient": 0, "Condition": 7}
    assert marks(pipe)["condition"] == "2026-01-01T00:09:34.000Z"
    assert third == {"Patient": 0, "Condition": 0}


def test_failed_extract_keeps_the_mark(tmp_path: Path, sample: dict[str, list[bytes]]) -> None:
    collected = Collected()
    pipe = pipeline(tmp_path, collected)
    with FhirTestServer(resources=sample["Condition"], unavailable=10, unavailable_from=3) as srv:
        source = fhir_rest_source(srv.base_url, ["Condition"], auth=None, page_size=100,
                                  policy=no_wait(max_retries=2))
        with pytest.raises(PipelineStepFailed) as failed:
            pipe.run(source)
        assert "failed 3 times" in str(failed.value)
        assert marks(pipe) == {}

        srv.unavailable = 0
        pipe.run(fhir_rest_source(srv.base_url, ["Condition"], auth=None, page_size=100,
                                  policy=no_wait()))
    assert collected.entries("Condition") == 555
    assert marks(pipe) == {"condition": "2026-01-01T00:09:14.000Z"}


def test_failed_load_is_finished_before_the_next_extract(
    tmp_path: Path, sample: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "1")  # give up on the first failure
    collected = Collected()
    pipe = pipeline(tmp_path, collected)
    with FhirTestServer(resources=sample["Patient"]) as server:
        collected.failing = True
        with pytest.raises(PipelineStepFailed) as failed:
            pipe.run(fhir_rest_source(server.base_url, ["Patient"], auth=None, page_size=5))
        assert failed.value.step == "load"
        assert collected.entries("Patient") == 0
        assert marks(pipe) == {"patient": "2026-01-01T00:00:12.000Z"}

        # The next run only loads the pending package: its pages are the ones the mark covers.
        collected.failing = False
        pipe.run(fhir_rest_source(server.base_url, ["Patient"], auth=None, page_size=5))
        searches_after_second = len(server.api_requests("/Patient"))
        pipe.run(fhir_rest_source(server.base_url, ["Patient"], auth=None, page_size=5))
        last_search = server.api_requests("/Patient")[-1].query
    assert collected.entries("Patient") == 13
    assert [item["page_number"] for item in collected.items] == [1, 2, 3, 1]
    assert searches_after_second == 3
    assert last_search["_lastUpdated"] == ["gt2026-01-01T00:00:12.000Z"]


# -- faults ---------------------------------------------------------------------------------


def test_rate_limit_is_retried_after_the_servers_wait(sample: dict[str, list[bytes]]) -> None:
    sleeps: list[float] = []
    with FhirTestServer(resources=sample["Patient"], rate_limited=2, retry_after="1") as server:
        pages = list(iter_search_pages(server.base_url, ["Patient"], auth=None, page_size=50,
                                       policy=no_wait(sleeps)))
        statuses = [r.status for r in server.api_requests("/Patient")]
    assert sleeps == [1.0, 1.0]
    assert statuses == [429, 429, 200]
    assert [p.entries for p in pages] == [13]


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Sun, 01 Mar 2026 12:00:07 GMT", now=now) == 7.0
    assert retry_after_seconds("Sun, 01 Mar 2026 11:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("120", now=now) == 120.0
    assert retry_after_seconds("soon", now=now) is None


def test_unavailable_once_then_served(sample: dict[str, list[bytes]]) -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=3, base_delay_s=0.5, sleep=sleeps.append,
                         jitter=lambda: 0.5)
    with FhirTestServer(resources=sample["Patient"], unavailable=1) as server:
        pages = list(iter_search_pages(server.base_url, ["Patient"], auth=None, page_size=50,
                                       policy=policy))
    assert sleeps == [0.25]  # half of the first back-off step, 0.5 s
    assert pages[0].entries == 13


def test_server_errors_exhaust_retries(sample: dict[str, list[bytes]]) -> None:
    sleeps: list[float] = []
    with FhirTestServer(resources=sample["Patient"], unavailable=100) as server:
        with pytest.raises(SourceError) as raised:
            list(iter_search_pages(server.base_url, ["Patient"], auth=None, page_size=50,
                                   policy=no_wait(sleeps, max_retries=3)))
        attempts = len(server.api_requests("/Patient"))
    assert str(raised.value) == (
        "GET /fhir/Patient failed 4 times (last: HTTP 503): the server is overloaded or down; "
        "try again later or raise sources.fhir_rest.max_retries"
    )
    assert attempts == 4 and len(sleeps) == 3


@pytest.mark.parametrize(
    ("fault", "warning"),
    [
        ("loop", "broken next link: loops back to a page already read"),
        ("gone", "broken next link: HTTP 410"),
        ("off_host", "broken next link: points off the base URL's host"),
    ],
)
def test_broken_next_link_is_detected(
    sample: dict[str, list[bytes]], fault: str, warning: str
) -> None:
    report = SearchReport()
    with FhirTestServer(resources=sample["Condition"], broken_next_link=fault) as server:
        pages = list(iter_search_pages(server.base_url, ["Condition"], auth=None,
                                       page_size=100, policy=no_wait(), report=report))
        requests = server.api_requests("/Condition")
    assert [p.entries for p in pages] == [100]
    assert report.types["Condition"].warnings == [warning]
    assert report.types["Condition"].complete is False
    assert len(requests) == (2 if fault == "gone" else 1)


def test_broken_next_link_keeps_the_mark(tmp_path: Path, sample: dict[str, list[bytes]]) -> None:
    collected = Collected()
    pipe = pipeline(tmp_path, collected)
    report = SearchReport()
    with FhirTestServer(resources=sample["Condition"], broken_next_link="gone") as server:
        pipe.run(fhir_rest_source(server.base_url, ["Condition"], auth=None, page_size=100,
                                  policy=no_wait(), report=report))
    assert collected.entries("Condition") == 100
    assert report.warning_count == 1
    assert marks(pipe) == {"condition": None}


def test_total_larger_than_the_pages_is_reported(sample: dict[str, list[bytes]]) -> None:
    report = SearchReport()
    with FhirTestServer(resources=sample["Patient"], total_excess=4) as server:
        pages = list(iter_search_pages(server.base_url, ["Patient"], auth=None, page_size=5,
                                       policy=no_wait(), report=report))
    assert [p.entries for p in pages] == [5, 5, 3]
    assert report.types["Patient"].warnings == [
        "total mismatch: Bundle.total is 17, the pages held 13"
    ]
    assert report.counts()["warnings"] == 1 and report.types["Patient"].complete


def test_safe_url_masks_values_that_may_identify_a_patient() -> None:
    url = "https://fhir.example.org/r4/Observation?patient=Patient/123&_count=50&code=1234-5"
    assert safe_url(url) == "https://fhir.example.org/r4/Observation?patient=*&_count=50&code=*"


# -- auth -----------------------------------------------------------------------------------


def test_bearer_token_accepted_and_bad_token_rejected(sample: dict[str, list[bytes]]) -> None:
    with FhirTestServer(resources=sample["Patient"], auth="bearer",
                        bearer_token="s3cret-token") as server:
        pages = list(iter_search_pages(server.base_url, ["Patient"],
                                       auth=BearerToken("s3cret-token"), page_size=50))
        with pytest.raises(SourceError) as raised:
            list(iter_search_pages(server.base_url, ["Patient"], auth=BearerToken("wrong"),
                                   page_size=50))
        sent = server.api_requests("/Patient")[0].authorization
    assert pages[0].entries == 13
    assert sent == "Bearer s3cret-token"
    assert "answered HTTP 401: the server refused our credentials" in str(raised.value)
    assert "wrong" not in str(raised.value)


def test_basic_auth_from_dlt_secrets(
    sample: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__FHIR_REST__USERNAME", "carelake")
    monkeypatch.setenv("SOURCES__FHIR_REST__PASSWORD", "p4ss:word")
    auth = auth_from_config({"auth": "basic"})
    with FhirTestServer(resources=sample["Patient"], auth="basic", basic_user="carelake",
                        basic_password="p4ss:word") as server:
        pages = list(iter_search_pages(server.base_url, ["Patient"], auth=auth, page_size=50))
        monkeypatch.setenv("SOURCES__FHIR_REST__PASSWORD", "guess")
        with pytest.raises(SourceError, match="HTTP 401"):
            list(iter_search_pages(server.base_url, ["Patient"],
                                   auth=auth_from_config({"auth": "basic"}), page_size=50))
    assert pages[0].entries == 13


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_smart_backend_services_token_cached_and_refreshed_once(
    sample: dict[str, list[bytes]], algorithm: str
) -> None:
    key = signing_key(algorithm)
    with FhirTestServer(resources=sample["Patient"], auth="smart",
                        smart_clients={"carelake-test": key.public_pem}) as server:
        auth = SmartBackendServices(token_url=server.token_url, client_id="carelake-test",
                                    private_key=key.private_pem, algorithm=algorithm,
                                    key_id="k1")
        with open_client(auth=auth) as client:
            first = list(iter_search_pages(server.base_url, ["Patient"], auth=None,
                                           page_size=5, client=client))
            server.revoke_tokens()
            second = list(iter_search_pages(server.base_url, ["Patient"], auth=None,
                                            page_size=5, client=client))
        statuses = [r.status for r in server.api_requests("/Patient")]
        issued = server.tokens_issued
    assert [p.entries for p in first] == [5, 5, 3] == [p.entries for p in second]
    assert auth.tokens_fetched == 2 and issued == 2
    assert statuses == [200, 200, 200, 401, 200, 200, 200]


def test_smart_assertion_signed_with_the_wrong_key_is_refused(
    sample: dict[str, list[bytes]],
) -> None:
    registered, other = signing_key("RS384"), signing_key("RS384")
    with FhirTestServer(resources=sample["Patient"], auth="smart",
                        smart_clients={"carelake-test": registered.public_pem}) as server:
        auth = SmartBackendServices(token_url=server.token_url, client_id="carelake-test",
                                    private_key=other.private_pem)
        with pytest.raises(SourceError) as raised:
            list(iter_search_pages(server.base_url, ["Patient"], auth=auth, page_size=5))
        issued = server.tokens_issued
    assert str(raised.value).startswith(
        "SMART token endpoint /auth/token refused the client credentials (HTTP 401 invalid_client)"
    )
    assert issued == 0


def test_smart_from_config_discovers_the_token_endpoint(
    sample: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = signing_key("ES384")
    monkeypatch.setenv("SOURCES__FHIR_REST__PRIVATE_KEY", key.private_pem)
    with FhirTestServer(resources=sample["Patient"], auth="smart",
                        smart_clients={"svc": key.public_pem}) as server:
        auth = auth_from_config({"auth": "smart", "client_id": "svc", "algorithm": "ES384"},
                                base_url=server.base_url)
        pages = list(iter_search_pages(server.base_url, ["Patient"], auth=auth, page_size=50))
        token_url = server.token_url
    assert isinstance(auth, SmartBackendServices) and auth.token_url == token_url
    assert pages[0].entries == 13


# -- TLS ------------------------------------------------------------------------------------


def test_self_signed_certificate_rejected_unless_its_ca_is_given(
    tmp_path: Path, sample: dict[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed_loopback_cert(tmp_path)
    with FhirTestServer(resources=sample["Patient"], tls=(cert, key)) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        with pytest.raises(SourceError, match="TLS certificate failed verification"):
            list(iter_search_pages(server.base_url, ["Patient"], auth=None, page_size=50,
                                   policy=no_wait()))
        trusted = list(iter_search_pages(server.base_url, ["Patient"], auth=None,
                                         page_size=50, ca_bundle=str(cert)))
        with caplog.at_level(logging.WARNING, logger="dlt_pipelines.fhir.auth"):
            unverified = list(iter_search_pages(server.base_url, ["Patient"], auth=None,
                                                page_size=50, verify_tls=False))
    assert trusted[0].entries == 13 == unverified[0].entries
    assert any("TLS verification is OFF" in r.getMessage() for r in caplog.records)


def test_source_from_settings_and_environment_secrets(
    tmp_path: Path, sample: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__FHIR_REST__TOKEN", "from-the-environment")
    collected = Collected()
    pipe = pipeline(tmp_path, collected)
    with FhirTestServer(resources=sample["Patient"] + sample["Condition"], auth="bearer",
                        bearer_token="from-the-environment") as server:
        settings = load_settings(data_dir=tmp_path / "lake", environ={
            "CARELAKE_SOURCES__FHIR_REST__BASE_URL": server.base_url,
            "CARELAKE_SOURCES__FHIR_REST__RESOURCE_TYPES": "Patient, Condition",
            "CARELAKE_SOURCES__FHIR_REST__AUTH": "bearer",
            "CARELAKE_SOURCES__FHIR_REST__PAGE_SIZE": "250",
        })
        report = SearchReport()
        source = source_from_settings(settings, report=report)
        pipe.run(source)
    assert sorted(source.resources) == ["condition", "patient"]
    assert {t: r.pages for t, r in report.types.items()} == {"Patient": 1, "Condition": 3}
    assert collected.entries("Patient") + collected.entries("Condition") == 568


def test_settings_without_a_base_url_say_what_to_set(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "lake", environ={})
    with pytest.raises(ConfigError, match="CARELAKE_SOURCES__FHIR_REST__BASE_URL="):
        source_from_settings(settings)


@pytest.mark.parametrize(("lifetime_s", "tokens"), [(300, 1), (30, 3)])
def test_smart_token_reused_until_it_nears_expiry(
    sample: dict[str, list[bytes]], lifetime_s: int, tokens: int
) -> None:
    key = signing_key("ES384")
    with FhirTestServer(resources=sample["Patient"], auth="smart", token_lifetime_s=lifetime_s,
                        smart_clients={"svc": key.public_pem}) as server:
        auth = SmartBackendServices(token_url=server.token_url, client_id="svc",
                                    private_key=key.private_pem, algorithm="ES384")
        pages = list(iter_search_pages(server.base_url, ["Patient"], auth=auth, page_size=5))
        statuses = [r.status for r in server.api_requests("/Patient")]
    # A token is dropped 30 s before the server says it expires: a 30 s token is never reused.
    assert [p.entries for p in pages] == [5, 5, 3]
    assert statuses == [200, 200, 200]
    assert auth.tokens_fetched == tokens == server.tokens_issued


def test_server_filters_last_updated_ranges(sample: dict[str, list[bytes]]) -> None:
    with FhirTestServer(resources=sample["Patient"]) as server:
        with open_client(auth=None) as client:
            answer = client.get(f"{server.base_url}/Patient", params=[
                ("_lastUpdated", "ge2026-01-01T00:00:03Z"),
                ("_lastUpdated", "lt2026-01-01T00:00:08Z"),
                ("_count", "3"),
            ])
    bundle = msgspec.json.decode(answer.content)
    assert answer.status_code == 200 and bundle["total"] == 5
    assert [e["resource"]["meta"]["lastUpdated"] for e in bundle["entry"]] == [
        "2026-01-01T00:00:03.000Z", "2026-01-01T00:00:04.000Z", "2026-01-01T00:00:05.000Z",
    ]
    assert [link["relation"] for link in bundle["link"]] == ["self", "next"]
    assert bundle["entry"][0]["resource"]["meta"]["profile"] == [
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    ]


def test_replayed_smart_assertion_is_refused(sample: dict[str, list[bytes]]) -> None:
    key = signing_key("RS384")
    with FhirTestServer(resources=sample["Patient"], auth="smart",
                        smart_clients={"svc": key.public_pem}) as server:
        auth = SmartBackendServices(token_url=server.token_url, client_id="svc",
                                    private_key=key.private_pem)
        assertion = auth.assertion()
        form = {"grant_type": "client_credentials", "scope": "system/*.read",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion}
        with open_client(auth=None) as client:
            first = client.post(server.token_url, data=form)
            replayed = client.post(server.token_url, data=form)
    assert first.status_code == 200 and msgspec.json.decode(first.content)["expires_in"] == 300
    assert replayed.status_code == 401
    assert msgspec.json.decode(replayed.content) == {"error": "invalid_client"}


def test_check_fhir_reports_the_server_and_its_counts(
    sample: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    monkeypatch.setenv("SOURCES__FHIR_REST__TOKEN", "check-token")
    monkeypatch.setenv("CARELAKE_SOURCES__FHIR_REST__AUTH", "bearer")
    monkeypatch.setenv("CARELAKE_SOURCES__FHIR_REST__RESOURCE_TYPES", "Patient,Condition,Device")
    monkeypatch.setenv("CARELAKE_LAKE__DATA_DIR", str(tmp_path / "lake"))
    with FhirTestServer(resources=sample["Patient"] + sample["Condition"], auth="bearer",
                        bearer_token="check-token") as server:
        monkeypatch.setenv("CARELAKE_SOURCES__FHIR_REST__BASE_URL", server.base_url)
        args = parser.parse_args(["check-fhir"])
        printed = io.StringIO()
        status = args.handler(args, out=printed)

        monkeypatch.setenv("SOURCES__FHIR_REST__TOKEN", "stale")
        refused = io.StringIO()
        refused_status = args.handler(args, out=refused)
    assert status == 0
    assert printed.getvalue().splitlines() == [
        "server: carelake FHIR test server, FHIR 4.0.1, $export offered",
        "  Patient: 13",
        "  Condition: 555",
        "  Device: 0",
    ]
    assert refused_status == 1
    assert refused.getvalue() == (
        "check-fhir: GET /Patient answered HTTP 401: the server refused our credentials; "
        "check the auth setting and its secrets\n"
    )
    assert not (tmp_path / "lake").exists()


# -- the server in the ingest ----------------------------------------------------------------


def test_server_pages_land_in_bronze_incrementally(
    tmp_path: Path, sample: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlt_pipelines.fhir.pipeline import ingest
    from dlt_pipelines.fhir.rest_ingest import server_resources
    from infra.lake import Lake

    monkeypatch.setenv("CARELAKE_SOURCES__FHIR_REST__RESOURCE_TYPES",
                       "Patient,MedicationRequest,Observation")
    monkeypatch.setenv("CARELAKE_KEYS__KEY_DIR", str(tmp_path / "keys"))
    lake = Lake.open(load_settings(data_dir=tmp_path / "lake"))
    observation = (
        b'{"resourceType":"Observation","id":"obs-decimal","status":"final",'
        b'"code":{"text":"potassium"},"valueQuantity":{"value":0.700,"unit":"mmol/L"}}'
    )
    rejected = b'{"resourceType":"Observation","id":"not a valid id!","status":"final"}'
    resources = sample["Patient"] + sample["MedicationRequest"] + [observation, rejected]
    with FhirTestServer(resources=resources) as server:
        first = ingest(lake, [], extra_resources=server_resources(lake, [server.base_url]))
        server.add(sample["Patient"][:2])
        second = ingest(lake, [], extra_resources=server_resources(lake, [server.base_url]))
        incremental = sorted(r.query["_lastUpdated"][0] for r in server.api_requests()[-3:])

    loaded = {t: c["loaded"] for t, c in first.per_type.items()}
    assert loaded == {"Patient": 13, "MedicationRequest": 1745, "Observation": 1}
    assert {t: (c["loaded"], c["updated"]) for t, c in second.per_type.items()} == {
        "Patient": (0, 2)
    }
    # Each type asked from its own mark; the rejected Observation counts, it was received.
    assert incremental == [
        "gt2026-01-01T00:00:12.000Z", "gt2026-01-01T00:29:17.000Z", "gt2026-01-01T00:29:19.000Z",
    ]
    assert lake.count("bronze.patient") == 13 and lake.count("bronze.quarantine") == 1
    with lake.duckdb() as connection:
        (kept,) = connection.execute(
            f"select resource from {lake.scan_sql('bronze.observation')}"
        ).fetchone()
    assert '"valueQuantity":{"value":0.700,"unit":"mmol/L"}' in kept
