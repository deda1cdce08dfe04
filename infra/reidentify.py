"""Re-identification: restore a patient's original resources (the reidentifier role), audited.

Used for the GDPR right of access (``carelake export-patient``): every resource about the patient,
restored exactly as received, in a FHIR ``collection`` Bundle. Each call writes an audit entry with
the pseudonymous key, the reason and the count, never the data.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import msgspec

from infra.errors import KeyError_
from infra.pseudonym import restore

_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


def restore_resource(lake, resource_json: str, *, patient_key: str | None) -> dict[str, Any]:
    return restore(_DECODER.decode(resource_json), lake.patients.sealer, patient_key=patient_key)


def patient_resources(lake, patient_key: str) -> list[dict[str, Any]]:
    if lake.patients.by_pseudonym(patient_key) is None:
        raise KeyError_("that patient's key is not in the vault: the patient was erased, or the "
                        "key is wrong")
    resources = []
    for identifier in lake.tables("bronze"):
        if identifier == "bronze.quarantine":
            continue
        rows = lake.read_arrow(identifier, where=f"patient_key == '{patient_key}'",
                               columns=("resource", "patient_key"))
        for resource_json in rows.column("resource").to_pylist():
            resources.append(restore_resource(lake, resource_json, patient_key=patient_key))
    return resources


def export_patient(lake, patient_key: str, *, reason: str) -> dict[str, Any]:
    resources = patient_resources(lake, patient_key)
    lake.audit.append("reidentification", patient_key=patient_key, reason=reason,
                      resources=len(resources), purpose="export-patient")
    return {
        "resourceType": "Bundle", "id": uuid.uuid4().hex, "type": "collection",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    }
