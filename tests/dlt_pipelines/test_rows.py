"""The compiled row builder (``_scan.Rows``) and bundle reader (``_scan.bundle``) give exactly what
the Python ones give: the same tables, column by column and byte by byte, the same quarantine
and the same counts, on every corpus, on inputs made to probe the grammar, and on thousands of
damaged records. Sealing is made repeatable (``deterministic_seal``) so tokens compare equal."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import random
from collections import Counter
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from dlt_pipelines.fhir import pipeline, rows, sources
from dlt_pipelines.fhir.sources import input_files

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "fhir"
EDGE = Path(__file__).resolve().parents[1] / "data" / "edge"
LOADED_AT = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)

needs_compiled = pytest.mark.skipif(
    rows._CompiledRows is None or sources._compiled_bundle is None,
    reason="the compiled extension is not built (no C compiler or OpenSSL headers at install)")

# How each way reads: the compiled builder and bundle reader; the Python builder on the compiled
# bundle reader; and the Python builder on msgspec's reading, the way before either existed.
MODES = {"compiled": (True, True), "python rows": (False, True), "python": (False, False)}


def _transform(lake, files: list[Path], mode: str) -> dict:
    """Every task of ``files`` run in this process the ``mode`` way; what came out, gathered."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return _transform_with(lake, files, mode, monkeypatch)


def _transform_with(lake, files: list[Path], mode: str, monkeypatch) -> dict:
    compiled_rows, compiled_bundle = MODES[mode]
    monkeypatch.setattr(pipeline, "new_rows", functools.partial(rows.new_rows,
                                                                compiled=compiled_rows))
    if not compiled_bundle:
        monkeypatch.setattr(pipeline, "read_bundle", lambda blob: None)
    taken = Counter()
    if compiled_rows:
        original = rows.CompiledRows.__init__

        def counting(self, transformer):
            original(self, transformer)
            add = self.add

            def counted(body, urn_map):
                found = add(body, urn_map)
                taken[found] += 1
                return found

            self.add = counted

        monkeypatch.setattr(rows.CompiledRows, "__init__", counting)
    tables: dict[str, list[pa.Table]] = {}
    out = {"quarantine": [], "recorded": Counter(), "resources": 0, "unresolved": 0}
    for task in pipeline.plan_tasks(files):
        results = pipeline.run_streamed(task, "load", LOADED_AT, lake) if task.streamed else \
            [pipeline.run_task(task, "load", LOADED_AT, lake)]
        for result in results:
            for kind, table in result.tables.items():
                tables.setdefault(kind, []).append(table)
            out["quarantine"] += [(row["locator"], row["resource_type"], row["reason"],
                                   row["patient_key"]) for row in result.quarantine]
            out["recorded"].update(result.recorded)
            out["resources"] += result.resources
            out["unresolved"] += result.unresolved
    out["tables"] = {kind: pa.concat_tables(parts) for kind, parts in tables.items()}
    out["taken"] = taken
    return out


_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


def _decoded(column: pa.ChunkedArray) -> list:
    return [None if text is None else _DECODER.decode(text) for text in column.to_pylist()]


def _assert_same(lake, files: list[Path]) -> dict:
    """All three ways over ``files``: equal results. Returns the compiled way's."""
    results = {mode: _transform(lake, files, mode) for mode in MODES}
    reference = results["python"]
    for mode in ("compiled", "python rows"):
        found = results[mode]
        assert sorted(found["tables"]) == sorted(reference["tables"]), mode
        for kind, table in reference["tables"].items():
            other = found["tables"][kind]
            for name in table.column_names:
                if name == "resource":  # the walk writes a resource again: compare its JSON
                    assert _decoded(other.column(name)) == _decoded(table.column(name)), \
                        (mode, kind, name)
                else:
                    assert other.column(name).to_pylist() == table.column(name).to_pylist(), \
                        (mode, kind, name)
        for key in ("quarantine", "recorded", "resources", "unresolved"):
            assert found[key] == reference[key], (mode, key)
    return results["compiled"]


@needs_compiled
def test_the_sample_gives_the_same_rows_and_most_take_the_compiled_path(
        make_lake, deterministic_seal):
    found = _assert_same(make_lake(), input_files([SAMPLE]))
    assert found["resources"] > 900
    assert found["taken"][True] >= 0.9 * found["resources"]


