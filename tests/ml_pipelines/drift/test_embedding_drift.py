"""Note embeddings as drift features, on real all-MiniLM-L6-v2 embeddings of the cTAKES notes.

The 100 curated notes hold 40 chosen for cardiopulmonary and metabolic topics (pneumonia, chest
films, heart failure, diabetes, ...) and 60 others. Their first 1,000 characters are embedded
once (about 15 s on one thread) into frames shaped like ``ml.note_embeddings``.
"""

import re

import numpy as np
import pandas as pd
import pytest

from ml_pipelines.drift import windows
from ml_pipelines.drift.compare import compare
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.embedding_features import embeddings_frame, lake_embedding_features

TOPIC = re.compile(r"pneumonia|chest|x-ray|xray|copd|chf|heart-failure|diabetes|hypertension|"
                   r"asthma|pneumothorax|effusion|radiograph|cardiomegaly")
CONFIG = DriftConfig(reference="2011..2019", current="2021..", false_alarm_splits=5,
                     min_window_units=10_000)


@pytest.fixture(scope="module")
def note_vectors(shared_data):
    """(topic vectors, other vectors): unit embeddings of the curated notes' openings."""
    from ml_pipelines.nlp.embeddings import load_encoder

    files = sorted((shared_data / "ctakes-examples-notes" / "curated").glob("*.txt"))
    topic = [path for path in files if TOPIC.search(path.name)]
    other = [path for path in files if not TOPIC.search(path.name)]
    texts = [path.read_text(encoding="utf-8", errors="replace")[:1000] for path in topic + other]
    vectors = load_encoder().encode(texts, batch_size=32, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
    return vectors[: len(topic)], vectors[len(topic):]


def _table(reference: np.ndarray, current: np.ndarray) -> pd.DataFrame:
    """Rows shaped like ml.note_embeddings: reference notes dated 2019, current notes 2021."""
    rows = []
    for window, year, vectors in (("r", "2019-06-01", reference), ("c", "2021-06-01", current)):
        for index, vector in enumerate(vectors):
            rows.append({
                "document_id": f"{window}{index}",
                "resource_type": "DocumentReference",
                "attachment_index": 0,
                "patient_key": f"patient-{window}{index}",
                "note_date": year,
                "embedding_model": "all-MiniLM-L6-v2",
                "embedding": vector.astype(np.float32).tolist(),
            })
    return pd.DataFrame(rows)


def _compare(table: pd.DataFrame):
    features = windows.with_windows(embeddings_frame(table, config=CONFIG), window="year")
    return features, compare(
        windows.select(features, "2011..2019"), windows.select(features, "2021.."),
        config=CONFIG, reference_name="2011..2019", current_name="2021..",
    )


def test_other_topics_drift_from_the_reference(note_vectors):
    topic, other = note_vectors

    features, result = _compare(_table(other, topic))

    assert features.numeric == ("centroid_distance", "principal_1", "principal_2",
                                "principal_3")
    assert (len(features.frame), len(result.features)) == (100, 4)
    assert [item.description for item in result.drifted] == [
        "median note position on reference principal direction 1 (x100) up 34.1 "
        "(from -1.2 to 32.9)"
    ]
    by_feature = {item.feature: item for item in result.features}
    assert f"{by_feature['principal_1'].adjusted_p:.2e}" == "1.96e-07"
    assert by_feature["centroid_distance"].description == (
        "median note distance to the reference centroid (cosine, x100) down 4 "
        "(from 49.4 to 45.4)"
    )


def test_varied_notes_sit_far_from_a_focused_reference(note_vectors):
    topic, other = note_vectors

    _, result = _compare(_table(topic, other))

    assert [item.feature for item in result.drifted] == [
        "centroid_distance", "principal_1", "principal_2"
    ]
    distance = result.drifted[0]
    assert distance.description == (
        "median note distance to the reference centroid (cosine, x100) up 25.6 "
        "(from 35.4 to 61)"
    )
    assert f"{distance.adjusted_p:.2e}" == "1.06e-09"
    assert round(distance.effect_h, 3) == 1.669


def test_two_random_halves_of_one_group_do_not_drift(note_vectors):
    _, other = note_vectors
    order = np.random.default_rng(7).permutation(len(other))
    half = len(other) // 2

    _, result = _compare(_table(other[np.sort(order[:half])], other[np.sort(order[half:])]))

    assert result.drifted == []
    by_feature = {item.feature: item for item in result.features}
    # Each reference note is measured against the other reference notes' centroid, so the
    # reference half is not closer to its own centroid than the current half.
    assert round(by_feature["centroid_distance"].adjusted_p, 3) == 0.808
    assert by_feature["centroid_distance"].description == (
        "median note distance to the reference centroid (cosine, x100) up 0.9 "
        "(from 48.9 to 49.8)"
    )


def test_a_run_compares_note_embeddings_from_the_lake(lake, encounters, note_vectors,
                                                      monkeypatch):
    import pyarrow as pa

    from ml_pipelines.drift import lake_io, run
    from ml_pipelines.nlp.tables import embedding_schema

    assert lake_embedding_features(lake, config=CONFIG) is None
    topic, other = note_vectors
    table = _table(other, topic).assign(pipeline_run_id="nlp-run",
                                        embedded_at=pd.Timestamp("2026-12-04", tz="UTC"))
    lake.append("ml.note_embeddings",
                pa.Table.from_pandas(table, schema=embedding_schema(384), preserve_index=False))
    # The bronze tables are not part of this test: serve the encounters from the files.
    monkeypatch.setattr(lake_io, "lake_encounter_features", lambda _lake: encounters)

    summary = run.run_all(lake, config=CONFIG, run_id="embeddings-run")

    sets = summary["feature_sets"]
    assert sets["vitals"]["unavailable"].startswith(
        "the lake holds no vitals yet (bronze.observation is missing"
    )
    assert sets["embeddings"]["drifted_features"] == 1
    assert sets["embeddings"]["report_json"] == (
        "reports/drift/embeddings/embeddings-run/report.json"
    )
