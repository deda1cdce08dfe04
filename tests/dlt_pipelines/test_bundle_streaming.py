"""A bundle too large to read whole is read entry by entry, in bounded parts, gzipped or not, and
loads exactly what the same bundle read whole loads."""

from __future__ import annotations

import base64
import gzip
import json
import random
from pathlib import Path

import pytest

from dlt_pipelines.fhir import pipeline, sources
from dlt_pipelines.fhir.sources import DECODER
from dlt_pipelines.fhir.transform import Transformer

PATIENTS = 3
NOTES_PER_PATIENT = 12
NOTE_BYTES = 150_000


def _note(rng: random.Random) -> str:
    words = ["fever", "cough", "stable", "follow", "up", "in", "two", "weeks", "denies", "pain"]
    text = " ".join(rng.choice(words) for _ in range(NOTE_BYTES // 6))
    return base64.b64encode(text.encode()).decode()


def _bundle(path: Path) -> Path:
    """A synthetic transaction bundle: patients, and notes with large attachments."""
    rng = random.Random(7)
    entries = []
    for number in range(PATIENTS):
        patient = f"urn:uuid:00000000-0000-4000-8000-{number:012d}"
        entries.append({"fullUrl": patient, "resource": {
            "resourceType": "Patient", "id": patient[9:], "gender": "female",
            "name": [{"family": f"Family{number}", "given": ["Test"]}],
            "birthDate": "1980-02-03"}, "request": {"method": "POST", "url": "Patient"}})
        for note in range(NOTES_PER_PATIENT):
            url = f"urn:uuid:10000000-0000-4000-8000-{number:04d}{note:08d}"
            entries.append({"fullUrl": url, "resource": {
                "resourceType": "DocumentReference", "id": url[9:], "status": "current",
                "subject": {"reference": patient}, "date": "2024-05-01T10:00:00Z",
                "content": [{"attachment": {"contentType": "text/plain",
                                            "data": _note(rng)}}]},
                "request": {"method": "POST", "url": "DocumentReference"}})
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction",
                                "entry": entries}, indent=1))
    return path


def _masked(value):
    """A stored resource with its tokens and pseudonyms masked, to compare two lakes."""
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, str) and value.startswith("clp1:"):
        return "<token>"
    if isinstance(value, str) and value.startswith("Patient/"):
        return "Patient/<key>"
    return value


def _stored(lake) -> dict[str, list]:
    found = {}
    for kind in ("patient", "documentreference"):
        rows = lake.read_arrow(f"bronze.{kind}", columns=("id", "resource")).to_pylist()
        found[kind] = sorted(
            json.dumps(_masked({key: item for key, item in DECODER.decode(row["resource"])
                                .items() if key != "id" or kind != "patient"}), sort_keys=True,
                       default=str)
            for row in rows)
    return found


@pytest.mark.parametrize("compressed", [False, True])
def test_a_large_bundle_streams_in_parts_and_loads_the_same(make_lake, tmp_path, monkeypatch,
                                                           compressed):
    path = _bundle(tmp_path / "big.json")
    if compressed:
        gz = tmp_path / "big.json.gz"
        gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
        path.unlink()
        path = gz

    whole = make_lake("whole")
    pipeline.ingest(whole, [path], workers=1)

    monkeypatch.setattr(sources, "STREAM_BUNDLE_BYTES", 1 << 20)
    monkeypatch.setattr(pipeline, "PART_BYTES", 1 << 20)
    assert sources.is_streamed(path)
    parts = []
    original = pipeline.run_streamed

    def counting(*args, **kwargs):
        for part in original(*args, **kwargs):
            parts.append(sum(table.num_rows for table in part.tables.values()))
            yield part

    monkeypatch.setattr(pipeline, "run_streamed", counting)
    streamed = make_lake("streamed")
    report = pipeline.ingest(streamed, [path], workers=1)

    total = PATIENTS * (NOTES_PER_PATIENT + 1)
    assert report.resources == total
    assert sum(parts) == total
    assert len(parts) >= 4  # about 5.5 MB of notes, in parts of 1 MB
    assert max(parts) <= 1 + (1 << 20) // NOTE_BYTES
    assert report.per_type["DocumentReference"]["loaded"] == PATIENTS * NOTES_PER_PATIENT
    assert _stored(streamed) == _stored(whole)
    stored = streamed.read_arrow("bronze.documentreference", columns=("resource",)).to_pylist()
    attachment = DECODER.decode(stored[0]["resource"])["content"][0]["attachment"]
    assert attachment["data"].startswith("clp1:")


