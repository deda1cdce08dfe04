"""Protect patients inside FHIR resources before they land, and restore them for re-identification.

Bronze stays lossless: a protected value is replaced, in place, by a token (``clp1:...``) that is
the original JSON value sealed under the patient's own key, and a reference to the patient becomes
``Patient/<patient_key>`` with the original sealed in an extension on that reference. Restoring
walks the resource, opens every token and puts every original back: the exact resource returns.

What is protected, for the patient a resource is about:

- Patient, RelatedPerson, Person: every string in ``name``, ``telecom[].value``, ``address``
  (``line``, ``text``, ``district`` and its extensions: Synthea's geolocation),
  ``identifier[].value``,
  ``photo``, ``contact``, and the mothers-maiden-name and birth-place extensions;
- the resource's own id, for Patient (the pseudonym takes its place);
- on every resource: the narrative (``text.div``), annotations (``note[].text``), attachment
  ``data`` and ``url`` (notes, photos, reports), ``DiagnosticReport.conclusion``,
  ``Communication.payload[].contentString``, and the ``display`` and ``identifier.value`` of any
  reference to a patient.

Resources about no patient (Practitioner, Organization, ...) are stored as received; their files
are encrypted at rest like every other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from infra.keys.vault import TOKEN_PREFIX, TokenSealer

ORIGINAL_REFERENCE_URL = "https://carelake.dev/fhir/StructureDefinition/original-reference"
ORIGINAL_ID_URL = "https://carelake.dev/fhir/StructureDefinition/original-id"
PERSON_TYPES = frozenset({"Patient", "RelatedPerson", "Person"})
PERSON_ELEMENTS = ("name", "telecom", "address", "identifier", "photo", "contact")
PERSON_EXTENSION_MARKERS = ("mothersMaidenName", "birthPlace", "patient-birthPlace")
_KEEP_CODES = frozenset({"use", "system", "type", "period", "relationship", "gender", "rank",
                         "contentType", "language", "size", "hash", "creation", "state",
                         "country", "city", "postalCode"})
_ADDRESS_KEEP = frozenset({"use", "type", "city", "state", "postalCode", "country", "period"})

SealerFor = Callable[[str], TokenSealer]
_PATIENT_TAIL = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(/_history/[^/]+)?$")


def patient_target(reference: str) -> tuple[str, str] | None:
    """(``Patient/<id>``, history suffix) for a relative or absolute reference to a patient."""
    if "Patient/" not in reference or "?" in reference or reference.startswith(("#", "urn:")):
        return None
    match = _PATIENT_TAIL.search(reference)
    if match is None:
        return None
    return f"Patient/{match.group(1)}", match.group(2) or ""


def is_token(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def _seal_leaves(node: Any, sealer: TokenSealer, keep: frozenset[str] = _KEEP_CODES) -> Any:
    """Every string or number under ``node`` sealed, except the values of coded keys in ``keep``."""
    if isinstance(node, dict):
        return {key: (value if key in keep else _seal_leaves(value, sealer, keep))
                for key, value in node.items()}
    if isinstance(node, list):
        return [_seal_leaves(item, sealer, keep) for item in node]
    if isinstance(node, bool) or node is None or is_token(node):
        return node
    return sealer.seal(node)


def _protect_person(resource: dict[str, Any], sealer: TokenSealer) -> None:
    for element in PERSON_ELEMENTS:
        value = resource.get(element)
        if value is None:
            continue
        if element == "address":
            resource[element] = [
                {key: (item if key in _ADDRESS_KEEP else _seal_leaves(item, sealer))
                 for key, item in address.items()} if isinstance(address, dict) else
                _seal_leaves(address, sealer)
                for address in (value if isinstance(value, list) else [value])
            ]
        elif element in {"telecom", "identifier"}:
            resource[element] = [
                {key: (sealer.seal(item) if key == "value" else item)
                 for key, item in entry.items()}
                if isinstance(entry, dict) else _seal_leaves(entry, sealer)
                for entry in (value if isinstance(value, list) else [value])
            ]
        else:
            resource[element] = _seal_leaves(value, sealer)
    extensions = resource.get("extension")
    if isinstance(extensions, list):
        resource["extension"] = [
            _seal_leaves(extension, sealer, frozenset({"url"}))
            if isinstance(extension, dict)
            and any(marker in str(extension.get("url", "")) for marker in PERSON_EXTENSION_MARKERS)
            else extension
            for extension in extensions
        ]


class Protector:
    """Applies the protection rules to one resource, in the ingest's single walk over it:
    ``begin`` with its subject, ``protect_node`` on every JSON object once that object's
    references are normalized, then ``finish`` for the resource-level rules.

    ``patient_sealer`` maps a normalized reference (``Patient/<source id>``) to that patient's
    pseudonym and sealer, or None when the reference names no patient.
    """

    def __init__(self, patient_sealer: Callable[[str], tuple[str, TokenSealer] | None]) -> None:
        self._patient_sealer = patient_sealer

    def begin(self, subject: str | None) -> tuple[str | None, TokenSealer | None]:
        found = self._patient_sealer(subject) if subject else None
        return (found[0], found[1]) if found else (None, None)

    def finish(self, resource: dict[str, Any], patient_key: str | None,
               sealer: TokenSealer | None) -> None:
        """The resource-level rules: person elements, the Patient's id, narrative, conclusion."""
        if sealer is None:
            return
        if resource.get("resourceType") in PERSON_TYPES:
            _protect_person(resource, sealer)
        if resource.get("resourceType") == "Patient":
            original = resource.get("id")
            resource["id"] = patient_key
            meta = resource.setdefault("meta", {})
            meta.setdefault("extension", []).append(
                {"url": ORIGINAL_ID_URL, "valueString": sealer.seal(original)})
        text = resource.get("text")
        if isinstance(text, dict) and "div" in text:
            text["div"] = sealer.seal(text["div"])
        if resource.get("resourceType") == "DiagnosticReport" and "conclusion" in resource:
            resource["conclusion"] = sealer.seal(resource["conclusion"])

    def protect_node(self, node: dict[str, Any], sealer: TokenSealer | None) -> None:
        """The rules for one JSON object: patient references, attachments, notes, payloads."""
        reference = node.get("reference")
        if isinstance(reference, str) and "Patient/" in reference:
            self._protect_reference(node, reference)
        if sealer is not None:
            if "contentType" in node:
                for key in ("data", "url"):
                    if key in node and not is_token(node[key]):
                        node[key] = sealer.seal(node[key])
            if "contentString" in node:
                node["contentString"] = sealer.seal(node["contentString"])
            notes = node.get("note")
            if isinstance(notes, list):
                for note in notes:
                    if isinstance(note, dict) and "text" in note and not is_token(note["text"]):
                        note["text"] = sealer.seal(note["text"])

    def _protect_reference(self, node: dict[str, Any], reference: str) -> None:
        parsed = patient_target(reference)
        if parsed is None:
            return
        target, history = parsed
        found = self._patient_sealer(target)
        if found is None:
            return
        pseudonym, sealer = found
        node["reference"] = f"Patient/{pseudonym}{history}"
        extensions = node.setdefault("extension", [])
        extensions.append({"url": ORIGINAL_REFERENCE_URL, "valueString": sealer.seal(reference)})
        if "display" in node:
            node["display"] = sealer.seal(node["display"])
        identifier = node.get("identifier")
        if isinstance(identifier, dict) and "value" in identifier:
            identifier["value"] = sealer.seal(identifier["value"])


