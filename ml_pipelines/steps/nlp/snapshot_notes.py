"""Step: pin the bronze notes tables at their current snapshots, so every later step reads them."""

from __future__ import annotations

from zenml import step

from ml_pipelines.nlp import jobs


@step(enable_cache=False)
def snapshot_notes(data_dir: str) -> dict[str, int | None]:
    return jobs.note_snapshots(jobs.open_lake(data_dir))
