"""The imaging pipeline: check the weights, then score the lake's images with them.

Steps pass the lake's data folder, the options, the weights' provenance and counts: never pixels,
never patient data. Import this module only after ``zenml_env.use_local_zenml``.
"""

from __future__ import annotations

from typing import Any

from zenml import pipeline

from ml_pipelines.steps.vision.check_weights import check_weights
from ml_pipelines.steps.vision.score_images import score_images


@pipeline(enable_cache=False)
def vision_pipeline(lake_reference: str, options: dict[str, Any]) -> None:
    provenance = check_weights(options=options)
    score_images(lake_reference=lake_reference, options=options, provenance=provenance)


def run_vision_pipeline(lake_reference: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run the pipeline and return the score step's summary (counts and provenance)."""
    run = vision_pipeline(lake_reference=lake_reference, options=options)
    return dict(run.steps["score_images"].output.load())
