"""The drift stage of ``carelake run``: the ZenML drift pipeline, then retraining on drift."""

from __future__ import annotations

import logging
from typing import Any

from infra.errors import StageUnavailable
from infra.stages import StageContext, StageResult
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.lake_io import lake_encounter_features, require_bronze
from ml_pipelines.drift.run import choose_windows, new_run_id
from ml_pipelines.drift.windows import with_windows

logger = logging.getLogger(__name__)


def run_pipelines(data_dir: str, *, overrides: dict[str, Any], retrain: bool) -> dict[str, Any]:
    """Run the drift pipeline and, on drift, the retraining one; returns their numbers."""
    from ml_pipelines.zenml_env import use_local_zenml

    use_local_zenml(data_dir)
    try:
        from ml_pipelines.pipelines.drift import drift_pipeline
        from ml_pipelines.pipelines.retrain import retrain_pipeline
    except ModuleNotFoundError as error:
        raise StageUnavailable(
            f"ZenML cannot be loaded here ({error.name}): install zenml"
        ) from None

    run_id = new_run_id()
    drift_run = drift_pipeline(data_dir=data_dir, run_id=run_id, overrides=overrides)
    summary = dict(drift_run.steps["detect_drift"].output.load())
    if "unavailable" in summary:
        raise StageUnavailable(summary["unavailable"])
    details: dict[str, Any] = {"drift": summary, "retrain": None}
    if summary["has_drift"] and retrain:
        retrain_run = retrain_pipeline(
            data_dir=data_dir, current=summary["current"], overrides=overrides
        )
        details["retrain"] = dict(retrain_run.steps["train_and_evaluate"].output.load())
    return details


def check_windows(lake: Any, config: DriftConfig) -> tuple[str, str]:
    """The reference and current specs, before any pipeline starts; raises ``StageUnavailable``
    when the lake holds no encounters or too few windows to compare."""
    require_bronze(lake)
    features = with_windows(lake_encounter_features(lake), window=config.window)
    return choose_windows(features, config=config)


def run(context: StageContext) -> StageResult:
    config = DriftConfig.from_settings(context.settings)
    check_windows(context.lake, config)
    details = run_pipelines(str(context.lake.data_dir), overrides={}, retrain=config.retrain)
    summary = details["drift"]
    counts = {
        "drifted_features": summary["drifted_features"],
        "metrics_rows": summary["metrics_rows"],
        "profiles": summary["profiles"],
        "retrained": details["retrain"] is not None,
        "promoted": bool(details["retrain"] and details["retrain"]["promoted"]),
        "feature_sets": {
            name: entry.get("unavailable", "compared")
            for name, entry in summary["feature_sets"].items()
        },
    }
    if not summary["passed"]:
        return StageResult(
            status="failed",
            details=counts,
            reason=(
                f"drift gate failed: {summary['drifted_features']} features drifted in "
                f"{summary['current']} against {summary['reference']}; see carelake drift report"
            ),
        )
    return StageResult(status="ok", details=counts)
