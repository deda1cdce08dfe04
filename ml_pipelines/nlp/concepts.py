"""The concept table a concept database is built from: codes, systems and the names to match.

Concepts come from the codings the lake already holds (Condition, Procedure, MedicationRequest and
Observation), optionally widened with Synthea's published concept list. Each concept's names are
its display names plus simple synonyms: the display without its SNOMED CT semantic tag
("Hypertension (disorder)" also matches "hypertension"). A concept's MedCAT id is
``<PREFIX>:<code>`` so codes of different systems never collide.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SYSTEM_PREFIXES = {
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM",
    "http://www.nlm.nih.gov/research/umls": "UMLS",
}
PREFIX_SYSTEMS = {prefix: system for system, prefix in SYSTEM_PREFIXES.items()}
_SYNTHEA_SYSTEMS = {
    "SNOMED-CT": "http://snomed.info/sct",
    "LOINC": "http://loinc.org",
    "RxNorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
}
CODED_TYPES = {
    "Condition": ("code",),
    "Procedure": ("code",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "Observation": ("code",),
}
SYNTHEA_CONCEPTS = Path("synthea-concepts") / "synthea_module_concepts.csv"

_SEMANTIC_TAG = re.compile(r"\s*\((?:disorder|finding|procedure|situation|morphologic abnormality|"
                           r"observable entity|regime/therapy|qualifier value|substance|event|"
                           r"body structure|physical object|record artifact|person)\)\s*$",
                           re.IGNORECASE)


@dataclass
class Concept:
    system: str
    code: str
    display: str
    names: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)

    @property
    def cui(self) -> str:
        return concept_id(self.system, self.code)


def concept_id(system: str, code: str) -> str:
    prefix = SYSTEM_PREFIXES.get(system)
    if prefix is None:
        prefix = "X" + hashlib.sha256(system.encode()).hexdigest()[:8].upper()
    return f"{prefix}:{code}".upper()


def split_concept_id(cui: str, systems: dict[str, str]) -> tuple[str, str]:
    """``(system, code)`` of a MedCAT concept id, using the concept table's own mapping first."""
    if cui in systems:
        return systems[cui], cui.split(":", 1)[1]
    prefix, _, code = cui.partition(":")
    return PREFIX_SYSTEMS.get(prefix, prefix), code


def synonyms(display: str) -> set[str]:
    """The display and the display without its semantic tag, whitespace normalised."""
    name = " ".join(display.split())
    names = {name}
    stripped = _SEMANTIC_TAG.sub("", name).strip()
    if len(stripped) >= 3:
        names.add(stripped)
    return names


class ConceptTable:
    """Concepts keyed by (system, code), in insertion order."""

    def __init__(self) -> None:
        self.concepts: dict[tuple[str, str], Concept] = {}

    def add(self, system: str, code: str, display: str, *, source: str) -> None:
        if not (system and code and display and display.strip()):
            return
        concept = self.concepts.setdefault((system, code), Concept(system, code, display.strip()))
        concept.names |= synonyms(display)
        concept.sources.add(source)

    def add_resources(self, resources: Iterable[dict[str, Any]]) -> int:
        """Add every coding of the coded resource types; returns how many codings were read."""
        count = 0
        for resource in resources:
            for element in CODED_TYPES.get(resource.get("resourceType", ""), ()):
                for coding in (resource.get(element) or {}).get("coding") or []:
                    self.add(coding.get("system", ""), str(coding.get("code", "")),
                             coding.get("display", ""), source=resource["resourceType"])
                    count += 1
        return count

    def add_synthea_concepts(self, path: Path) -> int:
        """Add Synthea's SNOMED CT, LOINC and RxNorm codings; returns how many rows were added."""
        added = 0
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                system = _SYNTHEA_SYSTEMS.get(row["system"])
                if system:
                    self.add(system, row["code"], row["display"], source="synthea-concepts")
                    added += 1
        return added

    def version(self) -> str:
        """A digest of every concept's id and names: the same concepts give the same version."""
        digest = hashlib.sha256()
        for concept in sorted(self.concepts.values(), key=lambda c: c.cui):
            digest.update(json.dumps([concept.cui, sorted(concept.names)]).encode())
        return digest.hexdigest()[:16]

    def systems(self) -> dict[str, str]:
        return {concept.cui: concept.system for concept in self.concepts.values()}

    def rows(self) -> Iterator[dict[str, str]]:
        """MedCAT CDB-maker rows: the semantic-tag-free display is the primary name."""
        for concept in self.concepts.values():
            primary = min(synonyms(concept.display), key=len)
            for name in sorted(concept.names):
                yield {
                    "cui": concept.cui,
                    "name": name,
                    "ontologies": concept.cui.split(":", 1)[0],
                    "name_status": "P" if name == primary else "A",
                }

    def __len__(self) -> int:
        return len(self.concepts)


def coded_resources_from_ndjson(folder: Path) -> Iterator[dict[str, Any]]:
    """Resources of the coded types in a Bulk Data folder (``<Type>*.ndjson``)."""
    for resource_type in CODED_TYPES:
        for path in sorted(folder.glob(f"{resource_type}*.ndjson")):
            with path.open(encoding="utf-8") as handle:
                yield from (json.loads(line) for line in handle if line.strip())


def coded_resources_from_lake(
    lake: Any, *, types: tuple[str, ...] = tuple(CODED_TYPES)
) -> Iterator[dict[str, Any]]:
    """Resources of the coded types in the lake's bronze tables; missing tables are skipped."""
    for resource_type in types:
        identifier = f"bronze.{resource_type.lower()}"
        if not lake.has_table(identifier):
            continue
        table = lake.read_arrow(identifier, columns=("resource",))
        for resource in table.column("resource").to_pylist():
            yield json.loads(resource)
