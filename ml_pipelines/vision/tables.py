"""The two Iceberg tables of the imaging stage and how their rows are made.

``ml.images`` has one row per image of a patient: its bytes are ciphertext under
``ml/images/<sha256>.<ext>``, or, for an image known only by a url, ``missing_reason`` says why
there are none. ``ml.imaging_findings`` has, per run and image, one row per
pathology the model scores, or a single row with ``status = 'skipped'`` and the reason when the
image was not scored.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from ml_pipelines.vision.weights import ModelSpec

IMAGES_TABLE = "ml.images"
FINDINGS_TABLE = "ml.imaging_findings"
IMAGE_FOLDER = "ml/images"

_TIME = pa.timestamp("us", tz="UTC")

IMAGES_SCHEMA = pa.schema([
    pa.field("image_id", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("patient_key", pa.string()),
    pa.field("study_instance_uid", pa.string()),
    pa.field("series_instance_uid", pa.string()),
    pa.field("sop_instance_uid", pa.string()),
    pa.field("modality", pa.string()),
    pa.field("body_part", pa.string()),
    pa.field("view_position", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("storage_path", pa.string()),
    pa.field("source", pa.string()),
    pa.field("missing_reason", pa.string()),
    pa.field("import_id", pa.string()),
    pa.field("imported_at", _TIME),
])

FINDINGS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()),
    pa.field("image_id", pa.string()),
    pa.field("patient_key", pa.string()),
    pa.field("study_instance_uid", pa.string()),
    pa.field("series_instance_uid", pa.string()),
    pa.field("sop_instance_uid", pa.string()),
    pa.field("status", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("pathology", pa.string()),
    pa.field("probability", pa.float64()),
    pa.field("threshold", pa.float64()),
    pa.field("is_above_threshold", pa.bool_()),
    pa.field("model_id", pa.string()),
    pa.field("weights_sha256", pa.string()),
    pa.field("scored_at", _TIME),
])

CONTENT_TYPES = {"dicom": "application/dicom", "png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS = {"application/dicom": "dcm", "image/png": "png", "image/jpeg": "jpg"}


def image_id(*, patient_key: str, sha256: str) -> str:
    """Stable id of one image of one patient: importing the same file twice finds the same id."""
    return hashlib.sha256(f"carelake-image|{patient_key}|{sha256}".encode()).hexdigest()[:32]


def storage_path(*, sha256: str, content_type: str) -> str:
    return f"{IMAGE_FOLDER}/{sha256}.{EXTENSIONS[content_type]}"


_IMAGE_KEYS = ("image_id", "patient_key", "study_instance_uid", "series_instance_uid",
               "sop_instance_uid")


def scored_rows(
    image: dict[str, object],
    probabilities: np.ndarray,
    *,
    spec: ModelSpec,
    weights_sha256: str,
    run_id: str,
    scored_at: datetime,
) -> list[dict[str, object]]:
    """One row per label of ``spec`` for an image with its probabilities."""
    rows = []
    for label, threshold, probability in zip(spec.labels, spec.thresholds, probabilities,
                                             strict=True):
        value = float(probability)
        rows.append({
            "run_id": run_id,
            **{key: image.get(key) for key in _IMAGE_KEYS},
            "status": "scored",
            "reason": None,
            "pathology": label,
            "probability": value,
            "threshold": threshold,
            "is_above_threshold": None if threshold is None or math.isnan(value)
            else value >= threshold,
            "model_id": spec.model_id,
            "weights_sha256": weights_sha256,
            "scored_at": scored_at,
        })
    return rows


def skipped_row(
    image: dict[str, object],
    *,
    reason: str,
    spec: ModelSpec,
    weights_sha256: str,
    run_id: str,
    scored_at: datetime,
) -> dict[str, object]:
    """The single row of an image the run did not score, with the reason."""
    return {
        "run_id": run_id,
        **{key: image.get(key) for key in _IMAGE_KEYS},
        "status": "skipped",
        "reason": reason,
        "pathology": None,
        "probability": None,
        "threshold": None,
        "is_above_threshold": None,
        "model_id": spec.model_id,
        "weights_sha256": weights_sha256,
        "scored_at": scored_at,
    }


def findings_table(rows: Sequence[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=FINDINGS_SCHEMA)


def images_table(rows: Sequence[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=IMAGES_SCHEMA)
