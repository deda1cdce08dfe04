"""Erase one patient's images and findings: the rows of both tables and the stored image files."""

from __future__ import annotations

import logging
from typing import Any

from infra.forget_registry import eraser
from ml_pipelines.vision import tables

logger = logging.getLogger(__name__)


@eraser("vision")
def erase_patient(lake: Any, patient_key: str) -> int:
    """Delete the patient's rows from ``ml.imaging_findings`` and ``ml.images``; returns rows."""
    where = f"patient_key == '{patient_key.replace(chr(39), chr(39) * 2)}'"
    paths: set[str] = set()
    if lake.has_table(tables.IMAGES_TABLE):
        rows = lake.read_arrow(tables.IMAGES_TABLE, where=where, columns=("storage_path",))
        paths = {path for path in rows.column("storage_path").to_pylist() if path}

    deleted = lake.delete(tables.FINDINGS_TABLE, where) + lake.delete(tables.IMAGES_TABLE, where)

    # an identical file may belong to another patient too: keep what is still listed
    still_listed: set[str] = set()
    if paths and lake.has_table(tables.IMAGES_TABLE):
        column = lake.read_arrow(tables.IMAGES_TABLE, columns=("storage_path",))
        still_listed = set(column.column("storage_path").to_pylist())
    removed = 0
    for path in sorted(paths - still_listed):
        if lake.fs.exists(path):
            lake.fs.rm(path)
            removed += 1
    logger.info("vision erasure: %d row(s) deleted, %d image file(s) removed", deleted, removed)
    return deleted
