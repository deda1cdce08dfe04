"""The ZenML NLP pipeline on a real lake: local orchestrator, SQLite store, Model Control Plane."""

from __future__ import annotations

import pytest

from ml_pipelines.nlp import tables


@pytest.mark.slow
def test_pipeline_writes_tables_and_records_a_model_version(notes_lake):
    from ml_pipelines.nlp.stage import run_pipeline

    figures = run_pipeline(notes_lake.settings)

    run = figures["run"]
    assert (run["notes"], run["mentions"], run["embeddings"]) == (20, 175, 16)
    assert run["mentions_by_context"] == {
        "affirmed": 170, "family": 2, "hypothetical": 1, "negated": 2}
    check = figures["synthea_coding_check"]
    assert (check["encounters"], check["tp"], check["fp"], check["fn"]) == (13, 3, 80, 9)

    from zenml.client import Client

    from ml_pipelines.nlp.registry import MODEL_NAME

    mentions = notes_lake.read_arrow(tables.MENTIONS).to_pylist()
    assert {m["pipeline_run_id"] for m in mentions} == {figures["pipeline_run_id"]}
    model_id = mentions[0]["model_id"]
    versions = Client().list_model_versions(MODEL_NAME)
    assert [version.name for version in versions] == [model_id]
    metadata = versions[0].run_metadata
    assert metadata["model"]["cdb_version"] == mentions[0]["cdb_version"]
    assert metadata["run"]["mentions"] == 175

    embeddings = notes_lake.read_arrow(tables.EMBEDDINGS).to_pylist()
    assert len(embeddings) == 16
    assert {len(row["embedding"]) for row in embeddings} == {384}
    assert sum(value * value for value in embeddings[0]["embedding"]) == pytest.approx(1.0, 1e-5)

    # ZenML's store is plaintext by design: no code, document id or patient key may reach it
    zenml_bytes = b"".join(
        path.read_bytes() for path in (notes_lake.data_dir / "zenml").rglob("*") if path.is_file())
    for value in ("38341003", "edge-html", mentions[0]["patient_key"]):
        assert value.encode() not in zenml_bytes

    from ml_pipelines.nlp.erase import erase_patient

    assert erase_patient(notes_lake, mentions[0]["patient_key"]) == 175 + 20 + 16
    assert [notes_lake.count(table) for table in tables.TABLES] == [0, 0, 0]
