"""The Iceberg tables the NLP stage writes, their Arrow schemas, and how rows reach them.

``ml.note_mentions``: one row per concept mention (document, patient key, code and system, span
offsets, context, confidence, model id and hash, concept-database version, pipeline run).
``ml.note_status``: one row per attachment per run, processed or not, with the reason.
``ml.note_embeddings``: one sentence-transformers vector per processed note.
None holds note text.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

logger = logging.getLogger(__name__)

MENTIONS = "ml.note_mentions"
STATUS = "ml.note_status"
EMBEDDINGS = "ml.note_embeddings"
TABLES = (MENTIONS, STATUS, EMBEDDINGS)

_TIMESTAMP = pa.timestamp("us", tz="UTC")

MENTION_SCHEMA = pa.schema([
    ("document_id", pa.string()),
    ("resource_type", pa.string()),
    ("attachment_index", pa.int32()),
    ("patient_key", pa.string()),
    ("encounter_id", pa.string()),
    ("concept_system", pa.string()),
    ("concept_code", pa.string()),
    ("concept_name", pa.string()),
    ("span_start", pa.int32()),
    ("span_end", pa.int32()),
    ("context", pa.string()),
    ("context_method", pa.string()),
    ("confidence", pa.float64()),
    ("model_id", pa.string()),
    ("model_hash", pa.string()),
    ("cdb_version", pa.string()),
    ("pipeline_run_id", pa.string()),
    ("extracted_at", _TIMESTAMP),
])

STATUS_SCHEMA = pa.schema([
    ("document_id", pa.string()),
    ("resource_type", pa.string()),
    ("attachment_index", pa.int32()),
    ("patient_key", pa.string()),
    ("encounter_id", pa.string()),
    ("content_type", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("characters", pa.int64()),
    ("mention_count", pa.int32()),
    ("model_id", pa.string()),
    ("pipeline_run_id", pa.string()),
    ("processed_at", _TIMESTAMP),
])


def embedding_schema(dimensions: int) -> pa.Schema:
    return pa.schema([
        ("document_id", pa.string()),
        ("resource_type", pa.string()),
        ("attachment_index", pa.int32()),
        ("patient_key", pa.string()),
        ("note_date", pa.string()),
        ("embedding_model", pa.string()),
        ("embedding", pa.list_(pa.float32(), dimensions)),
        ("pipeline_run_id", pa.string()),
        ("embedded_at", _TIMESTAMP),
    ])


def to_arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def append(lake: Any, identifier: str, table: pa.Table) -> int | None:
    """Append to a lake table; returns the new snapshot id (None when nothing was written)."""
    if table.num_rows == 0:
        return None
    lake.append(identifier, table)
    snapshot = lake.table(identifier).current_snapshot()
    logger.info("appended %d rows to %s", table.num_rows, identifier)
    return snapshot.snapshot_id if snapshot else None
