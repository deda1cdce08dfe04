"""Step: score the lake's pending images and append the findings; returns counts only."""

from __future__ import annotations

import logging
from typing import Any

from zenml import step

from infra.errors import StageUnavailable
from ml_pipelines.vision import tables
from ml_pipelines.vision.inference import choose_device
from ml_pipelines.vision.lake_access import lake_for
from ml_pipelines.vision.options import VisionOptions
from ml_pipelines.vision.scoring import score_lake
from ml_pipelines.vision.weights import load_model

logger = logging.getLogger(__name__)


@step(enable_cache=False)
def score_images(lake_reference: str, options: dict[str, Any],
                 provenance: dict[str, Any]) -> dict[str, Any]:
    """Score with the weights ``check_weights`` vouched for; the findings go to the lake."""
    vision = VisionOptions(**options)
    lake = lake_for(lake_reference)
    model = load_model(vision.model, cache_dir=vision.cache_dir,
                       pinned_sha256=vision.weights_sha256,
                       device=choose_device(vision.device))
    if model.weights_sha256 != provenance["weights_sha256"]:
        raise StageUnavailable("the weights file changed while the run was starting: run again")

    report = score_lake(lake, model, batch_size=vision.batch_size)
    summary = report.as_json()
    summary["findings_snapshot_id"] = (
        lake.table(tables.FINDINGS_TABLE).current_snapshot().snapshot_id
        if lake.has_table(tables.FINDINGS_TABLE) else None
    )
    return summary
