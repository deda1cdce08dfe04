"""The transform's fast path: the outcome of the full walk, computed on the resource's JSON text.

Most resources need few changes on their way to bronze: their dates checked, their bundle
references rewritten, the references to their patient pseudonymized, and an attachment sealed.
Decoding such a resource into Python objects and walking every node costs about ten times what
the changes do, so this path works on the text: one scan finds every member the rules look at
(``reference``, the date elements, the protected elements) and checks the dates, and the changes
are spliced into the text. The scan is compiled (``_scan.c``) where the install found a C
compiler; ``scan_regex`` is the same scan in regular expressions, its reference and fallback.
Where the extension is built, the ingest first hands a resource to its compiled row builder
(``rows.py``), which does this path's work and the row's in one pass; this path then decides
what that builder leaves, before the walk.

The path takes only what it can decide exactly; anything else returns None and the caller runs
the full walk (``Transformer._upsert``), which then also writes the reasons for rejection:

- people (Patient, RelatedPerson, Person), OperationOutcome and nested Bundles;
- a key or a checked value that holds an escape (``\\u0044ate``, ``Patient\\/1``);
- a date that fails its check (the walk names the element's path);
- a reference to a patient whose object holds more than ``reference`` and ``display``;
- for a resource about a patient: a narrative, an annotation, a ``contentString``, a
  ``DiagnosticReport.conclusion``, or an attachment that is not a flat object starting with
  ``contentType``.

``tests/dlt_pipelines/test_fastpath.py`` checks that both paths give the same resources, row for
row, on every resource of the test corpora, with either scan; ``test_scan.py`` that the two scans
agree.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dlt_pipelines.fhir.sources import ENCODER, Entry
from dlt_pipelines.fhir.transform import (
    _DATE,
    _DATE_TIME,
    _INSTANT,
    DATE_BY_TYPE,
    DATE_ELEMENTS,
    DATE_TIME_ELEMENTS,
    FHIR_ID,
    INSTANT_ELEMENTS,
    RESOURCE_TYPE,
    SUBJECT_FIELDS,
    Outcome,
    first_patient,
    parse_instant,
)
from infra.keys.vault import TOKEN_PREFIX
from infra.pseudonym import ORIGINAL_REFERENCE_URL, PERSON_TYPES, patient_target

if TYPE_CHECKING:
    from dlt_pipelines.fhir.transform import Transformer

_SLOW_TYPES = PERSON_TYPES | {"OperationOutcome", "Bundle"}
_CACHE_ENTRIES = 100_000
_NAMED = sorted({*DATE_TIME_ELEMENTS, *DATE_ELEMENTS, *INSTANT_ELEMENTS, "reference",
                 "contentType", "contentString", "div", "note", "conclusion"},
                key=len, reverse=True)


def _trie(words: list[bytes]) -> bytes:
    """An alternation of ``words`` factored by first letter: Python's regular expressions try
    alternatives one by one, so a flat list of forty names costs twice the factored one."""
    groups: dict[bytes, list[bytes]] = {}
    ends = False
    for word in words:
        if word:
            groups.setdefault(word[:1], []).append(word[1:])
        else:
            ends = True
    branches = [re.escape(first) + _trie(rest) for first, rest in sorted(groups.items())]
    if not branches:
        return b""
    pattern = b"(?:" + b"|".join(branches) + b")" if len(branches) > 1 or ends else branches[0]
    return pattern + (b"?" if ends else b"")


# A member the rules look at, and its value when that is a string without escapes. The last
# branch is every other key ending in Date or DateTime, as the walk checks them (FHIR's keys are
# element names, of A-Z a-z 0-9 and _).
_SCAN = re.compile(rb'"(' + _trie([name.encode() for name in _NAMED])
                   + rb'|[A-Za-z0-9_]*Date(?:Time)?)"\s*:\s*(?:"([^"\\]*)")?')
_ESCAPED_KEY = re.compile(rb'[,{]\s*"[^"\\]*\\')
_REFERENCE_OBJECT = re.compile(rb'\{"reference":"([^"\\]*)"(?:,"display":"([^"\\]*)")?\}')
_MEMBER = rb'"[A-Za-z]+":(?:"[^"\\]*"|-?[0-9][0-9.eE+-]*|true|false|null)'
_FLAT_OBJECT = re.compile(rb"\{" + _MEMBER + rb"(?:," + _MEMBER + rb")*\}")
_FLAT_MEMBER = re.compile(rb'"([A-Za-z]+)":("[^"\\]*"|[^,}]*)')

_INSTANT_KEYS = frozenset(name.encode() for name in INSTANT_ELEMENTS)
_DATE_KEYS = frozenset(name.encode() for name in DATE_ELEMENTS)
_DATE_BY_TYPE = {kind: name.encode() for kind, name in DATE_BY_TYPE.items()}
_INSTANT_B = re.compile(_INSTANT.pattern.encode())
_DATE_B = re.compile(_DATE.pattern.encode())
_DATE_TIME_B = re.compile(_DATE_TIME.pattern.encode())
_EXTENSION_HEAD = b',"extension":[{"url":' + ENCODER.encode(ORIGINAL_REFERENCE_URL) + \
    b',"valueString":"'


def _date_ok(key: bytes, value: bytes, type_date: bytes | None) -> bool:
    if key in _INSTANT_KEYS:
        return _INSTANT_B.match(value) is not None
    if key in _DATE_KEYS or key == type_date:
        return _DATE_B.match(value) is not None
    return _DATE_TIME_B.match(value) is not None


# The kinds of member ``scan`` returns, as (kind, key_start, value_start, value_end); the value
# positions are -1 when the value is not a string without escapes.
REFERENCE, CONTENT_TYPE, PROTECTED, CONCLUSION = 1, 2, 3, 4
_MEMBER_KINDS = {b"reference": REFERENCE, b"contentType": CONTENT_TYPE, b"contentString": PROTECTED,
                 b"div": PROTECTED, b"note": PROTECTED, b"conclusion": CONCLUSION}


def scan_regex(body: bytes, type_date: bytes) -> list[tuple[int, int, int, int]] | None:
    """The members the fast path acts on, with every date element checked; None when the walk
    must decide (an escape in a key, in a reference or in a date, a date that fails its check).
    The reference implementation of the compiled ``_scan.scan``, used where it is not built."""
    if b"\\" in body and _ESCAPED_KEY.search(body):
        return None
    found = []
    for match in _SCAN.finditer(body):
        key, value = match.group(1), match.group(2)
        kind = _MEMBER_KINDS.get(key)
        escaped = value is None and body[match.end():match.end() + 1] == b'"'
        if kind is not None:
            if escaped and kind == REFERENCE:
                return None
            found.append((kind, match.start(), match.start(2), match.end(2)) if value is not None
                         else (kind, match.start(), -1, -1))
        elif escaped:
            return None
        elif value is not None and not _date_ok(key, value, type_date or None):
            return None
    return found


def _compiled():
    try:
        from dlt_pipelines.fhir import _scan
    except ImportError:
        return None
    classes = [(name.encode(), 3, 0) for name in INSTANT_ELEMENTS]
    classes += [(name.encode(), 2, 0) for name in DATE_ELEMENTS]
    classes += [(name.encode(), 1, 0) for name in DATE_TIME_ELEMENTS
                if name not in INSTANT_ELEMENTS and name not in DATE_ELEMENTS]
    classes += [(name, 4, kind) for name, kind in _MEMBER_KINDS.items()]
    _scan.configure(classes, [(kind.encode(), name) for kind, name in _DATE_BY_TYPE.items()])
    return _scan.scan


# The compiled scan (``_scan.c``, built by ``pip install -e .`` where a C compiler is found), or
# the regular expressions. Both give the same members; the tests check it on every corpus.
_COMPILED = _compiled()
scan = _COMPILED or scan_regex


class FastPath:
    """The fast path of one ``Transformer`` (whose caches of sealed references it keeps)."""

    def __init__(self, transformer: Transformer) -> None:
        self._transformer = transformer
        self._references: dict[tuple[str, bytes | None], bytes] = {}
        # the compiled row builder's memory of reference_text, kept as long as this path
        self.compiled_references: dict[bytes, bytes] = {}
        self._targets: dict[str, tuple[str, str] | None] = {}
        self._types: set[str] = set()  # resource types whose name passed the checks

    def upsert(self, entry: Entry) -> Outcome | None:
        """The entry's outcome, or None when the full walk must decide."""
        if entry.head is None or entry.body is None:
            return None
        row = self.row(entry.body, entry.head, entry.urn_map)
        return None if row is None else Outcome("upsert", resource_type=row[1], row=row)

    def row(self, body: bytes, head, urn_map: dict[str, str]) -> tuple | None:
        """The bronze row of a resource to upsert (``body``, its decoded ``head``, and the
        bundle's urn map), or None when the full walk must decide."""
        resource_type, rid, meta = head.resourceType, head.id, head.meta
        if resource_type not in self._types:
            if not isinstance(resource_type, str) or resource_type in _SLOW_TYPES or \
                    not RESOURCE_TYPE.match(resource_type):
                return None
            self._types.add(resource_type)
        if not isinstance(rid, str) or not FHIR_ID.match(rid):
            return None
        if meta is not None and not isinstance(meta, dict):
            return None
        last_updated = meta.get("lastUpdated") if meta else None
        if last_updated is not None and not isinstance(last_updated, str):
            return None
        type_date = _DATE_BY_TYPE.get(resource_type, b"")
        members = scan(body, type_date)
        if members is None:
            return None

        transformer = self._transformer
        patient_key, sealer = transformer._protector.begin(self._subject(head, urn_map))
        splices: list[tuple[int, int, bytes]] = []
        unresolved = 0
        for kind, key_start, value_start, value_end in members:
            if kind == REFERENCE:
                if value_start < 0:
                    continue
                reference = body[value_start:value_end].decode()
                mapped = urn_map.get(reference)
                if mapped is None:
                    if reference.startswith(("urn:uuid:", "urn:oid:")):
                        unresolved += 1
                    mapped = reference
                if "Patient/" in mapped and self._target(mapped) is not None:
                    splice = self._patient_reference(body, key_start, mapped)
                    if splice is None:
                        return None
                    splices.append(splice)
                elif mapped != reference:
                    splices.append((value_start - 1, value_end + 1, ENCODER.encode(mapped)))
            elif sealer is None:
                continue
            elif kind == CONTENT_TYPE:
                found = self._attachment(body, key_start, sealer) if value_start >= 0 else None
                if found is None:
                    return None
                splices.extend(found)
            elif kind == PROTECTED:
                return None
            elif kind == CONCLUSION and resource_type == "DiagnosticReport":
                return None
        try:
            updated_at = parse_instant(last_updated)
        except ValueError:
            return None

        if splices:
            splices.sort()
            parts, position = [], 0
            for start, end, text in splices:
                if start < position:
                    return None  # overlapping changes: let the walk do them
                parts += (body[position:start], text)
                position = end
            parts.append(body[position:])
            stored = b"".join(parts)
        else:
            stored = body
        try:
            text = stored.decode()
        except UnicodeDecodeError:
            return None  # the walk's decode names the fault
        transformer.unresolved_references += unresolved
        version = meta.get("versionId") if meta else None
        return transformer._row(resource_type, rid, version, updated_at, patient_key, text, body)

    def _patient_reference(self, body: bytes, key_start: int,
                           mapped: str) -> tuple[int, int, bytes] | None:
        """The pseudonymized reference object, as ``Protector._protect_reference`` writes it."""
        start = key_start - 1
        whole = _REFERENCE_OBJECT.match(body, start) if start >= 0 else None
        if whole is None:
            return None
        display = whole.group(2)
        cache_key = (mapped, display)
        text = self._references.get(cache_key)
        if text is None:
            if len(self._references) >= _CACHE_ENTRIES:
                self._references.clear()
            text = self.reference_text(mapped, display)
            if text is None:
                return None
            self._references[cache_key] = text
        return start, whole.end(), text

    def reference_text(self, mapped: str, display: bytes | None) -> bytes | None:
        """The text of ``{"reference": mapped, "display": display}`` (display as written, or
        None without one) pseudonymized: the reference to the patient's pseudonym, the display
        sealed, the original reference sealed in an extension. None when the reference names no
        patient the transformer can seal for."""
        target, history = self._target(mapped)
        found = self._transformer._patient_sealer(target)
        if found is None:
            return None
        pseudonym, sealer = found
        parts = [b'{"reference":', ENCODER.encode(f"Patient/{pseudonym}{history}")]
        if display is not None:
            parts += (b',"display":"', self._seal(sealer, b'"' + display + b'"'), b'"')
        parts += (_EXTENSION_HEAD, sealer.seal(mapped).encode(), b'"}]}')
        return b"".join(parts)

    def _target(self, reference: str) -> tuple[str, str] | None:
        """``patient_target``, remembered: a task's resources name the same patients again."""
        try:
            return self._targets[reference]
        except KeyError:
            if len(self._targets) >= _CACHE_ENTRIES:
                self._targets.clear()  # a streamed bundle's task lives long: stay bounded
            found = self._targets[reference] = patient_target(reference)
            return found

    def _subject(self, head, urn_map: dict[str, str]) -> str | None:
        """``subject_reference`` of the head, with the targets remembered."""
        subject = head.subject
        if type(subject) is dict:  # the common case, first of SUBJECT_FIELDS: answered here
            reference = subject.get("reference")
            if type(reference) is str:
                found = self._target(urn_map.get(reference, reference))
                if found is not None:
                    return found[0]
        return first_patient([getattr(head, name) for name in SUBJECT_FIELDS],
                             lambda reference: urn_map.get(reference, reference), self._target)

    @staticmethod
    def _seal(sealer, encoded: bytes) -> bytes:
        return sealer.seal_json(encoded).encode()

    def _attachment(self, body: bytes, key_start: int, sealer) -> list | None:
        """An attachment's ``data`` and ``url`` sealed: a flat object opening with contentType."""
        start = key_start - 1
        whole = _FLAT_OBJECT.match(body, start) if start >= 0 else None
        if whole is None:
            return None
        splices = []
        for member in _FLAT_MEMBER.finditer(body, start, whole.end()):
            if member.group(1) in {b"data", b"url"}:
                value = member.group(2)
                if value.startswith(b'"' + TOKEN_PREFIX.encode()):
                    continue
                splices.append((member.start(2), member.end(2),
                                b'"' + self._seal(sealer, value) + b'"'))
        return splices
