"""Erase one patient's rows from every table the NLP stage writes."""

from __future__ import annotations

import logging
import re
from typing import Any

from infra.errors import ConfigError
from infra.forget_registry import eraser
from ml_pipelines.nlp.tables import TABLES

logger = logging.getLogger(__name__)

_PSEUDONYM = re.compile(r"[0-9A-Za-z_-]{1,128}")


@eraser("nlp")
def erase_patient(lake: Any, patient_key: str) -> int:
    """Delete the patient's mentions, note statuses and note embeddings; returns rows deleted."""
    if not _PSEUDONYM.fullmatch(patient_key):
        raise ConfigError("a patient key is letters, digits, '-' and '_' only: check the key given")
    deleted = sum(lake.delete(table, f"patient_key == '{patient_key}'") for table in TABLES)
    logger.info("nlp eraser: %d rows deleted", deleted)
    return deleted
