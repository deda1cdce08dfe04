"""Fixtures of the NLP tests: the shared public data, and a small real lake of notes and codings."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[3]
BULK = "synthea-bulk-ndjson-10-patients"
SNOMED = "http://snomed.info/sct"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = (REPO / ".." / "shared" / "data").resolve()
    if not folder.is_dir():
        pytest.fail(f"the shared public data is not at {folder}")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def edge_case_resources(subject: str) -> list[dict[str, Any]]:
    """Synthetic DocumentReference/DiagnosticReport resources with one awkward attachment each."""
    def document(identifier: str, attachment: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "DocumentReference", "id": identifier,
                "subject": {"reference": subject}, "content": [{"attachment": attachment}]}

    return [
        document("edge-empty", {"contentType": "text/plain", "data": _b64(b"   \n")}),
        document("edge-html", {"contentType": "text/html; charset=utf-8", "data": _b64(
            b"<html><head><style>p{}</style></head><body><p>Denies <b>hypertension</b>.</p>"
            b"<p>Mother has diabetes mellitus &amp; asthma.</p></body></html>")}),
        document("edge-latin1", {
            "contentType": "text/plain; charset=iso-8859-1",
            "data": _b64("Caf\u00e9 visit: acute bronchitis.".encode("latin-1")),
        }),
        document("edge-bad-utf8", {"contentType": "text/plain",
                                   "data": _b64(b"Viral sinusitis \xff\xfe noted.")}),
        document("edge-large", {"contentType": "text/plain", "data": _b64(b"a" * 1_000_001)}),
        document("edge-pdf", {"contentType": "application/pdf", "data": _b64(b"%PDF-1.4")}),
        document("edge-url", {"contentType": "text/plain", "url": "Binary/1"}),
        {"resourceType": "DiagnosticReport", "id": "edge-report", "subject": {"reference": subject},
         "encounter": {"reference": "Encounter/edge-encounter"},
         "presentedForm": [{"contentType": "text/plain",
                            "data": _b64(b"Rule out pneumonia. No fever.")}]},
    ] + [
        {"resourceType": "Condition", "id": f"edge-condition-{code}",
         "subject": {"reference": subject},
         "encounter": {"reference": "Encounter/edge-encounter"},
         "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]}}
        for code, display in [("38341003", "Hypertension (disorder)"),
                              ("73211009", "Diabetes mellitus (disorder)"),
                              ("195967001", "Asthma (disorder)"),
                              ("233604007", "Pneumonia (disorder)"),
                              ("386661006", "Fever (finding)")]
    ]


def bronze_rows(lake: Any, resources: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Bronze rows as ingest writes them: patient references pseudonymised, note data sealed."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        source_patient = resource["subject"]["reference"]
        key = lake.patients.key_for_source(source_patient)
        sealer = lake.patients.sealer(key.pseudonym)
        resource = json.loads(json.dumps(resource))
        resource["subject"]["reference"] = f"Patient/{key.pseudonym}"
        attachments = [c["attachment"] for c in resource.get("content", [])]
        attachments += resource.get("presentedForm", [])
        for attachment in attachments:
            if "data" in attachment:
                attachment["data"] = sealer.seal(attachment["data"])
        rows.setdefault(resource["resourceType"], []).append({
            "id": resource["id"], "resource_type": resource["resourceType"],
            "patient_key": key.pseudonym, "resource": json.dumps(resource),
        })
    return rows


def _patient_resources(shared: Path, resource_type: str, subject: str) -> list[dict[str, Any]]:
    path = shared / BULK / f"{resource_type}.000.ndjson"
    resources = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r for r in resources if r.get("subject", {}).get("reference") == subject]


def first_subject(shared: Path) -> str:
    """The source reference of the bulk sample's first patient."""
    first = json.loads((shared / BULK / "Patient.000.ndjson").read_text().splitlines()[0])
    return f"Patient/{first['id']}"


@pytest.fixture(scope="module")
def notes_lake(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Any:
    """A lake holding one Synthea patient's notes and codings plus the edge-case notes."""
    from infra.lake import Lake
    from infra.settings import load_settings

    root = tmp_path_factory.mktemp("nlp-lake")
    environ = {"CARELAKE_KEYS__KEY_DIR": str(root / "keys")}
    os.environ.update(environ)
    lake = Lake.open(load_settings(data_dir=root / "data"))

    subject = first_subject(shared_data)
    resources = _patient_resources(shared_data, "DocumentReference", subject)[:12]
    resources += edge_case_resources(subject)
    resources += _patient_resources(shared_data, "Condition", subject)
    resources += _patient_resources(shared_data, "Procedure", subject)
    for resource_type, rows in bronze_rows(lake, resources).items():
        lake.append(f"bronze.{resource_type.lower()}", pa.Table.from_pylist(rows))
    return lake
