"""Import a folder of DICOM, PNG and JPEG files into the lake, each linked to its patient.

Every file is linked to a patient before it is stored, in this order:

1. a manifest row (CSV with columns ``file,patient`` and optionally ``study_instance_uid``,
   ``modality``, ``body_part``, ``view_position``; ``patient`` is a FHIR reference such as
   ``Patient/123`` and ``file`` a path relative to the folder);
2. for DICOM, its Series or SOP Instance UID found in an ImagingStudy of ``bronze.imagingstudy``,
   which also gives the study UID, and the modality and body site where the header has none;
3. for DICOM, its Patient ID, when ``Patient/<PatientID>`` is a patient the lake has ingested
   (it has a key in the patient vault; the import makes no key).

The link goes through the lake's pseudonymization, so only the patient key is kept. Files that
link to no patient are counted and left out. DICOM files lose their identifying elements
(``dicom_header.strip_identifiers``); the bytes go through ``lake.fs`` (ciphertext) to
``ml/images/<sha256>.<ext>`` and a row to ``ml.images``. Log lines and errors name files by their
position in the folder listing, never by name, since file names can carry patient data.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.errors import InputError
from ml_pipelines.vision import tables
from ml_pipelines.vision.dicom_header import read_header, strip_identifiers
from ml_pipelines.vision.preprocess import image_format

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("file", "patient")
OPTIONAL_COLUMNS = ("study_instance_uid", "modality", "body_part", "view_position")


@dataclass
class ImportReport:
    files: int = 0
    imported: int = 0
    already_present: int = 0
    unlinked: int = 0
    not_images: int = 0
    linked_by: dict[str, int] = field(default_factory=dict)
    import_id: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "files": self.files, "imported": self.imported,
            "already_present": self.already_present, "unlinked": self.unlinked,
            "not_images": self.not_images, "linked_by": dict(self.linked_by),
            "import_id": self.import_id,
        }


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    """Manifest rows by relative file path; raises ``InputError`` naming the row that is wrong."""
    rows: dict[str, dict[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in MANIFEST_COLUMNS if name not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                f"image manifest {path.name} lacks column(s) {', '.join(missing)}: its header "
                f"must name {', '.join(MANIFEST_COLUMNS)} (and may name "
                f"{', '.join(OPTIONAL_COLUMNS)})"
            )
        for number, row in enumerate(reader, start=2):
            file_name = (row.get("file") or "").strip()
            patient = (row.get("patient") or "").strip()
            if not file_name or not patient.startswith("Patient/"):
                raise InputError(
                    f"image manifest {path.name} line {number}: 'file' must be set and "
                    "'patient' must be a reference Patient/<id>"
                )
            rows[Path(file_name).as_posix()] = {
                key: (row.get(key) or "").strip() for key in MANIFEST_COLUMNS + OPTIONAL_COLUMNS
            }
    return rows


@dataclass(frozen=True)
class StudyLink:
    """What an ImagingStudy says about one of its series or instances."""

    patient_key: str
    study_instance_uid: str
    modality: str
    body_part: str


class PatientLinks:
    """Finds the patient key (and study) of an image from the lake's own records."""

    def __init__(self, lake: Any) -> None:
        self._lake = lake
        self._by_uid: dict[str, StudyLink] | None = None

    def for_reference(self, reference: str) -> str | None:
        # create=False: only a patient the lake has ingested has a key; none is made here
        key = self._lake.patients.key_for_source(reference, create=False)
        return key.pseudonym if key is not None else None

    def for_uids(self, *uids: str) -> StudyLink | None:
        index = self._uid_index()
        for uid in uids:
            if uid and uid in index:
                return index[uid]
        return None

    def _uid_index(self) -> dict[str, StudyLink]:
        # series and instance UIDs of every ImagingStudy -> what that study says about them
        if self._by_uid is None:
            self._by_uid = {}
            namespace = self._lake.settings.get("lake.bronze_namespace") or "bronze"
            table = _read(self._lake, f"{namespace}.imagingstudy", ["patient_key", "resource"])
            for patient_key, text in zip(table.get("patient_key", []), table.get("resource", []),
                                         strict=True):
                if patient_key and text:
                    self._index_study(patient_key, json.loads(text))
        return self._by_uid

    def _index_study(self, patient_key: str, study: dict[str, Any]) -> None:
        assert self._by_uid is not None
        study_instance_uid = study_uid(self._lake, patient_key, study)
        for series in study.get("series") or []:
            link = StudyLink(
                patient_key=patient_key, study_instance_uid=study_instance_uid,
                modality=str((series.get("modality") or {}).get("code") or "").upper(),
                body_part=str((series.get("bodySite") or {}).get("display") or "").upper(),
            )
            uids = [series.get("uid")] + [item.get("uid") for item in series.get("instance") or []]
            for uid in uids:
                if uid:
                    self._by_uid.setdefault(uid, link)


def study_uid(lake: Any, patient_key: str, study: dict[str, Any]) -> str:
    """The Study Instance UID of an ImagingStudy (its ``urn:oid:`` identifier), or ``""``."""
    for identifier in study.get("identifier") or []:
        value = identifier.get("value") or ""
        if value.startswith("clp1:"):
            value = lake.patients.open_token(patient_key, value)
        if value.startswith("urn:oid:"):
            return value[len("urn:oid:"):]
    return ""


