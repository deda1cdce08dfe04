"""Drift's reads and writes in the lake: features from bronze, metrics, profiles, reports, models.

Everything goes through the lake: metrics to the Iceberg table ``ml.drift_metrics``, profiles,
reports and model versions as files through the encrypted filesystem (``lake.fs``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from infra.errors import StageUnavailable
from ml_pipelines.drift import fhir_features
from ml_pipelines.drift.compare import Comparison
from ml_pipelines.drift.features import FeatureSet
from ml_pipelines.drift.profiles import path_segment

logger = logging.getLogger(__name__)

METRICS_TABLE = "ml.drift_metrics"
MODEL_ROOT = "ml/drift/models"
BRONZE_TABLES = ("patient", "encounter", "condition", "medicationrequest", "procedure",
                 "immunization")

METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("computed_at", pa.timestamp("us", tz="UTC")),
        ("feature_set", pa.string()),
        ("reference_window", pa.string()),
        ("current_window", pa.string()),
        ("feature", pa.string()),
        ("label", pa.string()),
        ("kind", pa.string()),
        ("reference_n", pa.int64()),
        ("current_n", pa.int64()),
        ("test", pa.string()),
        ("statistic", pa.float64()),
        ("p_value", pa.float64()),
        ("adjusted_p", pa.float64()),
        ("effect_h", pa.float64()),
        ("hellinger", pa.float64()),
        ("psi", pa.float64()),
        ("reference_value", pa.float64()),
        ("current_value", pa.float64()),
        ("difference", pa.float64()),
        ("difference_low", pa.float64()),
        ("difference_high", pa.float64()),
        ("is_drifted", pa.bool_()),
        ("description", pa.string()),
        ("whylogs_p_value", pa.float64()),
    ]
)


def require_bronze(lake: Any) -> str:
    """The bronze namespace; raises ``StageUnavailable`` when it holds no encounters yet."""
    namespace = lake.settings.get("lake.bronze_namespace") or "bronze"
    if not lake.has_table(f"{namespace}.encounter"):
        raise StageUnavailable(
            f"the lake has no {namespace}.encounter table: run the ingest stage first"
        )
    return namespace


def bronze_resources(lake: Any) -> Iterator[dict[str, Any]]:
    """The resources of the bronze tables drift reads, as dicts."""
    namespace = require_bronze(lake)
    for name in BRONZE_TABLES:
        identifier = f"{namespace}.{name}"
        if not lake.has_table(identifier):
            continue
        resources = lake.read_arrow(identifier, columns=("resource",)).column("resource")
        for text in resources.to_pylist():
            if text:
                yield json.loads(text)


def lake_encounter_features(lake: Any) -> FeatureSet:
    return fhir_features.encounter_features(bronze_resources(lake), name="encounters")


def write_metrics(
    lake: Any,
    comparison: Comparison,
    *,
    run_id: str,
    whylogs: dict[str, dict[str, float | None]] | None = None,
) -> int:
    """Append one row per tested feature to ``ml.drift_metrics``; returns the rows written."""
    now = datetime.now(UTC)
    whylogs = whylogs or {}
    rows = []
    for item in comparison.features:
        sketch = whylogs.get(item.feature, {})
        rows.append(
            {
                "run_id": run_id,
                "computed_at": now,
                "feature_set": comparison.feature_set,
                "reference_window": comparison.reference,
                "current_window": comparison.current,
                "feature": item.feature,
                "label": item.label,
                "kind": item.kind,
                "reference_n": item.reference_n,
                "current_n": item.current_n,
                "test": item.test,
                "statistic": item.statistic,
                "p_value": item.p_value,
                "adjusted_p": item.adjusted_p,
                "effect_h": item.effect_h,
                "hellinger": item.hellinger,
                "psi": item.psi,
                "reference_value": item.reference_value,
                "current_value": item.current_value,
                "difference": item.difference,
                "difference_low": item.difference_low,
                "difference_high": item.difference_high,
                "is_drifted": item.drifted,
                "description": item.description,
                "whylogs_p_value": sketch.get(
                    "whylogs_ks_p_value", sketch.get("whylogs_chi-square_p_value")
                ),
            }
        )
    lake.append(METRICS_TABLE, pa.Table.from_pylist(rows, schema=METRICS_SCHEMA))
    logger.info("wrote %d drift metric rows of run %s to %s", len(rows), run_id, METRICS_TABLE)
    return len(rows)


def report_paths(feature_set: str, run_id: str) -> tuple[str, str]:
    base = f"reports/drift/{path_segment(feature_set)}/{path_segment(run_id)}"
    return f"{base}/report.json", f"{base}/report.html"


def write_file(lake: Any, path: str, data: bytes) -> None:
    lake.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with lake.fs.open(path, "wb") as handle:
        handle.write(data)


def read_file(lake: Any, path: str) -> bytes:
    with lake.fs.open(path, "rb") as handle:
        return handle.read()


def latest_report(lake: Any, *, feature_set: str = "encounters") -> str:
    """The newest stored report's JSON path (run ids sort by time)."""
    root = f"reports/drift/{path_segment(feature_set)}"
    if not lake.fs.exists(root):
        raise StageUnavailable(
            f"no drift report is stored yet under {root}: run carelake drift run"
        )
    runs = sorted(entry.rsplit("/", 1)[-1] for entry in lake.fs.ls(root, detail=False))
    return f"{root}/{runs[-1]}/report.json"


def model_path(version: str) -> str:
    return f"{MODEL_ROOT}/{path_segment(version)}.json"