@needs_compiled
@pytest.mark.parametrize("corpus", ["fhir-r4-spec-examples", "synthea-r4-bundles-smart",
                                    "synthea-bulk-ndjson-10-patients",
                                    "synthea-hiv-bundles-fhir-data-pipes",
                                    "synthea-uscore-inferno-bundles"])
def test_every_corpus_gives_the_same_rows(make_lake, deterministic_seal, shared_data, corpus):
    found = _assert_same(make_lake(), input_files([shared_data / corpus]))
    assert found["resources"] > 0


@needs_compiled
def test_edge_cases_give_the_same_rows(make_lake, deterministic_seal):
    _assert_same(make_lake(), input_files([EDGE]))


def _write_lines(folder: Path, lines: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Probe.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return [path]


_PATIENT = b'{"resourceType":"Patient","id":"p1","name":[{"family":"Probe"}]}'


def _condition(extra: bytes = b"", rid: bytes = b"c1") -> bytes:
    return (b'{"resourceType":"Condition","id":"' + rid + b'","subject":{"reference":'
            b'"Patient/p1","display":"Probe"}' + extra + b"}")


@needs_compiled
def test_probes_of_the_grammar_give_the_same_rows(make_lake, deterministic_seal, tmp_path):
    instants = ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.1+05:30",
                "2024-05-01T10:00:00.123456789-13:59", "2024-02-29T00:00:00Z",
                "2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "2024-05-01T23:59:60Z",
                "0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-05:00", "1970-01-01T00:00:00Z",
                "1969-12-31T23:59:59.999999Z", "2000-03-01T00:00:00+14:00", "2024-05-01"]
    lines = [_PATIENT]
    lines += [_condition(b',"meta":{"versionId":"' + str(number).encode() +
                         b'","lastUpdated":"' + value.encode() + b'"}', b"t%d" % number)
              for number, value in enumerate(instants)]
    lines += [
        # resourceType not first, duplicated members, escapes where the rules look
        b'{"id":"o1","resourceType":"Observation","subject":{"reference":"Patient/p1"}}',
        _condition(b',"id":"c2"', b"c3"),
        _condition(b',"code":{"text":"caf\\u00e9 \\ud83d\\ude00 \\"q\\""}', b"c4"),
        b'{"resourceType":"Condition","id":"c5","subject":{"reference":"Patient\\/p1"}}',
        b'{"resourceType":"Condition","id":"c6","onset\\u0044ateTime":"2024"}',
        # a reference object with more than reference and display, a reference to nobody
        b'{"resourceType":"Condition","id":"c7","subject":{"reference":"Patient/p1",'
        b'"type":"Patient"}}',
        b'{"resourceType":"Condition","id":"c8","subject":{"reference":"Group/g1"}}',
        b'{"resourceType":"Condition","id":"c9","subject":{"reference":"Patient/p1/_history/2"},'
        b'"asserter":{"reference":"https://x.example/fhir/Patient/p1"}}',
        # attachments: plain, already sealed, not flat, no contentType first
        b'{"resourceType":"DocumentReference","id":"d1","subject":{"reference":"Patient/p1"},'
        b'"content":[{"attachment":{"contentType":"text/plain","data":"aGk=","url":"x",'
        b'"size":2}}]}',
        b'{"resourceType":"DocumentReference","id":"d2","subject":{"reference":"Patient/p1"},'
        b'"content":[{"attachment":{"contentType":"text/plain","data":"clp1:AAAA"}}]}',
        b'{"resourceType":"DocumentReference","id":"d3","subject":{"reference":"Patient/p1"},'
        b'"content":[{"attachment":{"contentType":"text/plain","hash":{"a":1}}}]}',
        b'{"resourceType":"DocumentReference","id":"d4","subject":{"reference":"Patient/p1"},'
        b'"content":[{"attachment":{"data":"aGk=","contentType":"text/plain"}}]}',
        # narratives, notes, conclusions of a patient's resource; and of nobody's
        b'{"resourceType":"CarePlan","id":"cp1","text":{"status":"generated","div":"<div>x</div>"},'
        b'"subject":{"reference":"Patient/p1"}}',
        b'{"resourceType":"DiagnosticReport","id":"dr1","subject":{"reference":"Patient/p1"},'
        b'"conclusion":"fine"}',
        b'{"resourceType":"Organization","id":"org1","text":{"div":"<div>x</div>"}}',
        b'{"resourceType":"CarePlan","id":"cp2","subject":{"reference":"Patient/p1"},"text":'
        b'{"div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">caf\\u00e9</div>"},'
        b'"contained":[{"resourceType":"Goal","id":"g","text":{"div":"<div>y</div>"}}]}',
        b'{"resourceType":"CarePlan","id":"cp3","subject":{"reference":"Patient/p1"},'
        b'"text":{"div":5}}',
        b'{"resourceType":"Communication","id":"cm1","subject":{"reference":"Patient/p1"},'
        b'"payload":[{"contentString":"call me"},{"contentString":"a \\"quote\\""},'
        b'{"contentAttachment":{"contentType":"text/plain","data":"aGk="}}]}',
        b'{"resourceType":"Observation","id":"o4","subject":{"reference":"Patient/p1"},'
        b'"note":[{"text":"seen"}]}',
        b'{"resourceType":"DiagnosticReport","id":"dr2","subject":{"reference":"Patient/p1"},'
        b'"conclusion":"a \\"b\\" c","extension":[{"conclusion":"x"}]}',
        b'{"resourceType":"DiagnosticReport","id":"dr3","subject":{"reference":"Patient/p1"},'
        b'"conclusion":"fine \\u00e9"}',
        # whitespace, numbers, subject arrays and other subject members
        b' { "resourceType" : "Observation" , "id" : "o2" , "valueQuantity" : { "value" : '
        b'0.700 } , "subject" : { "reference" : "Patient/p1" } } ',
        b'{"resourceType":"Observation","id":"o3","valueQuantity":{"value":-1.5E+2},'
        b'"performer":[{"reference":"Patient/p1"}]}',
        b'{"resourceType":"Coverage","id":"cov1","beneficiary":{"reference":"Patient/p1"}}',
        b'{"resourceType":"Group","id":"g1","member":[{"entity":{"reference":"Patient/p1"}}]}',
        b'{"resourceType":"Consent","id":"k1","patient":[{"display":"x"},'
        b'{"reference":"Patient/p1"}]}',
        # dates: a type's own date element, broken dates, dates that are no strings
        b'{"resourceType":"Immunization","id":"i1","patient":{"reference":"Patient/p1"},'
        b'"expirationDate":"2024-05-01","occurrenceDateTime":"2024-05-01T10:00:00+01:00"}',
        b'{"resourceType":"Immunization","id":"i2","expirationDate":"2024-05-01T10:00:00Z"}',
        b'{"resourceType":"Condition","id":"c10","onsetDateTime":"202510"}',
        b'{"resourceType":"Condition","id":"c11","onsetDateTime":5}',
        # ids, types and metas the fast path leaves to the walk
        b'{"resourceType":"Condition","id":"a b"}',
        b'{"resourceType":"condition","id":"c12"}',
        b'{"resourceType":"Condition","id":5}',
        b'{"resourceType":"Condition","id":"c13","meta":null}',
        b'{"resourceType":"Condition","id":"c14","meta":{"versionId":3}}',
        b'{"resourceType":"Condition","id":"c15","meta":{"lastUpdated":null}}',
        # text that is no resource, or no JSON
        b'{"resourceType":"Condition","id":"c16","note":"\xff"}',
        b'{"resourceType":"Condition","id":"c17","n":"\\udc00"}',
        b'{"resourceType":"Condition","id":"c18","n":01}',
        b'{"resourceType":"Condition","id":"c19","n":[1,]}',
        b'{"resourceType":"Condition","id":"c20"} trailing',
        b'[{"resourceType":"Condition","id":"c21"}]',
        b'{"resourceType":"Condition","id":"c22","deep":' + b"[" * 300 + b"]" * 300 + b"}",
    ]
    found = _assert_same(make_lake(), _write_lines(tmp_path / "probes", lines))
    reasons = [reason for _, _, reason, _ in found["quarantine"]]
    assert sum("malformed JSON" in reason for reason in reasons) >= 5
    assert any("Invalid UTF-8" in reason for reason in reasons)  # quarantined, not a crash
    assert found["taken"][True] >= 15


