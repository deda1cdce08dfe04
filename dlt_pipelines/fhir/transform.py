"""Turn source entries into bronze rows: validate, normalize references, protect patients.

Every entry ends as exactly one outcome, counted in the run summary:

- ``upsert``: a resource to load (insert, or replace an older version);
- ``delete``: a history, transaction or bulk DELETE of ``Type/id``;
- ``recorded``: a request that carries no resource to store (GET, conditional DELETE, PATCH, a
  response without a resource, an OperationOutcome), counted by kind;
- ``quarantine``: a record that fails validation, kept whole (sealed) with its locator and reason.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from dlt_pipelines.fhir.sources import ENCODER, Entry
from infra.keys.vault import PatientVault, TokenSealer
from infra.pseudonym import Protector, patient_target

# \Z, not $: $ also matches before a final newline, and "2024\n" is no date.
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}\Z")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_DATE_TIME = re.compile(
    rf"^{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?\Z"
)
_DATE = re.compile(rf"^{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?\Z")
_INSTANT = re.compile(
    rf"^{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))\Z"
)
# Elements of type date (only a date), instant (always a zone), or dateTime (the rest below).
DATE_ELEMENTS = frozenset({"birthDate", "valueDate", "lockedDate"})
INSTANT_ELEMENTS = frozenset({"lastUpdated", "issued", "valueInstant", "instant"})
DATE_TIME_ELEMENTS = frozenset({"date", "start", "end", "recorded", "authoredOn", "created",
                                "occurrenceDateTime", "effectiveDateTime", "onsetDateTime",
                                "abatementDateTime", "performedDateTime", "valueDateTime",
                                "deceasedDateTime", "whenHandedOver", "whenPrepared",
                                "dateWritten", "started", "timestamp", "effectiveInstant"})
SUBJECT_FIELDS = ("subject", "patient", "beneficiary", "individual")
_REFERENCE_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[^/]+)?$")


try:  # hmac.digest's own fast path, without its wrapper's call
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # an interpreter without OpenSSL's hashlib
    _hmac_digest = hmac.digest


class Rejected(Exception):
    """A record fails validation; the message is the reason, free of patient data."""


@dataclass(slots=True)
class Outcome:
    kind: str  # upsert, delete, recorded, quarantine
    resource_type: str | None = None
    row: tuple | None = None  # values named by ROW_FIELDS
    reason: str | None = None
    raw: bytes | None = None
    patient_key: str | None = None


DATE_BY_TYPE = {"Immunization": "expirationDate", "Medication": "expirationDate"}
_DATEISH = DATE_TIME_ELEMENTS | DATE_ELEMENTS | INSTANT_ELEMENTS


def _element_check(key: str, value: str, path: list[str]) -> None:
    """Check one date-like element; ``path`` is joined only when the value is wrong."""
    if key in INSTANT_ELEMENTS:
        if not _INSTANT.match(value):
            raise Rejected(f"{'.'.join(path)}.{key} is not a valid FHIR instant (a full date and "
                           "time with a zone, for example 2024-05-01T10:00:00Z)")
    elif key in DATE_ELEMENTS or DATE_BY_TYPE.get(path[0]) == key:
        if not _DATE.match(value):
            raise Rejected(f"{'.'.join(path)}.{key} is not a valid FHIR date (YYYY, YYYY-MM or "
                           "YYYY-MM-DD)")
    elif not _DATE_TIME.match(value):  # dateTime, and the *Date elements that are dateTime in R4
        raise Rejected(f"{'.'.join(path)}.{key} is not a valid FHIR dateTime (a date, or a date "
                       "and time with seconds and a zone)")


def parse_instant(value: str | None) -> dt.datetime | None:
    """An instant in UTC; ValueError when it is no date (a second 60, the 30th of February) or
    falls outside the years 1 to 9999 once moved to UTC."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the instant falls outside the years 1 to 9999 in UTC") from None


