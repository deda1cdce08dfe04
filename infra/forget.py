"""The right to be forgotten: erase one patient everywhere, for good.

1. Every stage's eraser deletes the patient's rows from what it wrote (``forget_registry``).
2. The patient's own key is destroyed (crypto-shredding): identifiers and notes sealed under it
   are unreadable at once in every snapshot and every backup of the data folder.
3. Snapshots older than the erasure and older than the retention window are expired (default: at
   once; a legal hold sets ``retention.erased_snapshot_days``), and orphan files are removed, so
   the erased rows leave the disk too.
4. An erasure record (pseudonymous key, rows per stage, snapshots expired, retention) goes to the
   audit log. The patient's key is gone, so the record links to no one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from infra.errors import ConfigError
from infra.forget_registry import load_erasers
from infra.maintenance import expire_snapshots, remove_orphans

logger = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    patient_key: str
    rows: dict[str, int] = field(default_factory=dict)
    key_destroyed: bool = False
    snapshots_expired: int = 0
    files_removed: int = 0
    retention_days: float = 0
    held_snapshots: int = 0

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def resolve_patient(lake, *, patient_key: str | None = None,
                    source_id: str | None = None) -> str:
    if patient_key:
        return patient_key
    if source_id:
        reference = source_id if source_id.startswith("Patient/") else f"Patient/{source_id}"
        key = lake.patients.key_for_source(reference, create=False)
        if key is None:
            raise ConfigError("no patient with that source id is in this lake (or it was erased)")
        return key.pseudonym
    raise ConfigError("name the patient: --patient-key KEY or --source-id Patient/ID")


def forget(lake, patient_key: str, *, retention_days: float | None = None) -> ErasureReport:
    days = float(lake.settings.get("retention.erased_snapshot_days")
                 if retention_days is None else retention_days)
    report = ErasureReport(patient_key=patient_key, retention_days=days)

    for name, erase in sorted(load_erasers().items()):
        report.rows[name] = erase(lake, patient_key)

    report.key_destroyed = lake.patients.destroy(patient_key)

    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    for namespace in sorted({ns[0] for ns in lake.catalog.list_namespaces()}):
        for identifier in lake.tables(namespace):
            report.snapshots_expired += expire_snapshots(lake, identifier, older_than=cutoff)
            report.files_removed += remove_orphans(lake, identifier)
            report.held_snapshots += len(lake.table(identifier).metadata.snapshots) - 1

    lake.audit.append("erasure", **report.as_json())
    logger.info("erased patient: %d rows in %d stages, key destroyed=%s, %d snapshots expired, "
                "%d files removed", sum(report.rows.values()), len(report.rows),
                report.key_destroyed, report.snapshots_expired, report.files_removed)
    return report