@needs_compiled
def test_bundles_with_urn_references_give_the_same_rows(make_lake, deterministic_seal,
                                                        tmp_path):
    patient, encounter = "urn:uuid:00000000-0000-4000-8000-000000000001", \
        "urn:uuid:00000000-0000-4000-8000-000000000002"
    entries = [
        {"fullUrl": patient, "resource": {"resourceType": "Patient", "id": patient[9:]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": encounter, "resource": {
            "resourceType": "Encounter", "id": encounter[9:], "subject": {"reference": patient},
            "participant": [{"individual": {"reference": "urn:uuid:missing"}}]},
         "request": {"method": "POST", "url": "Encounter"}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000003", "resource": {
            "resourceType": "Observation", "subject": {"reference": patient},
            "encounter": {"reference": encounter}}, "request": {"method": "POST",
                                                                 "url": "Observation"}},
        {"request": {"method": "GET", "url": "Patient?name=x"}},
        {"request": {"method": "DELETE", "url": "Observation/o9"}},
        {"resource": {"resourceType": "Observation", "id": "o8"},
         "request": {"method": "PUT", "url": "Observation?identifier=x"}},
        {"fullUrl": "http://x.example/Observation/o7", "resource": {
            "resourceType": "Observation", "id": "o7", "subject": {"reference": patient}},
         "request": {"method": "PATCH", "url": "Observation/o7"}},
    ]
    folder = tmp_path / "bundles"
    folder.mkdir()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    (folder / "compact.json").write_text(json.dumps(bundle, separators=(",", ":")))
    (folder / "pretty.json").write_text(json.dumps(bundle, indent=2))
    (folder / "escaped.json").write_text(json.dumps(bundle).replace("/", "\\/"))
    found = _assert_same(make_lake(), input_files([folder]))
    assert found["unresolved"] == 3
    assert found["recorded"]


