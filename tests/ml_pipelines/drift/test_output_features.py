"""Feature sets over the NLP and vision outputs, built from frames shaped like their tables."""

import json

import pandas as pd

from ml_pipelines.drift import model_drift, output_features, windows
from ml_pipelines.drift.compare import compare
from ml_pipelines.drift.config import DriftConfig


def _nlp_output(encounters):
    """NLP output shaped like ml.note_status and ml.note_mentions: one note per encounter, every
    coded condition mentioned affirmed (confidence 0.9) and, in every third note, one negated."""
    keys = encounters.frame["encounter_key"].tolist()
    status = pd.DataFrame({
        "document_id": [f"note-{index}" for index in range(len(keys))],
        "encounter_id": keys,
        "patient_key": encounters.frame["patient_key"].tolist(),
        "status": ["ok"] * len(keys),
    })
    document = dict(zip(keys, status["document_id"], strict=True))
    coded = model_drift.coded_conditions(encounters, set(keys))
    affirmed = pd.DataFrame({
        "document_id": coded["encounter_key"].map(document),
        "encounter_id": coded["encounter_key"],
        "concept_code": coded["concept_code"],
        "concept_name": coded["concept_code"].map(
            lambda code: encounters.label(f"condition:{code}")
        ),
        "context": "affirmed",
        "confidence": 0.9,
    })
    negated = pd.DataFrame({
        "document_id": status["document_id"].iloc[::3],
        "encounter_id": status["encounter_id"].iloc[::3],
        "concept_code": "22298006",
        "concept_name": "Myocardial infarction",
        "context": "negated",
        "confidence": 0.6,
    })
    return status, pd.concat([affirmed, negated], ignore_index=True)


def test_notes_carry_counts_negation_confidence_and_concept_flags(encounters):
    status, mentions = _nlp_output(encounters)

    notes = output_features.notes_frame(status, mentions, encounters, min_count=1)

    assert len(notes.frame) == 2057
    assert notes.label("concept:840539006") == "COVID-19 (NLP)"
    first = notes.frame.loc[notes.frame["document_id"] == "note-0"].iloc[0]
    assert first["negation_rate"] == 1 / first["mention_count"]
    assert round(float(notes.frame["mean_confidence"].max()), 6) == 0.9


def test_notes_after_2020_name_the_new_concept(encounters):
    status, mentions = _nlp_output(encounters)
    notes = windows.with_windows(
        output_features.notes_frame(status, mentions, encounters, min_count=1), window="year"
    )

    result = compare(windows.select(notes, "2011..2019"), windows.select(notes, "2021.."),
                     config=DriftConfig())

    assert "COVID-19 (NLP) appeared: in none of 704 notes before, now in 1 of 90 (1.1%)" in (
        result.appeared
    )


def test_images_keep_the_latest_probability_per_pathology():
    findings = pd.DataFrame({
        "image_id": ["a", "a", "a", "b", "b"],
        "patient_key": ["p1", "p1", "p1", "p2", "p2"],
        "pathology": ["Effusion", "Effusion", "Edema", "Effusion", "Edema"],
        "probability": [0.2, 0.7, 0.1, 0.4, None],
        "scored_at": pd.to_datetime(
            ["2026-01-01", "2026-02-01", "2026-02-01", "2026-03-01", "2026-03-01"], utc=True
        ),
    })

    images = output_features.images_frame(findings)

    assert images.numeric == ("probability:Edema", "probability:Effusion")
    rows = images.frame.set_index("image_id")
    assert rows.loc["a", "probability:Effusion"] == 0.7
    assert rows.loc["a", "probability:Edema"] == 0.1
    assert pd.isna(rows.loc["b", "probability:Edema"])
    assert images.label("probability:Effusion") == "Effusion probability"


def test_a_run_compares_notes_beside_encounters_once_nlp_has_written(lake, encounters,
                                                                      monkeypatch):
    import pyarrow as pa

    from ml_pipelines.drift import lake_io, run

    status, mentions = _nlp_output(encounters)
    lake.append("ml.note_status", pa.Table.from_pandas(status, preserve_index=False))
    lake.append("ml.note_mentions", pa.Table.from_pandas(mentions, preserve_index=False))
    # The bronze tables are not part of this test: serve the encounters from the files.
    monkeypatch.setattr(lake_io, "lake_encounter_features", lambda _lake: encounters)
    config = DriftConfig(reference="2011..2019", current="2021..", false_alarm_splits=5,
                         min_window_units=10_000)

    summary = run.run_all(lake, config=config, run_id="notes-run")

    sets = summary["feature_sets"]
    assert sets["images"] == {
        "unavailable": "the lake holds no images yet (its stage has not run)"
    }
    assert sets["encounters"]["drifted_features"] == 13
    assert sets["notes"]["report_html"] == "reports/drift/notes/notes-run/report.html"
    assert summary["has_drift"] is True
    notes_report = json.loads(lake_io.read_file(lake, sets["notes"]["report_json"]))
    # Concepts found in fewer than min_count (5) notes are not tested: COVID-19 is one of them.
    assert (len(notes_report["features"]), notes_report["untested_flags"]) == (17, 10)
    assert notes_report["drifted"] == [
        "Full-time employment (NLP) in 4.3% of notes, now 14% (difference +10.2 points, "
        "95% CI +4.1 to +19.0)"
    ]
