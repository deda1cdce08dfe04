"""Step: sentence-transformers embeddings of the pinned notes, appended to the lake."""

from __future__ import annotations

from typing import Any

from zenml import get_step_context, step

from ml_pipelines.nlp import jobs


@step(enable_cache=False)
def embed_notes(data_dir: str, snapshots: dict[str, int | None], enabled: bool) -> dict[str, Any]:
    if not enabled:
        return {"embeddings": 0, "embeddings_snapshot": None, "skipped": True}
    run_id = str(get_step_context().pipeline_run.id)
    return jobs.embed_to_lake(jobs.open_lake(data_dir), snapshots, run_id=run_id)
