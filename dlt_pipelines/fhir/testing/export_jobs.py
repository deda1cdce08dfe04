"""Bulk Data ``$export`` jobs of the test server: what a kick-off selects, what a manifest lists.

A job takes its snapshot of the store at kick-off, splits each type into NDJSON files of at most
``file_lines`` resources, and reports "in progress" for a set number of status polls before the
manifest is ready, as the Bulk Data Access specification describes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from dlt_pipelines.fhir.testing.store import (
    Deletion,
    ResourceStore,
    StoredResource,
    format_instant,
)

# Types in the Patient compartment are found by their reference to a patient; a type that never
# references one (Organization, Practitioner, Location) is left out of Patient and Group exports.
_PATIENT_REFERENCE = b'"reference":"Patient/'


@dataclass
class ExportJob:
    id: str
    request_url: str
    transaction_time: datetime
    files: dict[str, list[bytes]]
    pending_polls: int
    errors: list[bytes]
    deletions: list[bytes] = field(default_factory=list)
    fail_with: str | None = None
    polls: int = 0
    closed: bool = False
    file_types: dict[str, str] = field(default_factory=dict)


def _mentions_patient(stored: StoredResource, patient_ids: set[str] | None) -> bool:
    if stored.resource_type == "Patient":
        return patient_ids is None or stored.id in patient_ids
    if patient_ids is None:
        return _PATIENT_REFERENCE in stored.body
    return any(
        b'"reference":"Patient/' + patient_id.encode() + b'"' in stored.body
        for patient_id in patient_ids
    )


def error_outcome(number: int) -> bytes:
    """One OperationOutcome line of an export's error file; it names no patient."""
    outcome = {
        "resourceType": "OperationOutcome",
        "id": f"export-error-{number}",
        "issue": [{
            "severity": "error",
            "code": "processing",
            "diagnostics": f"test server: resource {number} could not be serialized",
        }],
    }
    return msgspec.json.encode(outcome)


def deletion_bundle(gone: Sequence[Deletion]) -> bytes:
    """One line of a "deleted" file: a transaction Bundle with a DELETE entry per resource."""
    return msgspec.json.encode({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": f"{d.resource_type}/{d.id}"}} for d in gone
        ],
    })


class ExportJobs:
    """Kick-off, status and output bookkeeping for every export the server was asked for."""

    def __init__(
        self, store: ResourceStore, *, pending_polls: int, file_lines: int, error_lines: int,
        fail_with: str | None,
    ) -> None:
        self._store = store
        self._pending_polls = pending_polls
        self._file_lines = file_lines
        self._error_lines = error_lines
        self._fail_with = fail_with
        self._lock = threading.Lock()
        self.jobs: dict[str, ExportJob] = {}

    def start(
        self, *, request_url: str, types: Sequence[str] | None, since: datetime | None,
        patient_ids: set[str] | None, patient_level: bool,
    ) -> ExportJob:
        files: dict[str, list[bytes]] = {}
        file_types: dict[str, str] = {}
        for resource_type in types or self._store.types():
            selected = [
                stored for stored in self._store.search(resource_type)
                if (since is None or stored.last_updated > since)
                and (not patient_level or _mentions_patient(stored, patient_ids))
            ]
            for start in range(0, len(selected), self._file_lines):
                name = f"{resource_type}-{start // self._file_lines + 1}.ndjson"
                chunk = selected[start:start + self._file_lines]
                files[name] = [stored.body for stored in chunk]
                file_types[name] = resource_type

        errors = [error_outcome(number) for number in range(1, self._error_lines + 1)]
        deletions = []
        if since is not None:
            gone = [d for d in self._store.deletions(since=since)
                    if types is None or d.resource_type in types]
            if gone:
                deletions.append(deletion_bundle(gone))
        job = ExportJob(
            id=uuid.uuid4().hex,
            request_url=request_url,
            # The store's clock: what was updated after this instant is not in the export.
            transaction_time=self._store.latest,
            files=files,
            pending_polls=self._pending_polls,
            errors=errors,
            deletions=deletions,
            fail_with=self._fail_with,
            file_types=file_types,
        )
        with self._lock:
            self.jobs[job.id] = job
        return job

    def get(self, job_id: str) -> ExportJob | None:
        with self._lock:
            job = self.jobs.get(job_id)
        return None if job is None or job.closed else job

    def manifest(self, job: ExportJob, *, files_url: str, requires_token: bool) -> bytes:
        output = [
            {"type": job.file_types[name], "url": f"{files_url}/{name}", "count": len(lines)}
            for name, lines in job.files.items()
        ]
        error = []
        if job.errors:
            error.append({
                "type": "OperationOutcome", "url": f"{files_url}/errors-1.ndjson",
                "count": len(job.errors),
            })
        manifest: dict[str, object] = {
            "transactionTime": format_instant(job.transaction_time),
            "request": job.request_url,
            "requiresAccessToken": requires_token,
            "output": output,
            "error": error,
        }
        if job.deletions:
            manifest["deleted"] = [{"type": "Bundle", "url": f"{files_url}/deleted-1.ndjson"}]
        return msgspec.json.encode(manifest)

    def file(self, job: ExportJob, name: str) -> list[bytes] | None:
        if name == "errors-1.ndjson" and job.errors:
            return job.errors
        if name == "deleted-1.ndjson" and job.deletions:
            return job.deletions
        return job.files.get(name)
