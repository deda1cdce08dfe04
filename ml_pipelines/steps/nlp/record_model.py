"""Step: measure the run and keep the figures as metadata of the model's version in ZenML's Model
Control Plane (model ``carelake-nlp``, one version per model built, named by its model id)."""

from __future__ import annotations

from typing import Any

from zenml import get_step_context, step

from ml_pipelines.nlp import jobs
from ml_pipelines.nlp.registry import record_model_version


@step(enable_cache=False)
def record_model(
    data_dir: str, model: dict[str, Any], extraction: dict[str, Any],
    embeddings: dict[str, Any], evaluation_data_dir: str,
) -> dict[str, Any]:
    run_id = str(get_step_context().pipeline_run.id)
    lake = jobs.open_lake(data_dir)
    metrics: dict[str, Any] = {"run": {**extraction, **embeddings}}
    metrics["synthea_coding_check"] = jobs.coding_check(lake, model, run_id=run_id)
    if evaluation_data_dir:
        from ml_pipelines.nlp.evaluate import evaluate_all

        metrics.update(evaluate_all(evaluation_data_dir))
    record_model_version(model, metrics)
    return metrics
