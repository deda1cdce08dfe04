"""Score the lake's images with a TorchXRayVision model and append findings to the lake.

An image already scored by the same model and weights (same sha256) is not scored again. Images
are read from ``lake.fs`` one batch at a time, prepared, scored, and their findings appended to
``ml.imaging_findings`` in chunks, so memory is bounded by the chunk, not by the lake.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ml_pipelines.vision import tables
from ml_pipelines.vision.inference import DEFAULT_BATCH_SIZE, score
from ml_pipelines.vision.preprocess import Prepared, Skipped, check_series, prepare
from ml_pipelines.vision.weights import LoadedModel

logger = logging.getLogger(__name__)

#: images per Iceberg commit of findings
CHUNK_IMAGES = 256


@dataclass
class ScoreReport:
    run_id: str
    model_id: str
    weights_sha256: str
    images: int = 0
    scored: int = 0
    skipped: int = 0
    already_scored: int = 0
    findings: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "model_id": self.model_id,
            "weights_sha256": self.weights_sha256, "images": self.images,
            "scored": self.scored, "skipped": self.skipped,
            "already_scored": self.already_scored, "findings": self.findings,
            "skip_reasons": dict(self.skip_reasons),
        }


def pending_images(lake: Any, *, model_id: str, weights_sha256: str) -> list[dict[str, Any]]:
    """Rows of ``ml.images`` with no findings yet from this model and these weights."""
    if not lake.has_table(tables.IMAGES_TABLE):
        return []
    images = lake.read_arrow(tables.IMAGES_TABLE).to_pylist()
    done: set[str] = set()
    if lake.has_table(tables.FINDINGS_TABLE):
        where = f"model_id == '{_quoted(model_id)}' and weights_sha256 == '{weights_sha256}'"
        done = set(lake.read_arrow(tables.FINDINGS_TABLE, where=where,
                                   columns=("image_id",)).column("image_id").to_pylist())
    return sorted((row for row in images if row["image_id"] not in done),
                  key=lambda row: row["image_id"])


def score_lake(
    lake: Any,
    model: LoadedModel,
    *,
    run_id: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ScoreReport:
    """Score every pending image of the lake; returns the counts (no patient data)."""
    report = ScoreReport(run_id=run_id or uuid.uuid4().hex, model_id=model.spec.model_id,
                         weights_sha256=model.weights_sha256)
    total = 0
    if lake.has_table(tables.IMAGES_TABLE):
        total = len(lake.read_arrow(tables.IMAGES_TABLE, columns=("image_id",)))
    pending = pending_images(lake, model_id=model.spec.model_id,
                             weights_sha256=model.weights_sha256)
    report.images = len(pending)
    report.already_scored = total - len(pending)
    scored_at = datetime.now(UTC)

    for start in range(0, len(pending), CHUNK_IMAGES):
        rows = _score_chunk(lake, model, pending[start:start + CHUNK_IMAGES], report=report,
                            batch_size=batch_size, scored_at=scored_at)
        lake.append(tables.FINDINGS_TABLE, tables.findings_table(rows))
        report.findings += len(rows)

    lake.audit.append("vision.scored", **report.as_json())
    logger.info(
        "vision run %s: %d image(s) scored, %d skipped, %d already scored, %d finding row(s) by "
        "%s (weights %s)", report.run_id, report.scored, report.skipped, report.already_scored,
        report.findings, report.model_id, report.weights_sha256[:12],
    )
    return report


def _score_chunk(
    lake: Any,
    model: LoadedModel,
    images: list[dict[str, Any]],
    *,
    report: ScoreReport,
    batch_size: int,
    scored_at: datetime,
) -> list[dict[str, Any]]:
    provenance = {"spec": model.spec, "weights_sha256": model.weights_sha256,
                  "run_id": report.run_id, "scored_at": scored_at}
    rows: list[dict[str, Any]] = []
    ready: list[tuple[dict[str, Any], np.ndarray]] = []
    for image in images:
        outcome = _prepare_stored(lake, image, resolution=model.spec.resolution)
        if isinstance(outcome, Skipped):
            rows.append(tables.skipped_row(image, reason=outcome.reason, **provenance))
            report.skipped += 1
            report.skip_reasons[outcome.reason] = report.skip_reasons.get(outcome.reason, 0) + 1
            continue
        ready.append((image, outcome.pixels))

    probabilities = score(model, [pixels for _, pixels in ready], batch_size=batch_size)
    for (image, _), values in zip(ready, probabilities, strict=True):
        rows.extend(tables.scored_rows(image, values, **provenance))
    report.scored += len(ready)
    return rows


def _prepare_stored(lake: Any, image: dict[str, Any], *, resolution: int) -> Prepared | Skipped:
    if image.get("missing_reason"):
        # a modality or body part that would not be scored anyway is the more useful reason
        return check_series(modality=image.get("modality") or "",
                            body_part=image.get("body_part") or "",
                            view_position=image.get("view_position") or "") or Skipped(
            reason=str(image["missing_reason"]))
    path = image.get("storage_path")
    if not path or not lake.fs.exists(path):
        return Skipped(reason="image bytes are not in the lake: import the file again")
    with lake.fs.open(path, "rb") as handle:
        data = handle.read()
    try:
        return prepare(data, resolution=resolution, modality=image.get("modality"),
                       body_part=image.get("body_part"), view_position=image.get("view_position"))
    except Exception as error:  # a damaged file is one skipped image, not a failed run
        return Skipped(reason=f"image could not be decoded ({type(error).__name__})")


def _quoted(text: str) -> str:
    return text.replace("'", "''")
