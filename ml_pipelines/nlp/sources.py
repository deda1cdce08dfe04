"""Where notes come from: the lake's bronze tables, or plain public files for development and tests.

In the lake, attachment data are ciphertext tokens under the patient's key; ``notes_from_lake``
opens each through ``lake.patients.open_token`` and never writes the text anywhere. The file
readers serve the public sample data (Bulk NDJSON, transaction bundles, folders of ``.txt`` notes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ml_pipelines.nlp.notes import NOTE_TYPES, Note, notes_of

logger = logging.getLogger(__name__)

BRONZE_TABLES = {"DocumentReference": "bronze.documentreference",
                 "DiagnosticReport": "bronze.diagnosticreport"}


def bronze_snapshot(lake: Any, identifier: str) -> int | None:
    """The current snapshot id of a bronze table, or None when the table does not exist."""
    if not lake.has_table(identifier):
        return None
    snapshot = lake.table(identifier).current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def notes_from_lake(lake: Any, *, snapshots: dict[str, int | None] | None = None) -> Iterator[Note]:
    """Notes of ``bronze.documentreference`` and ``bronze.diagnosticreport`` (at the snapshots
    given, else the current ones); a table that does not exist yields nothing."""
    for resource_type, identifier in BRONZE_TABLES.items():
        snapshot_id = (snapshots or {}).get(identifier)
        if snapshots is not None and snapshot_id is None:
            continue
        if not lake.has_table(identifier):
            logger.info("%s does not exist: no %s notes", identifier, resource_type)
            continue
        table = lake.read_arrow(
            identifier, columns=("id", "patient_key", "resource"), snapshot_id=snapshot_id
        )
        for row in table.to_pylist():
            patient_key = row["patient_key"]

            def open_value(token: str, _key: str | None = patient_key) -> str:
                return lake.patients.open_token(_key, token)

            yield from notes_of(
                json.loads(row["resource"]), patient_key=patient_key, open_value=open_value
            )


def notes_from_ndjson(path: Path) -> Iterator[Note]:
    """Notes of a Bulk Data NDJSON file of DocumentReference or DiagnosticReport resources."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                resource = json.loads(line)
                if resource.get("resourceType") in NOTE_TYPES:
                    yield from notes_of(resource, patient_key=None)


def notes_from_bundle(path: Path) -> Iterator[Note]:
    """Notes of the DocumentReference and DiagnosticReport entries of one FHIR Bundle."""
    bundle = json.loads(path.read_text(encoding="utf-8"))
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") in NOTE_TYPES:
            yield from notes_of(resource, patient_key=None)


def notes_from_text_folder(folder: Path) -> Iterator[Note]:
    """Each ``.txt`` file as one DocumentReference note; ids are digests, not file names."""
    for path in sorted(folder.glob("*.txt")):
        digest = hashlib.sha256(path.name.encode()).hexdigest()[:16]
        resource = {
            "resourceType": "DocumentReference",
            "id": f"txt-{digest}",
            "content": [{"attachment": {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(path.read_bytes()).decode("ascii"),
            }}],
        }
        yield from notes_of(resource, patient_key=None)


def notes_from_path(path: Path) -> Iterator[Note]:
    """Notes of a file (``.ndjson``, ``.json`` bundle) or a folder (its notes files, recursively
    for NDJSON and bundles, plus its ``.txt`` files)."""
    if path.is_file():
        yield from notes_from_ndjson(path) if path.suffix == ".ndjson" else notes_from_bundle(path)
        return
    for ndjson in sorted(path.glob("DocumentReference*.ndjson")) + sorted(
        path.glob("DiagnosticReport*.ndjson")
    ):
        yield from notes_from_ndjson(ndjson)
    for bundle in sorted(path.glob("*.json")):
        yield from notes_from_bundle(bundle)
    yield from notes_from_text_folder(path)
