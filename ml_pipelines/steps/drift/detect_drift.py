"""Step: for each feature set, profile every window, compare current with reference, and store
the metrics and the report."""

from __future__ import annotations

from typing import Any

from zenml import log_metadata, step

from infra.errors import StageUnavailable
from ml_pipelines.drift.run import run_all
from ml_pipelines.steps.drift.lake_access import drift_config, open_lake


@step(enable_cache=False)
def detect_drift(data_dir: str, run_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Returns the run summary: window specs, counts and the report's lake paths, or
    ``{"unavailable": reason}`` when the lake cannot support a comparison yet (ZenML would turn
    the exception into a bare run failure)."""
    lake = open_lake(data_dir)
    config = drift_config(lake, overrides)
    try:
        summary = run_all(lake, config=config, run_id=run_id)
    except StageUnavailable as reason:
        return {"unavailable": str(reason)}
    log_metadata(metadata={"drift": summary})
    return summary
