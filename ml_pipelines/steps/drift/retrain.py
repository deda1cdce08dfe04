"""Steps of the retraining pipeline: train a candidate on the current window, promote on merit.

The candidate and its metrics are kept as a new version in ZenML's Model Control Plane; the
model itself is written encrypted in the lake and the version records only its path and
metrics. The production version is scored on the same held-out patients.
"""

from __future__ import annotations

import logging
from typing import Any

from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.enums import ModelStages

from ml_pipelines.drift import lake_io, retraining, windows
from ml_pipelines.drift.prevalence_model import PrevalenceModel
from ml_pipelines.steps.drift.lake_access import drift_config, open_lake

logger = logging.getLogger(__name__)

MODEL_NAME = "carelake-condition-prevalence"


def production_model(lake: Any) -> tuple[PrevalenceModel | None, int | None]:
    """The production version's model and number, or (None, None) before the first promotion."""
    try:
        version = Client().get_model_version(MODEL_NAME, ModelStages.PRODUCTION)
    except KeyError:
        return None, None
    path = version.run_metadata.get("model_path")
    if not path:
        return None, None
    return PrevalenceModel.from_json(lake_io.read_file(lake, str(path))), version.number


@step(enable_cache=False)
def rebuild_nlp_concepts(data_dir: str, current: str) -> str:
    """Rebuild the NLP concept database from the current window's coding, where NLP ships it."""
    try:
        from ml_pipelines.nlp.concepts import build_cdb
    except ImportError:
        logger.warning("this build has no ml_pipelines.nlp.concepts.build_cdb; the NLP concept "
                       "database is not rebuilt, only the prevalence model is retrained")
        return "not available"
    lake = open_lake(data_dir)
    build_cdb(lake=lake, window=current)
    return "rebuilt"


@step(enable_cache=False)
def train_and_evaluate(
    data_dir: str, current: str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Train on the current window minus its held-out patients; score both versions there."""
    lake = open_lake(data_dir)
    config = drift_config(lake, overrides)
    features = windows.with_windows(lake_io.lake_encounter_features(lake), window=config.window)
    production, production_number = production_model(lake)
    outcome = retraining.retrain(
        windows.select(features, current), window=current, production=production, config=config
    )

    version = get_step_context().model
    path = lake_io.model_path(f"{MODEL_NAME}-{version.number}")
    lake_io.write_file(lake, path, outcome.candidate.to_json())
    metadata = {**outcome.metadata(), "model_path": path}
    if production_number is not None:
        metadata["production_version"] = production_number
    log_metadata(metadata=metadata, infer_model=True)
    return metadata


@step(enable_cache=False)
def promote_if_better(decision: dict[str, Any]) -> str:
    """Make this version production when it beat production on the held-out patients."""
    version = get_step_context().model
    if not decision["promoted"]:
        logger.info("model %s version %s kept out of production: held-out Brier %.5f against %s",
                    MODEL_NAME, version.number, decision["holdout_brier"],
                    decision.get("production_holdout_brier"))
        return "kept"
    version.set_stage(ModelStages.PRODUCTION, force=True)
    logger.info("model %s version %s promoted to production", MODEL_NAME, version.number)
    return "promoted"