@needs_compiled
def test_damaged_records_give_the_same_outcomes(make_lake, deterministic_seal, tmp_path):
    """Thousands of records damaged at random (bytes replaced, removed, duplicated, cut): both
    ways agree on every one, rows and quarantine."""
    rng = random.Random(5)
    seeds = [line for path in input_files([SAMPLE / "bulk"]) if "Patient" not in path.name
             for line in path.read_bytes().splitlines()[:6] if len(line) < 6000]
    alphabet = b'{}[]",:\\ 0123456789.-+eEtrufalsn\x00\x1f\x7f\x80\xc3\xa9\xed\xa0\xf4\x90'
    damaged = []
    for _ in range(3000):
        line = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            if not line:
                break
            at = rng.randrange(len(line))
            action = rng.randrange(4)
            if action == 0:
                line[at] = rng.choice(alphabet)
            elif action == 1:
                del line[at:at + rng.randint(1, 4)]
            elif action == 2:
                line[at:at] = line[at:at + rng.randint(1, 8)]
            else:
                del line[at:]
        damaged.append(bytes(line).replace(b"\n", b" ").replace(b"\r", b" "))
    found = _assert_same(make_lake(), _write_lines(tmp_path / "damaged", damaged))
    assert found["quarantine"] and found["resources"]


@needs_compiled
def test_what_the_compiled_pass_accepts_msgspec_decodes():
    """The pass is at least as strict as msgspec: whatever it reads as valid, msgspec decodes
    and Python reads as UTF-8."""
    from dlt_pipelines.fhir import _scan

    rng = random.Random(11)
    seeds = [line for path in input_files([SAMPLE / "bulk"])
             for line in path.read_bytes().splitlines()[:3]]
    alphabet = b'{}[]",:\\/ 0123456789.-+eEtrufalsnu\x00\x1f\x7f\x80\xc3\xa9\xed\xa0\xbf'
    valid = invalid = 0
    for _ in range(20000):
        line = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 2)):
            at = rng.randrange(len(line))
            line[at:at + rng.randint(0, 2)] = bytes(rng.choice(alphabet)
                                                     for _ in range(rng.randint(0, 2)))
        verdict = _scan.validate(bytes(line))
        if verdict == "ok":
            valid += 1
            msgspec.json.decode(bytes(line))
            bytes(line).decode("utf-8")
        elif verdict == "invalid":
            invalid += 1
    assert valid > 1000 and invalid > 1000