def _read(lake: Any, identifier: str, columns: list[str]) -> dict[str, list[Any]]:
    if not lake.has_table(identifier):
        return {}
    return lake.read_arrow(identifier, columns=tuple(columns)).to_pydict()


def _column(lake: Any, identifier: str, column: str) -> list[Any]:
    return _read(lake, identifier, [column]).get(column, [])


def import_folder(
    lake: Any, folder: Path, *, manifest: Path | None = None, source: str = "import"
) -> ImportReport:
    """Store every linkable image under ``folder`` in the lake and list it in ``ml.images``."""
    if not folder.is_dir():
        raise InputError(f"image folder {folder} is not a folder: give the folder that holds them")
    entries = read_manifest(manifest) if manifest else {}
    links = PatientLinks(lake)
    present = set(_column(lake, tables.IMAGES_TABLE, "image_id"))
    report = ImportReport(import_id=uuid.uuid4().hex)
    imported_at = datetime.now(UTC)
    rows: list[dict[str, Any]] = []

    files = sorted(path for path in folder.rglob("*") if path.is_file())
    for position, path in enumerate(files, start=1):
        report.files += 1
        relative = path.relative_to(folder).as_posix()
        if manifest is not None and path.resolve() == manifest.resolve():
            report.not_images += 1
            continue
        data = path.read_bytes()
        kind = image_format(data)
        if not kind:
            report.not_images += 1
            continue

        try:
            row = _describe(data, kind=kind, entry=entries.get(relative))
            stored = strip_identifiers(data) if kind == "dicom" else data
        except Exception as error:  # one damaged file is counted, not a failed import
            report.not_images += 1
            logger.debug("image file %d of %d could not be read (%s); not imported",
                        position, len(files), type(error).__name__)
            continue
        how = _link(row, links=links, entry=entries.get(relative))
        if how is None:
            report.unlinked += 1
            logger.debug("image file %d of %d links to no patient; not imported",
                        position, len(files))
            continue
        report.linked_by[how] = report.linked_by.get(how, 0) + 1

        row["sha256"] = hashlib.sha256(stored).hexdigest()
        row["image_id"] = tables.image_id(patient_key=row["patient_key"], sha256=row["sha256"])
        if row["image_id"] in present:
            report.already_present += 1
            continue
        row["storage_path"] = tables.storage_path(sha256=row["sha256"],
                                                  content_type=row["content_type"])
        if not lake.fs.exists(row["storage_path"]):
            with lake.fs.open(row["storage_path"], "wb") as handle:
                handle.write(stored)
        row.update(source=source, import_id=report.import_id, imported_at=imported_at)
        present.add(row["image_id"])
        rows.append(row)

    if rows:
        lake.append(tables.IMAGES_TABLE, tables.images_table(rows))
    report.imported = len(rows)
    lake.audit.append("vision.images_imported", **report.as_json())
    logger.info(
        "image import: %d file(s), %d imported, %d already present, %d unlinked, %d not images",
        report.files, report.imported, report.already_present, report.unlinked, report.not_images,
    )
    return report


def _describe(data: bytes, *, kind: str, entry: dict[str, str] | None) -> dict[str, Any]:
    entry = entry or {}
    row: dict[str, Any] = {
        "content_type": tables.CONTENT_TYPES[kind],
        "study_instance_uid": entry.get("study_instance_uid") or None,
        "series_instance_uid": None,
        "sop_instance_uid": None,
        "modality": (entry.get("modality") or "").upper() or None,
        "body_part": (entry.get("body_part") or "").upper() or None,
        "view_position": (entry.get("view_position") or "").upper() or None,
        "patient_id": "",
    }
    if kind == "dicom":
        header = read_header(data)
        row.update(
            study_instance_uid=header.study_instance_uid or row["study_instance_uid"],
            series_instance_uid=header.series_instance_uid or None,
            sop_instance_uid=header.sop_instance_uid or None,
            modality=header.modality or row["modality"],
            body_part=header.body_part or row["body_part"],
            view_position=header.view_position or row["view_position"],
            patient_id=header.patient_id,
        )
    return row


def _link(row: dict[str, Any], *, links: PatientLinks, entry: dict[str, str] | None) -> str | None:
    # the DICOM Patient ID is used to link and then dropped: it is a source id
    patient_id = row.pop("patient_id")
    if entry:
        key = links.for_reference(entry["patient"])
        if key:
            row["patient_key"] = key
            return "manifest"
    found = links.for_uids(row.get("sop_instance_uid") or "", row.get("series_instance_uid") or "")
    if found:
        row["patient_key"] = found.patient_key
        study = row.get("study_instance_uid") or found.study_instance_uid
        row["study_instance_uid"] = study or None
        row["modality"] = row.get("modality") or found.modality or None
        row["body_part"] = row.get("body_part") or found.body_part or None
        return "imaging_study"
    if patient_id:
        key = links.for_reference(f"Patient/{patient_id}")
        if key:
            row["patient_key"] = key
            return "dicom_patient_id"
    return None
