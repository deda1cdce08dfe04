"""The imaging pipeline: check the weights, list the lake's image attachments, score the images.

Steps pass the lake's data folder, the options, the weights' provenance and counts: never pixels,
never patient data. Import this module only after ``zenml_env.use_local_zenml``.
"""

from __future__ import annotations

from typing import Any

from zenml import pipeline

from ml_pipelines.steps.vision.check_weights import check_weights
from ml_pipelines.steps.vision.collect_attachments import collect_attachments
from ml_pipelines.steps.vision.score_images import score_images


@pipeline(enable_cache=False)
def vision_pipeline(lake_reference: str, options: dict[str, Any]) -> None:
    provenance = check_weights(options=options)
    collected = collect_attachments(lake_reference=lake_reference, provenance=provenance)
    score_images(lake_reference=lake_reference, options=options, provenance=provenance,
                 after=[collected])


def run_vision_pipeline(lake_reference: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run the pipeline; returns the score step's summary with the attachment counts."""
    run = vision_pipeline(lake_reference=lake_reference, options=options)
    summary = dict(run.steps["score_images"].output.load())
    summary["attachments"] = dict(run.steps["collect_attachments"].output.load())
    return summary
