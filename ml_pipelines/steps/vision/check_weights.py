"""Step: find the model's weights and record their provenance (model id, file, sha256)."""

from __future__ import annotations

import logging
from typing import Any

from zenml import step

from ml_pipelines.vision.options import VisionOptions
from ml_pipelines.vision.weights import model_spec, verify_weights

logger = logging.getLogger(__name__)


@step(enable_cache=False)
def check_weights(options: dict[str, Any]) -> dict[str, Any]:
    """Provenance of the weights the run will use; fails when they are absent or not pinned."""
    vision = VisionOptions(**options)
    spec = model_spec(vision.model)
    path, sha256 = verify_weights(spec, cache_dir=vision.cache_dir,
                                  pinned_sha256=vision.weights_sha256)
    logger.info("weights for %s: %s, sha256 %s", spec.model_id, path.name, sha256[:12])
    return {"model_id": spec.model_id, "file_name": spec.file_name, "weights_sha256": sha256,
            "labels": len(spec.labels), "resolution": spec.resolution}
