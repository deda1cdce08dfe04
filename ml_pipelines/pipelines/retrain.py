"""The retraining pipeline: a new version of the prevalence model in the Model Control Plane.

Each run makes a version of ``carelake-condition-prevalence``, trained on the current window
without its held-out patients, scored beside production on them, and promoted only when better.
"""

from __future__ import annotations

from typing import Any

from zenml import Model, pipeline

from ml_pipelines.steps.drift.retrain import (
    MODEL_NAME,
    promote_if_better,
    rebuild_nlp_concepts,
    train_and_evaluate,
)

MODEL = Model(
    name=MODEL_NAME,
    description="condition prevalence by age band and sex, retrained when drift is found",
    tags=["carelake", "drift"],
)


@pipeline(enable_cache=False, model=MODEL)
def retrain_pipeline(data_dir: str, current: str, overrides: dict[str, Any]) -> None:
    rebuild_nlp_concepts(data_dir=data_dir, current=current)
    decision = train_and_evaluate(data_dir=data_dir, current=current, overrides=overrides)
    promote_if_better(decision=decision)
