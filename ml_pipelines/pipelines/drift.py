"""The drift pipeline: profiles per window, comparison, report and gate over the lake."""

from __future__ import annotations

from typing import Any

from zenml import pipeline

from ml_pipelines.steps.drift.detect_drift import detect_drift
from ml_pipelines.steps.drift.drift_gate import drift_gate


@pipeline(enable_cache=False)
def drift_pipeline(data_dir: str, run_id: str, overrides: dict[str, Any]) -> None:
    summary = detect_drift(data_dir=data_dir, run_id=run_id, overrides=overrides)
    drift_gate(summary=summary)
