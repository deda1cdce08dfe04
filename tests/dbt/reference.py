"""Expected values computed from the public FHIR files in plain Python, to check the marts.

Independent of DuckDB and of the models: JSON parsed with Python's decimal for numbers, dates
compared as ISO text. Only what the tests compare is computed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

SEEDS = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds"
SIX_PLACES = Decimal("0.000001")


def resources(shared_data: Path) -> Iterator[dict[str, Any]]:
    """The sample lake's resources, numbers as Decimal, one per (type, id) as the lake keeps."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    folder = shared_data / "synthea-bulk-ndjson-10-patients"
    for path in sorted(folder.glob("*.ndjson")):
        if path.name == "log.ndjson":
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                resource = json.loads(line, parse_float=Decimal)
                seen[(resource["resourceType"], resource["id"])] = resource
    for path in sorted((shared_data / "synthea-r4-bundles-smart" / "bundles").glob("*.json")):
        for entry in json.loads(path.read_text(), parse_float=Decimal)["entry"]:
            resource = entry["resource"]
            seen[(resource["resourceType"], resource["id"])] = resource
    return iter(seen.values())


def of_type(items: Iterable[dict[str, Any]], resource_type: str) -> list[dict[str, Any]]:
    return [item for item in items if item["resourceType"] == resource_type]


def codes(concept: dict[str, Any] | None, system: str) -> list[str]:
    return [
        coding["code"] for coding in (concept or {}).get("coding", [])
        if coding.get("system") == system
    ]


def subject_id(resource: dict[str, Any]) -> str:
    reference = resource["subject"]["reference"]
    return reference.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def vital_ranges() -> dict[str, dict[str, Any]]:
    with (SEEDS / "vital_sign_ranges.csv").open() as handle:
        return {
            row["loinc_code"]: {
                "unit": row["canonical_ucum_code"],
                "low": Decimal(row["plausible_low"]),
                "high": Decimal(row["plausible_high"]),
            }
            for row in csv.DictReader(handle)
        }


def vital_measurements(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Numeric vital signs: an observation's own valueQuantity and each component's."""
    ranges = vital_ranges()
    found = []
    for observation in of_type(items, "Observation"):
        parts = [("", observation)] + [
            (f"#{index}", component)
            for index, component in enumerate(observation.get("component", []), start=1)
        ]
        for suffix, part in parts:
            loinc = codes(part.get("code"), "http://loinc.org")
            quantity = part.get("valueQuantity")
            if not loinc or loinc[0] not in ranges or not quantity or "value" not in quantity:
                continue
            value = Decimal(quantity["value"]).quantize(SIX_PLACES)
            limits = ranges[loinc[0]]
            found.append({
                "vital_id": observation["id"] + suffix,
                "loinc_code": loinc[0],
                "value": value,
                "is_implausible": quantity.get("code") != limits["unit"]
                or not limits["low"] <= value <= limits["high"],
            })
    return found
