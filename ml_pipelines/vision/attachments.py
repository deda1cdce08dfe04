"""Find the images FHIR resources in the bronze layer know of and list them in ``ml.images``.

Media (``content``), DocumentReference (``content[].attachment``) and DiagnosticReport
(``presentedForm[]``) may carry a DICOM, PNG or JPEG attachment, inline (``data``, base64, which
the bronze layer may hold as a protected token) or by ``url``. Inline images are stored like an
imported file. carelake fetches nothing at run time, so an image known only by its url is listed
with ``missing_reason`` set and no bytes; the stage writes that reason as the image's result.
An ImagingStudy lists its instances by UID without pixels: each is listed the same way, until a
file with that SOP Instance UID is imported (the mart then shows the file, not the listing).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ml_pipelines.vision import tables
from ml_pipelines.vision.dicom_header import read_header, strip_identifiers
from ml_pipelines.vision.image_import import ImportReport, study_uid
from ml_pipelines.vision.preprocess import image_format

logger = logging.getLogger(__name__)

IMAGE_TYPES = {"application/dicom": "dicom", "image/png": "png", "image/jpeg": "jpeg"}
RESOURCE_TABLES = ("media", "documentreference", "diagnosticreport", "imagingstudy")
TOKEN_PREFIX = "clp1:"
NO_FILE = ("the ImagingStudy lists this instance but the lake holds no file for it: import it "
           "with `carelake images import FOLDER`")
URL_ONLY = ("attachment is given by url only and carelake fetches nothing at run time: import "
            "the file with `carelake images import FOLDER`")


def _attachments(resource_type: str, resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if resource_type == "Media" and isinstance(resource.get("content"), dict):
        yield resource["content"]
    elif resource_type == "DocumentReference":
        for content in resource.get("content") or []:
            if isinstance(content.get("attachment"), dict):
                yield content["attachment"]
    elif resource_type == "DiagnosticReport":
        yield from (form for form in resource.get("presentedForm") or [] if isinstance(form, dict))


def _code(concept: Any) -> str:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code"):
            return str(coding["code"]).upper()
    return ""


def bronze_tables(lake: Any) -> list[str]:
    """The bronze tables that may hold image attachments and exist in this lake."""
    namespace = lake.settings.get("lake.bronze_namespace") or "bronze"
    return [f"{namespace}.{table}" for table in RESOURCE_TABLES
            if lake.has_table(f"{namespace}.{table}")]


def import_from_lake(lake: Any) -> ImportReport:
    """List every image attachment of the bronze layer not yet in ``ml.images``."""
    present = set()
    if lake.has_table(tables.IMAGES_TABLE):
        present = set(lake.read_arrow(tables.IMAGES_TABLE,
                                      columns=("image_id",)).column("image_id").to_pylist())
    report = ImportReport(import_id=uuid.uuid4().hex)
    imported_at = datetime.now(UTC)
    rows: list[dict[str, Any]] = []

    for identifier in bronze_tables(lake):
        table = identifier.rsplit(".", 1)[1]
        scan = lake.read_arrow(identifier, columns=("id", "resource_type", "patient_key",
                                                    "resource")).to_pylist()
        for record in scan:
            if not record["patient_key"]:
                continue
            resource = json.loads(record["resource"])
            if record["resource_type"] == "ImagingStudy":
                for row in _study_rows(lake, record, resource):
                    report.files += 1
                    if row["image_id"] in present:
                        report.already_present += 1
                        continue
                    row.update(import_id=report.import_id, imported_at=imported_at)
                    present.add(row["image_id"])
                    rows.append(row)
                    report.linked_by[table] = report.linked_by.get(table, 0) + 1
                continue
            for position, attachment in enumerate(_attachments(record["resource_type"], resource)):
                kind = IMAGE_TYPES.get(str(attachment.get("contentType") or "").lower())
                if kind is None:
                    continue
                report.files += 1
                row = _row(lake, record, resource, attachment, kind=kind, position=position)
                if row is None:
                    report.not_images += 1
                    continue
                if row["image_id"] in present:
                    report.already_present += 1
                    continue
                row.update(import_id=report.import_id, imported_at=imported_at)
                present.add(row["image_id"])
                rows.append(row)
                report.linked_by[table] = report.linked_by.get(table, 0) + 1

    if rows:
        lake.append(tables.IMAGES_TABLE, tables.images_table(rows))
    report.imported = len(rows)
    lake.audit.append("vision.attachments_imported", **report.as_json())
    logger.info("attachment import: %d image attachment(s), %d listed, %d already present, "
                "%d undecodable", report.files, report.imported, report.already_present,
                report.not_images)
    return report


def _study_rows(lake: Any, record: dict[str, Any],
                study: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per instance an ImagingStudy lists; bytes come only from an imported file."""
    patient_key = record["patient_key"]
    study_instance_uid = study_uid(lake, patient_key, study) or None
    for series in study.get("series") or []:
        for instance in series.get("instance") or []:
            uid = instance.get("uid")
            if not uid:
                continue
            listing = hashlib.sha256(f"sop|{uid}".encode()).hexdigest()
            yield {
                "image_id": tables.image_id(patient_key=patient_key, sha256=listing),
                "sha256": None, "storage_path": None, "patient_key": patient_key,
                "study_instance_uid": study_instance_uid,
                "series_instance_uid": series.get("uid") or None, "sop_instance_uid": uid,
                "modality": str((series.get("modality") or {}).get("code") or "").upper() or None,
                "body_part": str((series.get("bodySite") or {}).get("display") or "").upper()
                or None,
                "view_position": None, "content_type": "application/dicom",
                "source": f"fhir:ImagingStudy/{record['id']}", "missing_reason": NO_FILE,
            }


