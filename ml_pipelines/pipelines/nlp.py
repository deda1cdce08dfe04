"""The clinical NLP pipeline: pin the notes, prepare the MedCAT model, extract mentions with
context, embed the notes, and record the model's figures in the Model Control Plane.

Every step opens the lake itself from ``data_dir``; what flows between steps is snapshot ids, a
model reference and counts. Runs on ZenML's local orchestrator with the SQLite store that
``ml_pipelines.zenml_env.use_local_zenml`` points at ``DIR/zenml``.
"""

from __future__ import annotations

from zenml import pipeline

from ml_pipelines.steps.nlp.embed_notes import embed_notes
from ml_pipelines.steps.nlp.extract_mentions import extract_mentions
from ml_pipelines.steps.nlp.prepare_model import prepare_model
from ml_pipelines.steps.nlp.record_model import record_model
from ml_pipelines.steps.nlp.snapshot_notes import snapshot_notes


@pipeline(enable_cache=False)
def nlp_pipeline(
    data_dir: str, model_pack: str = "", concepts_dir: str = "", linker: str = "primary_name",
    embeddings: bool = True, evaluation_data_dir: str = "",
) -> None:
    snapshots = snapshot_notes(data_dir)
    model = prepare_model(data_dir, model_pack, concepts_dir, linker)
    extraction = extract_mentions(data_dir, model, snapshots)
    embedded = embed_notes(data_dir, snapshots, embeddings)
    record_model(data_dir, model, extraction, embedded, evaluation_data_dir)
