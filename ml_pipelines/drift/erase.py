"""Erasure for drift: remove the stored profiles and reports, which a rerun rebuilds.

Drift keeps no per-patient rows, but a whylogs profile of a small window holds sketches (a
minimum, a maximum, frequent items) that can describe one person, and a report plots them.
When a patient is forgotten every stored profile and report is removed; the metrics table
(``ml.drift_metrics``) holds one aggregate row per feature and comparison and stays.
"""

from __future__ import annotations

import logging
from typing import Any

from infra.forget_registry import eraser
from ml_pipelines.drift.profiles import PROFILE_ROOT
from ml_pipelines.drift.report import REPORT_ROOT

logger = logging.getLogger(__name__)


@eraser("drift")
def erase_patient(lake: Any, patient_key: str) -> int:
    """Remove every stored drift profile and report; returns how many files were removed."""
    removed = 0
    for root in (PROFILE_ROOT, REPORT_ROOT):
        if not lake.fs.exists(root):
            continue
        files = [path for path in lake.fs.find(root) if lake.fs.isfile(path)]
        for path in files:
            lake.fs.rm_file(path)
        removed += len(files)
    logger.info("erasure removed %d drift profile and report files (rebuilt at the next run)",
                removed)
    return removed