class Normalizer:
    """Rewrites references and checks dates in one walk over a resource."""

    def __init__(self, urn_map: dict[str, str]) -> None:
        self.urn_map = urn_map
        self.unresolved = 0

    def resolve(self, value: str) -> str:
        """``value`` with a bundle's fullUrl mapped to ``Type/id``; nothing counted."""
        return self.urn_map.get(value, value)

    def reference(self, value: str) -> str:
        mapped = self.urn_map.get(value)
        if mapped is not None:
            return mapped
        if value.startswith(("urn:uuid:", "urn:oid:")):
            self.unresolved += 1
            return value
        # Absolute references to a server are kept as written; one to a patient is pseudonymized
        # (and its original sealed) by the Protector.
        return value

    def walk(self, node: Any, path: list[str], protect=None, sealer=None) -> None:
        """Normalize references and check dates in every object of ``node``; when ``protect``
        is given (``Protector.protect_node``), apply it to each object once its children are
        done, so the protection rules see normalized references (one walk does all three)."""
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str):
                    if key == "reference":
                        node[key] = self.reference(value)
                    elif key in _DATEISH or key.endswith(("Date", "DateTime")):
                        _element_check(key, value, path)
                elif isinstance(value, (dict, list)):
                    path.append(key)
                    self.walk(value, path, protect, sealer)
                    path.pop()
            if protect is not None:
                protect(node, sealer)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, (dict, list)):
                    self.walk(item, path, protect, sealer)


def subject_reference(resource: dict[str, Any], resolve=lambda reference: reference) -> str | None:
    """``Patient/<id>`` of the patient the resource is about (``resolve`` maps bundle urls)."""
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource['id']}"
    return first_patient([resource.get(name) for name in SUBJECT_FIELDS], resolve)


def first_patient(values: list[Any], resolve, target=patient_target) -> str | None:
    """``Patient/<id>`` of the first reference to a patient in ``values`` (the members named in
    SUBJECT_FIELDS, in that order, each a Reference or a list of them)."""
    for value in values:
        if value is None:
            continue
        for candidate in value if isinstance(value, list) else (value,):
            reference = candidate.get("reference") if isinstance(candidate, dict) else None
            if isinstance(reference, str):
                parsed = target(resolve(reference))
                if parsed is not None:
                    return parsed[0]
    return None


_PATIENTS_KEPT = 100_000  # patients' keys and sealers a transformer remembers


