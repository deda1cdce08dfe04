"""Encounter features from FHIR resources: what every Synthea generation carries.

One row per encounter: its start, the patient's age then and sex, the encounter class, and one
flag per code (condition, medication, procedure, immunization) recorded in that encounter. The
resources come as dicts from anywhere: NDJSON files, transaction bundles, or the bronze tables'
``resource`` column. Patient ids are used only to join and to keep a patient on one side of a
held-out split; nothing here logs them.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from infra.errors import InputError
from ml_pipelines.drift.features import FeatureSet

logger = logging.getLogger(__name__)

#: resource type -> (flag prefix, element holding the code)
CODED_RESOURCES = {
    "Condition": ("condition", "code"),
    "MedicationRequest": ("medication", "medicationCodeableConcept"),
    "Procedure": ("procedure", "code"),
    "Immunization": ("immunization", "vaccineCode"),
}
FLAG_PREFIXES = tuple(prefix for prefix, _ in CODED_RESOURCES.values())
_SEMANTIC_TAG = re.compile(r"\s*\((disorder|finding|procedure|situation|event|regime/therapy)\)$")


def iter_ndjson(folder: Path) -> Iterator[dict[str, Any]]:
    """Every resource of every ``*.ndjson`` file in ``folder``, one per line."""
    files = sorted(Path(folder).glob("*.ndjson"))
    if not files:
        raise InputError(f"{folder} holds no .ndjson files: point it at a Bulk Data export folder")
    for number, path in enumerate(files):
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise InputError(
                        f"NDJSON file {number + 1} of {folder}: line {line_number} is not JSON; "
                        "repair or remove that line"
                    ) from None
                if "resourceType" in record:
                    yield record


def iter_bundles(folder: Path) -> Iterator[dict[str, Any]]:
    """Every entry resource of every Bundle ``*.json`` file in ``folder``."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise InputError(f"{folder} holds no .json bundles: point it at a folder of FHIR Bundles")
    for number, path in enumerate(files):
        try:
            bundle = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise InputError(
                f"bundle {number + 1} of {folder} is not JSON; repair or remove it"
            ) from None
        for entry in bundle.get("entry", []):
            resource = entry.get("resource")
            if isinstance(resource, dict):
                yield resource


def reference_id(reference: dict[str, Any] | None) -> str | None:
    """The id a reference points at: ``urn:uuid:X``, ``Type/X`` and ``X`` all give ``X``."""
    if not reference or not isinstance(reference.get("reference"), str):
        return None
    target = reference["reference"]
    if target.startswith("urn:uuid:"):
        return target[len("urn:uuid:"):]
    return target.rsplit("/", 1)[-1]


def concept_label(concept: dict[str, Any]) -> tuple[str, str] | None:
    """(code, display without its SNOMED semantic tag) of a CodeableConcept's first coding."""
    for coding in concept.get("coding", []):
        if coding.get("code"):
            display = coding.get("display") or concept.get("text") or coding["code"]
            return coding["code"], _SEMANTIC_TAG.sub("", display)
    return None


def encounter_features(
    resources: Iterable[dict[str, Any]], *, name: str = "encounters"
) -> FeatureSet:
    """One row per encounter: date, age, sex, class and a flag per code recorded in it."""
    patients: dict[str, dict[str, Any]] = {}
    encounters: dict[str, dict[str, Any]] = {}
    codes: dict[str, set[str]] = defaultdict(set)
    labels: dict[str, str] = {}
    skipped: Counter[str] = Counter()

    for resource in resources:
        kind = resource.get("resourceType")
        if kind == "Patient":
            patients[resource.get("id", "")] = resource
        elif kind == "Encounter":
            encounters[resource.get("id", "")] = resource
        elif kind in CODED_RESOURCES:
            prefix, element = CODED_RESOURCES[kind]
            encounter_id = reference_id(resource.get("encounter"))
            concept = concept_label(resource.get(element) or {})
            if encounter_id is None or concept is None:
                skipped[kind] += 1
                continue
            column = f"{prefix}:{concept[0]}"
            codes[encounter_id].add(column)
            labels.setdefault(column, concept[1])

    rows = []
    for encounter_id, encounter in encounters.items():
        start = (encounter.get("period") or {}).get("start")
        patient_id = reference_id(encounter.get("subject"))
        patient = patients.get(patient_id or "", {})
        rows.append(
            {
                "encounter_key": encounter_id,
                "patient_key": patient_id,
                "encounter_date": start,
                "age_years": _age_years(patient.get("birthDate"), start),
                "sex": patient.get("gender") or "unknown",
                "encounter_class": (encounter.get("class") or {}).get("code") or "unknown",
            }
        )
    frame = pd.DataFrame(rows)
    flag_columns = sorted(labels)
    flags = pd.DataFrame(
        [
            [int(column in codes.get(row["encounter_key"], ())) for column in flag_columns]
            for row in rows
        ],
        columns=flag_columns,
        dtype="int8",
    )
    frame = pd.concat([frame, flags], axis=1)
    frame["encounter_date"] = pd.to_datetime(frame["encounter_date"], utc=True, format="mixed")

    logger.info(
        "built %d encounter rows of %d patients with %d code flags (%d coded resources without an "
        "encounter or code)",
        len(frame),
        len(patients),
        len(flag_columns),
        sum(skipped.values()),
    )
    return FeatureSet(
        name=name,
        frame=frame,
        date_column="encounter_date",
        numeric=("age_years",),
        categorical=("sex", "encounter_class"),
        flags=tuple(flag_columns),
        labels={"age_years": "age", "encounter_class": "encounter class", **labels},
        units={"age_years": "years"},
        unit_noun="encounters",
        group_column="patient_key",
    )


def _age_years(birth_date: str | None, moment: str | None) -> float | None:
    if not birth_date or not moment:
        return None
    born = pd.Timestamp(birth_date[:10])
    at = pd.Timestamp(moment[:10])
    return round((at - born).days / 365.25, 2)
