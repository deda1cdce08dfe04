"""Step: list the image attachments of the bronze layer (Media, DocumentReference,
DiagnosticReport) in ``ml.images``; returns counts only."""

from __future__ import annotations

from typing import Any

from zenml import step

from ml_pipelines.vision.attachments import import_from_lake
from ml_pipelines.vision.lake_access import lake_for


@step(enable_cache=False)
def collect_attachments(lake_reference: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """Runs after ``check_weights`` so nothing is written when the weights are missing."""
    del provenance  # an ordering dependency: the weights were found
    return import_from_lake(lake_for(lake_reference)).as_json()