def restore(resource: dict[str, Any], sealer_for: SealerFor, *, patient_key: str | None) -> Any:
    """The original resource: every token opened, every pseudonymized reference put back."""
    own = sealer_for(patient_key) if patient_key else None

    def walk(node: Any, sealer: TokenSealer | None) -> Any:
        if isinstance(node, list):
            return [walk(item, sealer) for item in node]
        if isinstance(node, dict):
            node = dict(node)
            reference = node.get("reference")
            local = sealer
            if isinstance(reference, str) and reference.startswith("Patient/"):
                pseudonym = reference[len("Patient/"):].split("/_history/", 1)[0]
                local = sealer_for(pseudonym)
            extensions = node.get("extension")
            if isinstance(extensions, list):
                kept = []
                for extension in extensions:
                    url = extension.get("url") if isinstance(extension, dict) else None
                    if url == ORIGINAL_REFERENCE_URL and local is not None:
                        node["reference"] = local.open(extension["valueString"])
                    elif url == ORIGINAL_ID_URL and own is not None:
                        node["__original_id__"] = own.open(extension["valueString"])
                    else:
                        kept.append(extension)
                if kept:
                    node["extension"] = kept
                else:
                    del node["extension"]
            return {key: walk(value, local if key != "reference" else local)
                    for key, value in node.items()}
        if is_token(node) and sealer is not None:
            return sealer.open(node)
        return node

    restored = walk(resource, own)
    meta = restored.get("meta")
    if isinstance(meta, dict) and "__original_id__" in meta:
        restored["id"] = meta.pop("__original_id__")
        if not meta:
            del restored["meta"]
    return restored
