"""Rewrite one FHIR resource into copy k of a scaled data set.

Everything a copy changes is a pure function of (seed, copy, old value), so a reference in one file
and its target in another agree without any table shared between them:

- ids: a UUID5 of the old id; ``urn:uuid:`` full URLs, ``Type/id`` references, ``_id`` search
  parameters and UUID-shaped identifier values all go through the same function;
- other identifier values and telecom values: the same shape with new digits and letters, also used
  for ``identifier=system|value`` in conditional references;
- names: each given or family part is replaced (see ``scaler_names``), in HumanNames, in the display
  of references to people, and in the patient's narrative and plain-text notes;
- dates: every date, dateTime, instant and period moves by a whole number of days chosen per copy
  and per patient, keeping its precision ("2019" stays a year, "2019-03" a month).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from dlt_pipelines.fhir.scaler_names import FAMILY_NAMES, GIVEN_NAMES, new_name_part

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://carelake.invalid/scaler")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_TEXT_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_URN_PREFIX = re.compile(r"urn:[a-z0-9-]+:")
_RUN = re.compile(r"[0-9]+|[a-z]+|[A-Z]+")
_UNIT = re.compile(r"\b(?:Unit|Apt|Suite)\b", re.IGNORECASE)
_STREET_KINDS = ("St", "Ave", "Rd", "Blvd", "Ter", "Ct", "Pl", "Pkwy")
_TYPE_AND_ID = re.compile(r"(.*?)([A-Z][A-Za-z]+)/([A-Za-z0-9.\-]{1,64})(/_history/.+)?")

_NPI = "http://hl7.org/fhir/sid/us-npi"
MAIDEN_NAME_URL = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
PERSON_TYPES = frozenset({"Patient", "Practitioner", "RelatedPerson", "Person", "PractitionerRole"})
_HOME_TYPES = frozenset({"Patient", "RelatedPerson", "Person"})
PATIENT_FIELDS = ("subject", "patient", "beneficiary", "target")

# Strings under these keys are never dates, even when they look like one ("2019" as a code).
_NOT_DATES = frozenset(
    {
        "id", "value", "code", "system", "version", "unit", "url", "uid", "data", "text", "div",
        "display", "reference", "fullUrl", "family", "given", "prefix", "suffix", "line", "city",
        "district", "state", "postalCode", "country", "name", "title", "description", "status",
        "use", "type", "method", "contentType", "language", "hash", "ifNoneExist", "valueString",
        "valueCode", "valueId", "valueUri", "valueUrl", "valueCanonical", "valueOid", "valueUuid",
        "valueMarkdown", "valueBase64Binary",
    }
)
_DAYS_PER_YEAR = 365.2425
_DAYS_PER_MONTH = _DAYS_PER_YEAR / 12
MAX_SHIFT_DAYS = 1826
CACHE_ENTRIES = 1 << 20


def shift_date(value: str, days: int) -> str:
    """``value`` moved by ``days`` when it is a FHIR date, dateTime or instant; else unchanged.

    A full date moves by the days and keeps its time and zone as written; a year-month moves by
    the nearest whole number of months and a year by the nearest whole number of years.
    """
    match = _DATE.fullmatch(value)
    if match is None:
        return value
    year, month, day, rest = match.groups()
    try:
        if day is not None:
            moved = datetime.date(int(year), int(month), int(day)) + datetime.timedelta(days=days)
            return f"{moved.year:04d}-{moved.month:02d}-{moved.day:02d}{rest or ''}"
        if month is not None:
            if not 1 <= int(month) <= 12:
                return value
            total = int(year) * 12 + int(month) - 1 + round(days / _DAYS_PER_MONTH)
            return f"{total // 12:04d}-{total % 12 + 1:02d}"
        moved_year = int(year) + round(days / _DAYS_PER_YEAR)
        return f"{moved_year:04d}" if moved_year >= 1 else value
    except (ValueError, OverflowError):
        return value


def years_earlier(value: str, years: int) -> str:
    """A FHIR date ``years`` whole years earlier, keeping its precision (29 February -> 28)."""
    match = _DATE.fullmatch(value)
    if match is None or years == 0:
        return value
    year, month, day, rest = match.groups()
    new_year = int(year) - years
    if day is None:
        return f"{new_year:04d}" + (f"-{month}" if month is not None else "")
    if (month, day) == ("02", "29") and not _is_leap(new_year):
        day = "28"
    return f"{new_year:04d}-{month}-{day}{rest or ''}"


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


@dataclass
class PersonNames:
    """The name parts of one patient, for rewriting their narrative and notes."""

    parts: dict[str, str] = field(default_factory=dict)  # old part -> "given" or "family"

    @classmethod
    def of(cls, resource: dict[str, Any]) -> PersonNames:
        names = cls()
        for human_name in resource.get("name") or []:
            if not isinstance(human_name, dict):
                continue
            for given in human_name.get("given") or []:
                if isinstance(given, str) and given:
                    names.parts.setdefault(given, "given")
            family = human_name.get("family")
            if isinstance(family, str) and family:
                names.parts.setdefault(family, "family")
        return names


@dataclass
class Context:
    """Where a resource sits: its patient's day offset and names, and the bundle's full URLs."""

    days: int
    names: PersonNames | None = None
    url_types: dict[str, str] | None = None


@dataclass
class Counters:
    notes_rewritten: int = 0
    attachments_kept: int = 0


class CopyRewriter:
    """Rewrites resources in place for one copy; caches stay inside the copy."""

    def __init__(self, *, seed: int, copy: int) -> None:
        self.seed = seed
        self.copy = copy
        self.counters = Counters()
        self._ids: dict[str, str] = {}
        self._values: dict[str, str] = {}
        self._parts: dict[tuple[str, str], str] = {}
        self._patterns: dict[frozenset[str], re.Pattern[str]] = {}
        self._affines: dict[tuple[int, int], tuple[int, int]] = {}

    def draw(self, *parts: object) -> int:
        """A 64-bit number keyed by seed, copy and ``parts``."""
        text = "\x1f".join(str(part) for part in (self.seed, self.copy, *parts))
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def fraction(self, *parts: object) -> float:
        return self.draw(*parts) / 2**64

    def day_offset(self, patient_id: str | None) -> int:
        """Whole days, in [-MAX_SHIFT_DAYS, -1]: earlier, so no copy lands in the future."""
        return -1 - self.draw("days", patient_id or "") % MAX_SHIFT_DAYS

    def new_id(self, old: str) -> str:
        new = self._ids.get(old)
        if new is None:
            new = str(uuid.uuid5(_NAMESPACE, f"{self.seed}:{self.copy}:{old}"))
            _bounded(self._ids)[old] = new
        return new

    def new_value(self, old: str) -> str:
        """A new identifier or telecom value: UUIDs like ids, others in the same shape.

        Each run of digits, of lower-case and of upper-case letters goes through an affine
        permutation keyed by the copy and the run's length, so within a copy two different values
        never share a new one (a conditional reference still finds one target).
        """
        new = self._values.get(old)
        if new is not None:
            return new
        if _UUID.fullmatch(old):
            new = self.new_id(old)
        elif old.startswith("urn:uuid:") and _UUID.fullmatch(old[9:]):
            new = "urn:uuid:" + self.new_id(old[9:])
        else:
            prefix = _URN_PREFIX.match(old)
            keep = prefix.end() if prefix else 0
            new = old[:keep] + _RUN.sub(self._permuted_run, old[keep:])
        _bounded(self._values)[old] = new
        return new

    def _permuted_run(self, match: re.Match[str]) -> str:
        run = match[0]
        if run[0].isdigit():
            alphabet = "0123456789"
        elif run[0].islower():
            alphabet = "abcdefghijklmnopqrstuvwxyz"
        else:
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        base, length = len(alphabet), len(run)
        modulus = base**length
        multiplier, offset = self._affine(base, length)
        number = 0
        for character in run:
            number = number * base + alphabet.index(character)
        number = (multiplier * number + offset) % modulus
        out = []
        for _ in range(length):
            number, digit = divmod(number, base)
            out.append(alphabet[digit])
        return "".join(reversed(out))

    def _affine(self, base: int, length: int) -> tuple[int, int]:
        """A multiplier prime to ``base`` (so the map is a permutation) and an offset."""
        key = (base, length)
        found = self._affines.get(key)
        if found is None:
            modulus = base**length
            multiplier = self.draw("multiplier", base, length) % modulus
            while math.gcd(multiplier, base) != 1:
                multiplier = (multiplier + 1) % modulus
            found = (multiplier, self.draw("offset", base, length) % modulus)
            self._affines[key] = found
        return found

    def street_line(self, old: str) -> str:
        """A new street line: house number, a synthetic street name, and a unit if one was given."""
        draw = self.draw("street", old)
        street = FAMILY_NAMES[(draw >> 10) % len(FAMILY_NAMES)]
        kind = _STREET_KINDS[(draw >> 30) % len(_STREET_KINDS)]
        line = f"{1 + draw % 999} {street} {kind}"
        if _UNIT.search(old):
            line += f" Unit {1 + (draw >> 40) % 99}"
        return line

    def name_part(self, old: str, kind: str) -> str:
        key = (old, kind)
        new = self._parts.get(key)
        if new is None:
            new = new_name_part(old, kind=kind, draw=self.draw("name", kind, old))
            _bounded(self._parts)[key] = new
        return new

    def person_display(self, display: str) -> str:
        """A person's display ("Dr. Liane379 Kunze215"): titles kept, last word a family name."""
        words = display.split(" ")
        named = [index for index, word in enumerate(words) if word and not word.endswith(".")]
        for position, index in enumerate(named):
            kind = "family" if position == len(named) - 1 else "given"
            words[index] = self.name_part(words[index], kind)
        return " ".join(words)

    def generated_full_name(self, old: str) -> str:
        draw = self.draw("full-name", old)
        given = GIVEN_NAMES[draw % len(GIVEN_NAMES)]
        return f"{given} {FAMILY_NAMES[(draw >> 24) % len(FAMILY_NAMES)]}"

    def reference(self, reference: str) -> str:
        """A rewritten reference: ``urn:uuid:``, ``[base/]Type/id[/_history/v]`` or conditional."""
        if reference.startswith("urn:uuid:"):
            return "urn:uuid:" + self.new_id(reference[9:])
        if reference.startswith("#") or not reference:
            return reference
        type_name, question, query = reference.partition("?")
        if question:
            return type_name + "?" + self.query(query)
        match = _TYPE_AND_ID.fullmatch(reference)
        if match is None:
            return reference
        base, type_name, old_id, history = match.groups()
        return f"{base}{type_name}/{self.new_id(old_id)}{history or ''}"

    def query(self, query: str) -> str:
        """Search parameters of a conditional reference or request: identifiers and ``_id``."""
        rewritten = []
        for parameter in query.split("&"):
            name, equals, value = parameter.partition("=")
            if equals and name == "identifier":
                raw = unquote(value)
                system, bar, code = raw.rpartition("|")
                new = f"{system}{bar}{self.new_value(code)}"
                value = quote(new, safe=":/|.-_") if "%" in value else new
            elif equals and name == "_id":
                value = self.new_id(value)
            rewritten.append(f"{name}{equals}{value}")
        return "&".join(rewritten)

    def patient_pattern(self, names: PersonNames) -> re.Pattern[str] | None:
        if not names.parts:
            return None
        key = frozenset(names.parts)
        pattern = self._patterns.get(key)
        if pattern is None:
            alternatives = "|".join(re.escape(part) for part in sorted(key, key=len, reverse=True))
            pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
            self._patterns[key] = pattern
        return pattern

    def patient_text(self, text: str, context: Context, *, dates: bool) -> str:
        """Free text about the patient: their name parts replaced, ISO dates moved if asked."""
        names = context.names
        pattern = self.patient_pattern(names) if names is not None else None
        if pattern is not None:
            text = pattern.sub(lambda match: self.name_part(match[0], names.parts[match[0]]), text)
        if dates:
            text = _TEXT_DATE.sub(lambda match: shift_date(match[0], context.days), text)
        return text

    def resource(self, resource: dict[str, Any], context: Context) -> None:
        """Rewrite ``resource`` in place (its id, then every element)."""
        old_id = resource.get("id")
        if isinstance(old_id, str):
            resource["id"] = self.new_id(old_id)
        if resource.get("resourceType") in _HOME_TYPES:
            holders = [resource, *(resource.get("contact") or [])]
            for holder in holders:
                addresses = holder.get("address") if isinstance(holder, dict) else None
                for address in addresses if isinstance(addresses, list) else [addresses]:
                    if isinstance(address, dict) and isinstance(address.get("line"), list):
                        address["line"] = [
                            self.street_line(line) if isinstance(line, str) else line
                            for line in address["line"]
                        ]
        self._node(resource, context)

    def elements(self, node: dict[str, Any], context: Context) -> None:
        """Rewrite every element of ``node`` in place by the same rules as a resource's."""
        self._node(node, context)

    def _node(self, node: dict[str, Any], context: Context) -> None:
        for key, value in node.items():
            kind = type(value)
            if kind is str:
                node[key] = self._string(key, value, node, context)
            elif kind is dict:
                self._child(key, value, context)
            elif kind is list:
                for index, item in enumerate(value):
                    if type(item) is dict:
                        self._child(key, item, context)
                    elif type(item) is str and key not in _NOT_DATES and item[:1].isdigit():
                        value[index] = shift_date(item, context.days)

    def _string(self, key: str, value: str, node: dict[str, Any], context: Context) -> str:
        if key == "reference" or key == "fullUrl":
            return self.reference(value)
        if key == "display":
            if self._reference_type(node, context) in PERSON_TYPES:
                return self.person_display(value)
            return value
        if key == "div":
            return self.patient_text(value, context, dates=False)
        if key in _NOT_DATES or not value[:1].isdigit():
            return value
        return shift_date(value, context.days)

    def _reference_type(self, node: dict[str, Any], context: Context) -> str | None:
        """The type a Reference points at: from ``reference``, ``type``, or an NPI identifier."""
        reference = node.get("reference")
        if not isinstance(reference, str):
            if isinstance(node.get("type"), str):
                return node["type"]
            identifier = node.get("identifier")
            if isinstance(identifier, dict) and identifier.get("system") == _NPI:
                return "Practitioner"
            return None
        if reference.startswith("urn:"):
            return (context.url_types or {}).get(reference)
        head, question, _ = reference.partition("?")
        if question:
            return head
        match = _TYPE_AND_ID.fullmatch(reference)
        return match[2] if match else None

    def _child(self, key: str, child: dict[str, Any], context: Context) -> None:
        if "data" in child and "contentType" in child:
            self._attachment(child, context)
        elif key == "name":
            self._human_name(child)
        elif key == "identifier" or key == "telecom":
            value = child.get("value")
            if isinstance(value, str):
                child["value"] = self.new_value(value)
        elif key == "extension" and child.get("url") == MAIDEN_NAME_URL:
            value = child.get("valueString")
            if isinstance(value, str):
                child["valueString"] = self.generated_full_name(value)
        self._node(child, context)

    def _human_name(self, human_name: dict[str, Any]) -> None:
        own: dict[str, str] = {}
        given = human_name.get("given")
        if isinstance(given, list):
            for index, part in enumerate(given):
                if isinstance(part, str):
                    own[part] = "given"
                    given[index] = self.name_part(part, "given")
        family = human_name.get("family")
        if isinstance(family, str):
            own[family] = "family"
            human_name["family"] = self.name_part(family, "family")
        text = human_name.get("text")
        if isinstance(text, str):
            words = text.split(" ")
            human_name["text"] = " ".join(
                self.name_part(word, own[word]) if word in own else word for word in words
            )

    def _attachment(self, attachment: dict[str, Any], context: Context) -> None:
        """Plain-text attachments (notes) get the patient's new name and dates; others stay."""
        content_type = attachment.get("contentType")
        data = attachment.get("data")
        if not (isinstance(content_type, str) and content_type.startswith("text/")):
            self.counters.attachments_kept += 1
            return
        charset = "utf-8"
        for parameter in content_type.split(";")[1:]:
            name, _, value = parameter.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            text = base64.b64decode(data, validate=True).decode(charset)
        except (binascii.Error, UnicodeDecodeError, LookupError, TypeError, ValueError):
            self.counters.attachments_kept += 1
            return
        body = self.patient_text(text, context, dates=True).encode(charset)
        attachment["data"] = base64.b64encode(body).decode("ascii")
        if "size" in attachment:
            attachment["size"] = len(body)
        if "hash" in attachment:
            attachment["hash"] = base64.b64encode(hashlib.sha1(body).digest()).decode("ascii")
        self.counters.notes_rewritten += 1


def _bounded(cache: dict[Any, Any]) -> dict[Any, Any]:
    """``cache``, emptied when full: its values are pure functions, so that only costs time."""
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    return cache


def patient_reference_id(resource: dict[str, Any], url_ids: dict[str, str] | None) -> str | None:
    """The old id of the patient a resource is about, from its usual patient fields.

    ``url_ids`` maps a bundle's ``urn:uuid:`` full URLs of Patients to their ids.
    """
    if resource.get("resourceType") == "Patient":
        value = resource.get("id")
        return value if isinstance(value, str) else None
    for name in PATIENT_FIELDS:
        value = resource.get(name)
        candidates = value if isinstance(value, list) else [value]
        for candidate in candidates:
            reference = candidate.get("reference") if isinstance(candidate, dict) else None
            if not isinstance(reference, str):
                continue
            if url_ids is not None and reference in url_ids:
                return url_ids[reference]
            if reference.startswith("Patient/"):
                return reference[8:].split("/", 1)[0]
    return None