def test_streamed_bundle_entries_match_the_whole_read(tmp_path, monkeypatch, make_lake):
    path = _bundle(tmp_path / "big.json")
    whole = list(sources.read_file(path))
    monkeypatch.setattr(sources, "STREAM_BUNDLE_BYTES", 1 << 20)
    streamed = list(sources.read_file(path))
    assert [entry.locator for entry in streamed] == [entry.locator for entry in whole]
    assert [entry.urn_map for entry in streamed] == [entry.urn_map for entry in whole]
    assert [DECODER.decode(entry.body) for entry in streamed] == \
        [DECODER.decode(entry.body) for entry in whole]
    lake = make_lake()
    transformer = Transformer(lake.patients, index_key=lake.keys.material("index"),
                              source="s", load_id="l", loaded_at=None)
    assert {transformer.outcome(entry).kind for entry in streamed} == {"upsert"}


_AWKWARD = (
    b'{"resourceType":"Bundle","id":"b1","entry":[\n'
    b' {"fullUrl":"urn:uuid:p1","resource":{"resourceType":"Patient","id":"p1"}},\n'
    b' {"fullUrl":"urn:uuid:o1","resource":{"id":"o1","resourceType":"Observation",'
    b'"code":{"text":"a \\"]}\\" b \\\\ \\u00e9 ["},"subject":{"reference":"urn:uuid:p1"}},'
    b'"request":{"method":"POST","url":"Observation"}},\n'
    b' {"resource":"not an object"},\n'
    b' {"request":{"method":"DELETE","url":"Observation/o9"}},\n'
    b' {"fullUrl":"urn:uuid:o2","resource":{"resourceType":"Observation","id":"o2",'
    b'"valueQuantity":{"value":0.700},"subject":{"reference":"urn:uuid:p1"}}}\n'
    b'],"type":"transaction","signature":{"data":"x]}\\"{"}}'
)


@pytest.mark.parametrize("compiled", [True, False])
def test_awkward_bundles_stream_as_they_read_whole(tmp_path, monkeypatch, compiled):
    """Members after the entries, brackets and quotes inside strings, an entry that is no
    object, an entry without a resource: the streamed entries are the whole read's, read by the
    compiled cutter or by ijson."""
    if compiled and sources._compiled_entry is None:
        pytest.skip("the compiled extension is not built")
    if not compiled:
        monkeypatch.setattr(sources, "_compiled_entry", None)
    path = tmp_path / "awkward.json"
    path.write_bytes(_AWKWARD)
    whole = list(sources.read_file(path))
    monkeypatch.setattr(sources, "STREAM_BUNDLE_BYTES", 16)
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 7)  # entries cut across many reads
    streamed = list(sources.read_file(path))
    assert len(streamed) == len(whole) == 5
    for one, other in zip(streamed, whole):
        assert (one.locator, one.urn_map, one.error, one.method, one.request_url,
                one.full_url, one.bundle_type) == \
            (other.locator, other.urn_map, other.error, other.method, other.request_url,
             other.full_url, other.bundle_type)
        assert (DECODER.decode(one.body) if one.body else one.resource) == \
            (DECODER.decode(other.body) if other.body else other.resource)
    assert streamed[0].urn_map == {"urn:uuid:p1": "Patient/p1", "urn:uuid:o1": "Observation/o1",
                                   "urn:uuid:o2": "Observation/o2"}


def test_a_broken_entry_of_a_streamed_bundle_is_quarantined_and_the_rest_loads(
        make_lake, tmp_path, monkeypatch):
    if sources._compiled_entry is None:
        pytest.skip("the compiled extension is not built")
    path = tmp_path / "broken.json"
    path.write_bytes(_AWKWARD.replace(b'"value":0.700', b'"value":00.7'))
    monkeypatch.setattr(sources, "STREAM_BUNDLE_BYTES", 16)
    report = pipeline.ingest(make_lake(), [path], workers=1)
    assert report.per_type["Observation"]["loaded"] == 1
    reasons = sorted(report.quarantined.elements())
    assert reasons[0] == "entry.resource is not a JSON object"
    assert reasons[1].startswith("malformed JSON: JSON is malformed: invalid number")
    assert len(reasons) == 2


def test_a_streamed_bundle_cut_short_is_a_clear_error(make_lake, tmp_path, monkeypatch):
    if sources._compiled_entry is None:
        pytest.skip("the compiled extension is not built")
    from infra.errors import InputError

    path = tmp_path / "short.json"
    path.write_bytes(_AWKWARD[:300])
    monkeypatch.setattr(sources, "STREAM_BUNDLE_BYTES", 16)
    with pytest.raises(InputError, match="not valid JSON near byte .* ends early"):
        pipeline.ingest(make_lake(), [path], workers=1)