def _row(lake: Any, record: dict[str, Any], resource: dict[str, Any],
         attachment: dict[str, Any], *, kind: str, position: int) -> dict[str, Any] | None:
    patient_key = record["patient_key"]
    source = f"fhir:{record['resource_type']}/{record['id']}#{position}"
    row: dict[str, Any] = {
        "patient_key": patient_key,
        "study_instance_uid": None, "series_instance_uid": None, "sop_instance_uid": None,
        "modality": _code(resource.get("modality")) or None,
        "body_part": None,
        # Media.view is coded in SNOMED CT, not as DICOM View Position: left unset
        "view_position": None,
        "content_type": tables.CONTENT_TYPES[kind],
        "source": source,
        "missing_reason": None,
    }
    data = attachment.get("data")
    if not data:
        row.update(sha256=None, storage_path=None, missing_reason=URL_ONLY,
                   image_id=tables.image_id(patient_key=patient_key,
                                            sha256=hashlib.sha256(source.encode()).hexdigest()))
        return row

    if isinstance(data, str) and data.startswith(TOKEN_PREFIX):
        data = lake.patients.open_token(patient_key, data)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None
    if image_format(raw) != kind:
        return None
    if kind == "dicom":
        header = read_header(raw)
        row.update(study_instance_uid=header.study_instance_uid or None,
                   series_instance_uid=header.series_instance_uid or None,
                   sop_instance_uid=header.sop_instance_uid or None,
                   modality=header.modality or row["modality"],
                   body_part=header.body_part or None,
                   view_position=header.view_position or None)
        raw = strip_identifiers(raw)
    sha256 = hashlib.sha256(raw).hexdigest()
    path = tables.storage_path(sha256=sha256, content_type=row["content_type"])
    if not lake.fs.exists(path):
        with lake.fs.open(path, "wb") as handle:
            handle.write(raw)
    row.update(sha256=sha256, storage_path=path,
               image_id=tables.image_id(patient_key=patient_key, sha256=sha256))
    return row
