"""Keep a model's figures in ZenML's Model Control Plane: model ``carelake-nlp``, one version per
model built (named by its model id, which carries the concept-database version)."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

MODEL_NAME = "carelake-nlp"


def record_model_version(model: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Create the model version when new, then log the model's identity and ``metrics`` on it."""
    from zenml import log_metadata
    from zenml.client import Client

    client = Client()
    try:
        client.get_model(MODEL_NAME)
    except KeyError:
        client.create_model(
            name=MODEL_NAME,
            description="MedCAT concept extraction with ConText over the lake's notes",
        )
    try:
        version = client.get_model_version(MODEL_NAME, model["model_id"])
    except KeyError:
        version = client.create_model_version(MODEL_NAME, name=model["model_id"])
    identity = {key: model[key] for key in ("model_id", "model_hash", "cdb_version", "concepts",
                                            "names", "source")}
    log_metadata(metadata={"model": identity, **metrics}, model_version_id=version.id)
    logger.info("recorded %d metric groups on %s version %s", len(metrics), MODEL_NAME,
                model["model_id"])
    return str(version.id)
