"""Read what carelake needs from a DICOM header, and strip what identifies the patient.

A DICOM file carries the patient's name, ids, birth date and address, and often the names of staff
and the institution. carelake keeps the UIDs (they link the image to its ImagingStudy), the
modality, body part and view, and removes the rest of the identifying elements and every private
element before the file is stored (encrypted) in the lake.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom

#: elements removed before storage: direct identifiers of the patient, staff and institution
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "MedicalRecordLocator",
    "ResponsiblePerson",
    "PatientComments",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
)


@dataclass(frozen=True)
class DicomHeader:
    """The header fields carelake keeps. ``patient_id`` is used for linking only, never stored."""

    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    modality: str
    body_part: str
    view_position: str


def read_header(data: bytes) -> DicomHeader:
    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return DicomHeader(
        patient_id=_text(dataset, "PatientID"),
        study_instance_uid=_text(dataset, "StudyInstanceUID"),
        series_instance_uid=_text(dataset, "SeriesInstanceUID"),
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        modality=_text(dataset, "Modality").upper(),
        body_part=_text(dataset, "BodyPartExamined").upper(),
        view_position=_text(dataset, "ViewPosition").upper(),
    )


def strip_identifiers(data: bytes) -> bytes:
    """The same DICOM file without identifying or private elements; pixel data untouched."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    _strip(dataset)
    dataset.remove_private_tags()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _strip(dataset: pydicom.Dataset) -> None:
    # every person name (VR PN) goes, at any depth, as do the listed identifiers
    for element in list(dataset):
        if element.VR == "PN" or element.keyword in IDENTIFYING_KEYWORDS:
            del dataset[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                _strip(item)


def _text(dataset: pydicom.Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return str(value).strip() if value is not None else ""
