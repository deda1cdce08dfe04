"""Erase one patient from the bronze layer: every resource about them, and their quarantine."""

from __future__ import annotations

from dlt_pipelines.fhir.bronze import NAMESPACE, QUARANTINE
from infra.forget_registry import eraser


@eraser("bronze")
def erase_bronze(lake, patient_key: str) -> int:
    deleted = 0
    for identifier in lake.tables(NAMESPACE):
        if identifier == QUARANTINE:
            continue
        deleted += lake.delete(identifier, f"patient_key == '{patient_key}'")
    deleted += lake.delete(QUARANTINE, f"patient_key == '{patient_key}'")
    return deleted
