"""The compiled scan (``_scan.c``) and its regular-expression reference give the same members and
the same verdicts: on every resource of the corpora, and on dates made to probe the grammar."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from dlt_pipelines.fhir import fastpath
from dlt_pipelines.fhir.sources import input_files, read_file
from dlt_pipelines.fhir.transform import _DATE, _DATE_TIME, _INSTANT

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "fhir"
compiled = fastpath._COMPILED
needs_compiled = pytest.mark.skipif(
    compiled is None, reason="the compiled scan is not built (no C compiler at install)")


def _bodies(folders: list[Path]):
    for path in input_files(folders):
        for entry in read_file(path):
            if entry.body is not None:
                kind = entry.head.resourceType if entry.head else None
                yield entry.body, fastpath._DATE_BY_TYPE.get(kind, b"")


@needs_compiled
def test_both_scans_agree_on_the_sample():
    count = 0
    for body, type_date in _bodies([SAMPLE]):
        assert compiled(body, type_date) == fastpath.scan_regex(body, type_date)
        count += 1
    assert count > 900


@needs_compiled
@pytest.mark.parametrize("corpus", ["fhir-r4-spec-examples", "synthea-r4-bundles-smart",
                                    "synthea-bulk-ndjson-10-patients",
                                    "synthea-hiv-bundles-fhir-data-pipes"])
def test_both_scans_agree_on_the_corpora(shared_data, corpus):
    disagreements = [body[:80] for body, type_date in _bodies([shared_data / corpus])
                     if compiled(body, type_date) != fastpath.scan_regex(body, type_date)]
    assert disagreements == []


def _candidates() -> list[str]:
    rng = random.Random(3)
    valid = ["2024", "2024-05", "2024-05-01", "2024-05-01T10:00:00Z", "2024-05-01T23:59:60+14:00",
             "2024-05-01T00:00:00.123456789-13:59", "0001-01-01", "1900-12-31T12:30:00+05:30"]
    broken = ["202510", "1/1/1980", "2024-5-1", "2024-05-01T10:00:00", "2024-05-01T10:00Z",
              "0000", "2024-13-01", "2024-00-10", "2024-05-32", "2024-05-01T24:00:00Z",
              "2024-05-01T10:60:00Z", "2024-05-01T10:00:61Z", "2024-05-01T10:00:00.Z",
              "2024-05-01T10:00:00.1234567890Z", "2024-05-01T10:00:00+14:01",
              "2024-05-01T10:00:00+15:00", "2024-05-01T10:00:00+0500", "2024-05-01T", "2024-",
              "", "2024-05-01 10:00:00Z", "2024-05-01T10:00:00z", "2024-05-01T10:00:00+05:60"]
    alphabet = "0123456789-:TZ+."
    fuzzed = []
    for text in valid * 40:
        chars = list(text)
        for _ in range(rng.randint(1, 2)):
            position = rng.randrange(len(chars) + 1)
            action = rng.random()
            if action < 0.4 and chars:
                chars[min(position, len(chars) - 1)] = rng.choice(alphabet)
            elif action < 0.7:
                chars.insert(position, rng.choice(alphabet))
            elif chars:
                del chars[min(position, len(chars) - 1)]
        fuzzed.append("".join(chars))
    return valid + broken + fuzzed


@needs_compiled
def test_the_date_grammar_matches_the_regular_expressions():
    cases = {"lastUpdated": _INSTANT, "birthDate": _DATE, "onsetDateTime": _DATE_TIME,
             "expirationDate": _DATE_TIME}
    checked = 0
    for (key, pattern), value in itertools.product(cases.items(), _candidates()):
        body = f'{{"resourceType":"Condition","id":"c","{key}":"{value}"}}'.encode()
        expected = [] if pattern.match(value) else None
        assert compiled(body, b"") == expected, (key, value)
        assert fastpath.scan_regex(body, b"") == expected, (key, value)
        checked += 1
    # The type's own date element (Immunization.expirationDate is a date).
    body = b'{"resourceType":"Immunization","id":"i","expirationDate":"2024-05-01T10:00:00Z"}'
    assert compiled(body, b"expirationDate") is None
    assert fastpath.scan_regex(body, b"expirationDate") is None
    assert checked > 1000


@needs_compiled
@pytest.mark.parametrize("body", [
    b'{"resourceType":"Condition","id":"c","onset\\u0044ateTime":"2024"}',
    b'{"resourceType":"Condition","id":"c","subject":{"reference":"Patient\\/1"}}',
    b'{"resourceType":"Condition","id":"c","onsetDateTime":"20\\u00324"}',
])
def test_escapes_send_the_resource_to_the_walk(body):
    assert compiled(body, b"") is None
    assert fastpath.scan_regex(body, b"") is None


@needs_compiled
def test_members_and_their_positions():
    body = (b'{"resourceType":"DocumentReference","id":"d","text":{"div":"<div>\\"x\\"</div>"},'
            b'"subject": {"reference" : "Patient/p1"},"content":[{"attachment":'
            b'{"contentType":"text/plain","data":"aGk="}}],"note":[{"text":"n"}]}')
    members = compiled(body, b"")
    assert members == fastpath.scan_regex(body, b"")
    kinds = [kind for kind, *_ in members]
    assert kinds == [fastpath.PROTECTED, fastpath.REFERENCE, fastpath.CONTENT_TYPE,
                     fastpath.PROTECTED]
    _, key_start, start, end = members[1]
    assert body[key_start:key_start + 11] == b'"reference"'
    assert body[start:end] == b"Patient/p1"
    assert members[0][2] == -1  # the narrative holds escapes: no value positions
