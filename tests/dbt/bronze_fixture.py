"""Bronze rows for the dbt project's tests, made from public FHIR files and written to a real lake.

carelake's ingest (dlt_pipelines/fhir) writes the bronze layer in production. These tests need the
bronze contract of docs/architecture.md without depending on it: one Iceberg table per resource
type with the bronze columns, patients under a pseudonymous key, references to them reading
``Patient/<patient_key>``, ``urn:uuid:`` references rewritten to ``Type/id``, one row per id (the
lake upserts), and direct identifiers and free text replaced by ``clp1:`` tokens (random bytes
here: the models never read them).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

BRONZE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("resource_type", pa.string()),
        ("version_id", pa.string()),
        ("last_updated", pa.timestamp("us", tz="UTC")),
        ("patient_key", pa.string()),
        ("source", pa.string()),
        ("load_id", pa.string()),
        ("loaded_at", pa.timestamp("us", tz="UTC")),
        ("resource", pa.string()),
    ]
)

PATIENT_REFERENCE_FIELDS = ("subject", "patient", "beneficiary")
_TOKEN_FIELDS_PATIENT = ("name", "telecom", "identifier", "photo", "contact")


def _token(value: Any) -> str:
    """A stand-in ciphertext token: random bytes, as the real one is under the patient's key."""
    del value
    return "clp1:" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()


def patient_key_for(source_id: str) -> str:
    return "pk_" + hashlib.sha256(("standin:" + source_id).encode()).hexdigest()[:24]


def _rewrite_references(node: Any, fulls: dict[str, str], keys: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for name, value in node.items():
            if name == "reference" and isinstance(value, str):
                value = fulls.get(value, value)
                if value.startswith("Patient/") and value[8:] in keys:
                    value = "Patient/" + keys[value[8:]]
            out[name] = _rewrite_references(value, fulls, keys)
        return out
    if isinstance(node, list):
        return [_rewrite_references(item, fulls, keys) for item in node]
    return node


def _protect(resource: dict[str, Any]) -> dict[str, Any]:
    if "text" in resource:
        resource["text"] = {"status": resource["text"].get("status"), "div": _token(None)}
    if resource["resourceType"] == "Patient":
        for field in _TOKEN_FIELDS_PATIENT:
            if field in resource:
                resource[field] = _token(resource[field])
        for address in resource.get("address", []):
            if "line" in address:
                address["line"] = [_token(line) for line in address["line"]]
    for field in PATIENT_REFERENCE_FIELDS:
        if isinstance(resource.get(field), dict) and "display" in resource[field]:
            resource[field]["display"] = _token(resource[field]["display"])
    for content in resource.get("content", []):
        attachment = content.get("attachment", {})
        if "data" in attachment:
            attachment["data"] = _token(attachment["data"])
    return resource


def _patient_key_of(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return resource["id"]
    for field in PATIENT_REFERENCE_FIELDS:
        reference = resource.get(field)
        if isinstance(reference, dict):
            text = reference.get("reference", "")
            if text.startswith("Patient/"):
                return text[8:]
    return None


def bronze_rows(
    resources: Iterable[dict[str, Any]], *, source: str, load_id: str, loaded_at: dt.datetime
) -> dict[str, list[dict[str, Any]]]:
    """Bronze rows by resource type, with patients keyed and references rewritten."""
    # A resource without an id (a transaction entry to create) is the ingest's to quarantine.
    resources = [resource for resource in resources if resource.get("id")]
    fulls = {
        f"urn:uuid:{resource['id']}": f"{resource['resourceType']}/{resource['id']}"
        for resource in resources
        if "id" in resource
    }
    keys = {
        resource["id"]: patient_key_for(resource["id"])
        for resource in resources
        if resource["resourceType"] == "Patient" and "id" in resource
    }
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        resource = _rewrite_references(resource, fulls, keys)
        if resource["resourceType"] == "Patient" and resource.get("id") in keys:
            resource["id"] = keys[resource["id"]]
        resource = _protect(resource)
        meta = resource.get("meta", {})
        last_updated = meta.get("lastUpdated")
        # The lake upserts by id: a resource seen twice (a practitioner of many bundles) stays one.
        by_type.setdefault(resource["resourceType"].lower(), {})[resource.get("id")] = (
            {
                "id": resource.get("id"),
                "resource_type": resource["resourceType"],
                "version_id": meta.get("versionId"),
                "last_updated": dt.datetime.fromisoformat(last_updated) if last_updated else None,
                "patient_key": _patient_key_of(resource),
                "source": source,
                "load_id": load_id,
                "loaded_at": loaded_at,
                "resource": json.dumps(resource, separators=(",", ":")),
            }
        )
    return {name: list(rows.values()) for name, rows in by_type.items()}


def read_bundles(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        bundle = json.loads(path.read_text())
        for entry in bundle.get("entry", []):
            if "resource" in entry:
                yield entry["resource"]


def read_resource_files(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Single resources and the resources inside bundles, from FHIR JSON files."""
    for path in paths:
        document = json.loads(path.read_text())
        if document.get("resourceType") == "Bundle":
            for entry in document.get("entry", []):
                if "resource" in entry:
                    yield entry["resource"]
        else:
            yield document


def read_ndjson(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob("*.ndjson")):
        if path.name == "log.ndjson":
            continue
        with path.open() as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


def load(
    lake: Any,
    resources: Iterable[dict[str, Any]],
    *,
    source: str,
    load_id: str,
    loaded_at: dt.datetime,
) -> dict[str, int]:
    """Append resources to the stand-in's bronze tables; returns rows written by table."""
    counts = {}
    rows_by_type = bronze_rows(resources, source=source, load_id=load_id, loaded_at=loaded_at)
    for table_name, rows in sorted(rows_by_type.items()):
        lake.append(f"bronze.{table_name}", pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA))
        counts[table_name] = len(rows)
    return counts


def replace_resources(lake: Any, table_name: str, rows: list[dict[str, Any]]) -> None:
    """Upsert as the lake does: delete the ids' current rows, then append the new versions."""
    ids = ", ".join(f"'{row['id']}'" for row in rows)
    lake.delete(f"bronze.{table_name}", f"id in ({ids})")
    lake.append(f"bronze.{table_name}", pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA))

