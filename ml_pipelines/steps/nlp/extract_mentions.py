"""Step: MedCAT and ConText over the pinned notes; mentions and statuses go to the lake."""

from __future__ import annotations

from typing import Any

from zenml import get_step_context, step

from ml_pipelines.nlp import jobs


@step(enable_cache=False)
def extract_mentions(
    data_dir: str, model: dict[str, Any], snapshots: dict[str, int | None]
) -> dict[str, Any]:
    run_id = str(get_step_context().pipeline_run.id)
    return jobs.extract_to_lake(jobs.open_lake(data_dir), model, snapshots, run_id=run_id)
