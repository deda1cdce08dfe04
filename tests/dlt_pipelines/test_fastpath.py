"""The transform's fast path gives exactly what the full walk gives, on every resource of the
test corpora: the same outcome, the same row, the same stored resource once decoded, the same
count of unresolved references. Sealing is made deterministic for the comparison (the nonce is
derived from the plaintext), so the tokens of both paths are equal too."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from dlt_pipelines.fhir.sources import DECODER, Entry, input_files, read_file
from dlt_pipelines.fhir.transform import ROW_FIELDS, Transformer

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "fhir"
LOADED_AT = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


@pytest.fixture(params=["compiled", "regex"])
def scan_implementation(request, monkeypatch):
    """Each comparison runs with the compiled scan and with its regular-expression reference."""
    from dlt_pipelines.fhir import fastpath

    if request.param == "compiled":
        if fastpath._COMPILED is None:
            pytest.skip("the compiled scan is not built (no C compiler at install)")
        monkeypatch.setattr(fastpath, "scan", fastpath._COMPILED)
    else:
        monkeypatch.setattr(fastpath, "scan", fastpath.scan_regex)
    return request.param


def _transformer(lake) -> Transformer:
    return Transformer(lake.patients, index_key=lake.keys.material("index"), source="test",
                       load_id="load", loaded_at=LOADED_AT)


def _compare(lake, paths: list[Path]) -> Counter:
    """Both paths over every entry of ``paths``; returns how many took the fast path, by type."""
    fast, slow, probe = _transformer(lake), _transformer(lake), _transformer(lake)
    taken: Counter = Counter()
    for path in input_files(paths):
        for entry in read_file(path):
            if entry.body is None:
                continue
            if probe._fast.upsert(dataclasses.replace(entry)) is not None:
                taken[entry.head.resourceType] += 1
            taken["all"] += 1
            one = fast.outcome(dataclasses.replace(entry))
            other = slow.outcome(dataclasses.replace(entry, resource=DECODER.decode(entry.body)))
            where = f"{path.name} {entry.locator}"
            assert (one.kind, one.resource_type, one.reason) == \
                (other.kind, other.resource_type, other.reason), where
            if one.row is None:
                continue
            one_row = dict(zip(ROW_FIELDS, one.row))
            other_row = dict(zip(ROW_FIELDS, other.row))
            assert DECODER.decode(one_row.pop("resource")) == \
                DECODER.decode(other_row.pop("resource")), where
            assert one_row == other_row, where
    assert fast.unresolved_references == slow.unresolved_references
    return taken


def test_sample_takes_the_fast_path_and_agrees(make_lake, deterministic_seal,
                                                scan_implementation):
    taken = _compare(make_lake(), [SAMPLE])
    people = taken["Patient"]
    assert people == 0  # people always take the walk
    assert sum(count for kind, count in taken.items() if kind != "all") >= 0.9 * taken["all"]


@pytest.mark.parametrize("corpus", ["fhir-r4-spec-examples", "synthea-r4-bundles-smart",
                                    "synthea-bulk-ndjson-10-patients",
                                    "synthea-hiv-bundles-fhir-data-pipes",
                                    "synthea-uscore-inferno-bundles"])
def test_corpus_agrees(make_lake, deterministic_seal, shared_data, corpus,
                       scan_implementation):
    folder = shared_data / corpus
    files = input_files([folder])
    taken = _compare(make_lake(), files)
    assert taken["all"] > 0


def test_unresolved_references_are_counted_once(make_lake):
    lake = make_lake()
    body = (b'{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},'
            b'"subject":{"reference":"urn:uuid:missing"},"performer":[{"reference":'
            b'"urn:uuid:gone"}]}')
    from dlt_pipelines.fhir.sources import HEAD_DECODER

    for entry in (Entry(locator="line 1", body=body, head=HEAD_DECODER.decode(body)),
                  Entry(locator="line 1", body=body, head=HEAD_DECODER.decode(body),
                        resource=DECODER.decode(body))):
        transformer = _transformer(lake)
        assert transformer.outcome(entry).kind == "upsert"
        assert transformer.unresolved_references == 2


def test_escaped_and_invalid_values_fall_back_to_the_walk(make_lake):
    lake = make_lake()
    from dlt_pipelines.fhir.sources import HEAD_DECODER

    cases = {
        # an escaped slash in a patient reference: the walk decodes it and pseudonymizes
        b'{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient\\/p1"}}':
            "upsert",
        # a date the walk rejects, with its path
        b'{"resourceType":"Condition","id":"c2","onsetDateTime":"1/1/1980"}': "quarantine",
        # an escaped key that decodes to a date element
        b'{"resourceType":"Condition","id":"c3","onset\\u0044ateTime":"202510"}': "quarantine",
        # a date followed by an escaped newline (a $ in the grammar would let it through)
        b'{"resourceType":"Condition","id":"c5","onsetDateTime":"2024\\n"}': "quarantine",
    }
    for body, kind in cases.items():
        entry = Entry(locator="line 1", body=body, head=HEAD_DECODER.decode(body))
        transformer = _transformer(lake)
        assert transformer._fast.upsert(dataclasses.replace(entry)) is None
        outcome = transformer.outcome(entry)
        assert outcome.kind == kind, body
        if kind == "upsert":
            stored = DECODER.decode(dict(zip(ROW_FIELDS, outcome.row))["resource"])
            assert stored["subject"]["reference"].startswith("Patient/")
            assert stored["subject"]["reference"] != "Patient/p1"
        else:
            assert "onsetDateTime is not a valid FHIR dateTime" in outcome.reason


@pytest.mark.parametrize("value", [b"5", b'{"a":1}', b'["2024-01-01T00:00:00Z"]'])
def test_a_last_updated_that_is_no_string_is_quarantined(make_lake, value):
    from dlt_pipelines.fhir.sources import HEAD_DECODER

    body = b'{"resourceType":"Condition","id":"c","meta":{"lastUpdated":' + value + b"}}"
    entry = Entry(locator="line 1", body=body, head=HEAD_DECODER.decode(body))
    outcome = _transformer(make_lake()).outcome(entry)
    assert outcome.kind == "quarantine"
    assert outcome.reason == "Condition.meta.lastUpdated is not a valid FHIR instant"
