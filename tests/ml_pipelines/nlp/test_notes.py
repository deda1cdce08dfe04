"""Attachments to note text: each awkward input gets its own status and none raises."""

from __future__ import annotations

from collections import Counter

from ml_pipelines.nlp.notes import html_to_text, notes_of
from ml_pipelines.nlp.sources import notes_from_path
from tests.ml_pipelines.nlp.conftest import edge_case_resources


def test_each_awkward_attachment_has_a_clear_status():
    notes = [n for r in edge_case_resources("Patient/p") for n in notes_of(r, patient_key="k")]
    assert {n.document_id: n.status for n in notes} == {
        "edge-empty": "empty", "edge-html": "html_stripped", "edge-latin1": "ok",
        "edge-bad-utf8": "bytes_replaced", "edge-large": "too_large", "edge-pdf": "pdf",
        "edge-url": "url_only", "edge-report": "ok",
    }
    by_id = {n.document_id: n for n in notes}
    assert by_id["edge-latin1"].text == "Caf\u00e9 visit: acute bronchitis."
    assert by_id["edge-bad-utf8"].text == "Viral sinusitis \ufffd\ufffd noted."
    assert by_id["edge-report"].encounter_id == "edge-encounter"
    assert by_id["edge-pdf"].text is None and by_id["edge-pdf"].reason


def test_html_is_reduced_to_its_text():
    html = "<html><head><title>t</title></head><body><p>A &amp; B</p><div>C<br>D</div></body>"
    assert html_to_text(html) == "A & B\nC\nD"


def test_public_samples_notes_and_statuses(shared_data):
    bulk = list(notes_from_path(shared_data / "synthea-bulk-ndjson-10-patients"))
    assert Counter(n.status for n in bulk) == {"ok": 1215}
    assert sum(len(n.text or "") for n in bulk) == 1617409
    inferno = list(notes_from_path(shared_data / "synthea-uscore-inferno-bundles"))
    assert Counter(n.status for n in inferno) == {"ok": 83, "pdf": 4, "no_data": 1}
