"""The NLP units of work on a real encrypted lake: notes opened, mentions written, rows erased."""

from __future__ import annotations

from ml_pipelines.nlp import jobs, tables
from ml_pipelines.nlp.erase import erase_patient


def test_extract_to_lake_then_erase(notes_lake):
    snapshots = jobs.note_snapshots(notes_lake)
    reference = jobs.prepare_model(notes_lake)
    assert notes_lake.fs.exists(reference["pack"])
    counts = jobs.extract_to_lake(notes_lake, reference, snapshots, run_id="run-1")
    assert counts["notes_by_status"] == {
        "bytes_replaced": 1, "empty": 1, "html_stripped": 1, "ok": 14, "pdf": 1,
        "too_large": 1, "url_only": 1}
    assert counts["mentions_by_context"] == {
        "affirmed": 170, "family": 2, "hypothetical": 1, "negated": 2}

    mentions = notes_lake.read_arrow(tables.MENTIONS).to_pylist()
    edge = sorted((m["document_id"], m["concept_code"], m["span_start"], m["span_end"],
                   m["context"]) for m in mentions if m["document_id"].startswith("edge"))
    assert edge == [
        ("edge-bad-utf8", "444814009", 0, 15, "affirmed"),
        ("edge-html", "195967001", 52, 58, "family"),
        ("edge-html", "38341003", 7, 19, "negated"),
        ("edge-html", "73211009", 32, 49, "family"),
        ("edge-latin1", "10509002", 12, 28, "affirmed"),
        ("edge-report", "233604007", 9, 18, "hypothetical"),
        ("edge-report", "386661006", 23, 28, "negated"),
    ]
    assert {m["model_id"] for m in mentions} == {reference["model_id"]}
    assert {m["cdb_version"] for m in mentions} == {reference["cdb_version"]}
    assert {m["context_method"] for m in mentions} == {"context"}
    statuses = {r["document_id"]: r["status"] for r in
                notes_lake.read_arrow(tables.STATUS).to_pylist()}
    assert statuses["edge-pdf"] == "pdf" and statuses["edge-url"] == "url_only"

    note_words = ("Denies", "Mother has", "Rule out", "bronchitis.")
    for row in mentions + notes_lake.read_arrow(tables.STATUS).to_pylist():
        for value in row.values():
            assert not (isinstance(value, str) and any(word in value for word in note_words))

    patient = mentions[0]["patient_key"]
    assert erase_patient(notes_lake, patient) == 175 + 20
    assert notes_lake.count(tables.MENTIONS) == 0