class Transformer:
    def __init__(self, vault: PatientVault, *, index_key: bytes, source: str, load_id: str,
                 loaded_at: dt.datetime) -> None:
        self._vault = vault
        self._index_key = index_key
        self.source = source
        self.load_id = load_id
        self.loaded_at = loaded_at
        self._sealers: dict[str, tuple[str, TokenSealer]] = {}
        self._protector = Protector(self._patient_sealer)
        self.unresolved_references = 0
        from dlt_pipelines.fhir.fastpath import FastPath

        self._fast = FastPath(self)

    def _patient_sealer(self, reference: str) -> tuple[str, TokenSealer] | None:
        if not reference.startswith("Patient/") or "?" in reference:
            return None
        found = self._sealers.get(reference)
        if found is None:
            if len(self._sealers) >= _PATIENTS_KEPT:
                self._sealers.clear()  # a worker's transformer lives for the whole load
            key = self._vault.key_for_source(reference)
            found = (key.pseudonym, TokenSealer(key))
            self._sealers[reference] = found
        return found

    def content_hash(self, blob: bytes) -> str:
        return _hmac_digest(self._index_key, blob, "sha256")[:16].hex()

    def outcome(self, entry: Entry) -> Outcome:
        if entry.error:
            return Outcome("quarantine", reason=entry.error, raw=entry.raw)
        method = (entry.method or "").upper()
        if method in {"GET", "HEAD"}:
            return Outcome("recorded", reason=f"{method} request")
        if method == "PATCH":
            return Outcome("recorded", reason="PATCH request (recorded, not applied)")
        if method == "DELETE":
            return self._delete(entry)
        if entry.resource is None and entry.body is None:
            return Outcome("recorded", reason="entry without a resource")
        has_id = entry.head.id if entry.resource is None else entry.resource.get("id")
        if method in {"PUT", "POST"} and "?" in (entry.request_url or "") and \
                not has_id and _id_from(entry) is None:
            return Outcome("recorded", reason=f"conditional {method} without an id (recorded, "
                                              "not applied: it needs the server's search)")
        if entry.body is not None:
            fast = self._fast.upsert(entry) if entry.resource is None else None
            if fast is not None:
                return fast
            try:
                entry.decoded()
            except msgspec.DecodeError as error:  # a string that is not UTF-8, for one
                return Outcome("quarantine", reason=f"malformed JSON: {error}", raw=entry.body)
            original = entry.body
        else:
            original = ENCODER.encode(entry.resource)
        try:
            return self._upsert(entry, original)
        except Rejected as reason:
            return Outcome("quarantine", resource_type=_type_of(entry.resource), reason=str(reason),
                           raw=original,
                           patient_key=getattr(reason, "patient_key", None) or self._owner(entry))

    def _owner(self, entry: Entry) -> str | None:
        """The patient a rejected resource is about, when that can still be told (for erasure)."""
        resource = entry.resource or {}
        if resource.get("resourceType") == "Patient" and not isinstance(resource.get("id"), str):
            return None
        try:
            reference = subject_reference(resource)
        except (KeyError, TypeError):
            return None
        if reference is None:
            return None
        found = self._patient_sealer(Normalizer(entry.urn_map).resolve(reference))
        return found[0] if found else None

    def _delete(self, entry: Entry) -> Outcome:
        url = (entry.request_url or "").split("/_history/", 1)[0]
        if "?" in url:
            return Outcome("recorded", reason="conditional DELETE (recorded, not applied)")
        match = _REFERENCE_TAIL.search(url)
        if not match:
            return Outcome("quarantine", reason="DELETE request without a Type/id url")
        resource_type, rid = match.group(1), match.group(2)
        if resource_type == "Patient":
            key = self._vault.key_for_source(f"Patient/{rid}", create=False)
            if key is None:
                return Outcome("recorded", reason="DELETE of a patient never loaded")
            rid = key.pseudonym
        try:
            deleted_at = parse_instant(entry.last_modified)
        except ValueError:
            deleted_at = None
        return Outcome("delete", resource_type=resource_type,
                       row=self._row(resource_type, rid, None, deleted_at, None, None, b"",
                                     op="delete"))

    def _upsert(self, entry: Entry, original: bytes) -> Outcome:
        resource = entry.resource
        assert resource is not None
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or not RESOURCE_TYPE.match(resource_type):
            raise Rejected("resource has no valid resourceType")
        if resource_type == "OperationOutcome" and not resource.get("id"):
            return Outcome("recorded", reason="OperationOutcome")
        rid = resource.get("id")
        if not rid:
            rid = _id_from(entry)
            if rid is None:
                raise Rejected(f"{resource_type} has no id (and no urn:uuid fullUrl or "
                               "Type/id request url to take one from)")
            resource["id"] = rid
        if not isinstance(rid, str) or not FHIR_ID.match(rid):
            raise Rejected(f"{resource_type}.id is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)")

        normalizer = Normalizer(entry.urn_map)
        patient_key, sealer = self._protector.begin(
            subject_reference(resource, normalizer.resolve))
        try:
            normalizer.walk(resource, [resource_type], self._protector.protect_node, sealer)
        except Rejected as rejected:
            rejected.patient_key = patient_key  # the walk has begun rewriting the references
            raise
        self.unresolved_references += normalizer.unresolved
        meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
        version = meta.get("versionId")
        try:
            last_updated = parse_instant(meta.get("lastUpdated"))
        except (ValueError, AttributeError):
            raise Rejected(f"{resource_type}.meta.lastUpdated is not a valid FHIR instant") \
                from None

        self._protector.finish(resource, patient_key, sealer)
        row_id = patient_key if resource_type == "Patient" else rid
        body = ENCODER.encode(resource)
        return Outcome("upsert", resource_type=resource_type,
                       row=self._row(resource_type, row_id, version, last_updated, patient_key,
                                     body.decode(), original))

    def _row(self, resource_type: str, rid: str, version: Any, last_updated: Any,
             patient_key: str | None, body: str | None, original: bytes, *,
             op: str = "upsert") -> tuple:
        """A bronze row, its values in the order of ``ROW_FIELDS`` (``bronze.BATCH_SCHEMA``)."""
        return (rid, resource_type, str(version) if version is not None else None,
                last_updated, patient_key, self.source, self.load_id, self.loaded_at, body,
                self.content_hash(original) if original else None, op)


# The names of a row's values, as in ``bronze.BATCH_SCHEMA``.
ROW_FIELDS = ("id", "resource_type", "version_id", "last_updated", "patient_key", "source",
              "load_id", "loaded_at", "resource", "content_hash", "op")


def _type_of(resource: dict[str, Any]) -> str | None:
    value = resource.get("resourceType")
    return value if isinstance(value, str) and RESOURCE_TYPE.match(value) else None


def _id_from(entry: Entry) -> str | None:
    if entry.full_url and entry.full_url.startswith("urn:uuid:"):
        return entry.full_url[len("urn:uuid:"):]
    if entry.request_url and "?" not in entry.request_url:
        match = _REFERENCE_TAIL.search(entry.request_url)
        if match:
            return match.group(2)
    return None
