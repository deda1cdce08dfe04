"""Read FHIR from files: Bundles of every type, single resources, and Bulk Data NDJSON.

A source is a file or a folder (walked in sorted order). ``.json`` holds a Bundle or a single
resource, ``.ndjson`` one resource a line; either may be gzipped (``.gz``). Each yields ``Entry``
records in input order, with a locator (``entry 12`` or ``line 40``) that names the place without
naming the file: Synthea's bundle files carry their patient's name. Bundles larger than
``STREAM_BUNDLE_BYTES`` are read entry by entry (ijson) so memory stays bounded.

Parsing keeps every decimal as written (``msgspec`` with ``Decimal``): ``0.700`` stays ``0.700``.
A resource is not parsed whole here: an entry carries its JSON text (``body``, whitespace removed
for bundles) and the few members the transform needs first (``head``); the transform decodes the
whole resource only when its fast path cannot decide (see ``fastpath``).
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import gzip
import hashlib
import io
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from infra.errors import InputError

logger = logging.getLogger(__name__)

STREAM_BUNDLE_BYTES = 64 << 20
DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)
ENCODER = msgspec.json.Encoder(decimal_format="number")
FILE_SUFFIXES = (".json", ".ndjson", ".json.gz", ".ndjson.gz", ".jsonl", ".jsonl.gz")


class Head(msgspec.Struct):
    """The members of a resource read before it is transformed: type, id, meta and subject."""

    resourceType: Any = None  # the FHIR names
    id: Any = None
    meta: Any = None
    subject: Any = None
    patient: Any = None
    beneficiary: Any = None
    individual: Any = None


HEAD_DECODER = msgspec.json.Decoder(Head)


class _RawEntry(msgspec.Struct):
    fullUrl: Any = None
    resource: msgspec.Raw = msgspec.Raw(b"")  # empty: the entry has no resource
    request: Any = None
    response: Any = None


class _RawBundle(msgspec.Struct):
    type: Any = None
    entry: list[_RawEntry] | None = None


_BUNDLE_DECODER = msgspec.json.Decoder(_RawBundle)
_ENTRY_DECODER = msgspec.json.Decoder(_RawEntry)


@dataclass(slots=True)
class Entry:
    """One record of a source: a resource to load, a request to apply, or a parse failure."""

    locator: str
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    method: str | None = None
    request_url: str | None = None
    bundle_type: str | None = None
    last_modified: str | None = None  # entry.response.lastModified: when a DELETE happened
    error: str | None = None
    raw: bytes | None = None
    urn_map: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # the resource's JSON text, when it is not yet decoded
    head: Head | None = None

    def decoded(self) -> dict[str, Any] | None:
        """The whole resource, decoded from ``body`` on first use."""
        if self.resource is None and self.body is not None:
            self.resource = DECODER.decode(self.body)
        return self.resource


def source_label(path: Path) -> str:
    """A stable label for a file that does not reveal its name: a digest of its real path."""
    if os.path.islink(path):
        real = os.path.realpath(path)
    else:  # the folder's real path, looked up once for all its files
        folder, name = os.path.split(os.path.abspath(path))
        real = os.path.join(_real_folder(folder), name)
    digest = hashlib.sha256(real.encode()).hexdigest()[:16]
    kind = "ndjson" if is_ndjson(path) else "json"
    return f"{kind}:{digest}"


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def _walk(folder: Path) -> list[Path]:
    """The FHIR files under ``folder``, in the order of sorted paths (as ``sorted(rglob)``
    gives them: by path components); linked folders are not entered, linked files are read."""
    found: list[str] = []
    pending = [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.name.endswith(FILE_SUFFIXES) and entry.is_file():
                    found.append(entry.path)
    found.sort(key=lambda text: text.split(os.sep))
    return [Path(text) for text in found]


def input_files(sources: list[Path]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = _walk(source)
            if not found:
                raise InputError(f"source folder {source} holds no .json or .ndjson files")
            files.extend(found)
        elif source.is_file():
            if not source.name.endswith(FILE_SUFFIXES):
                raise InputError(f"source {source.suffix or source.name!r} is not FHIR JSON: "
                                 "give .json, .ndjson (optionally .gz) files or folders of them")
            files.append(source)
        else:
            raise InputError(f"source {source} does not exist: give a file, a folder or a "
                             "FHIR server's base URL")
    return files


def open_input(path: Path):
    """A source file opened for reading bytes, gzip decompressed."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - caller closes


def is_ndjson(path: Path) -> bool:
    return ".ndjson" in path.name or ".jsonl" in path.name  # gzipped or not


def is_streamed(path: Path, size: int | None = None) -> bool:
    """Whether a JSON file is read entry by entry: larger than ``STREAM_BUNDLE_BYTES`` once
    decompressed (gzip's trailer gives that size, modulo 4 GiB). ``size`` is the file's size,
    when the caller has it."""
    if is_ndjson(path):
        return False
    size = path.stat().st_size if size is None else size
    if path.name.endswith(".gz") and size >= 18:
        with open(path, "rb") as handle:
            handle.seek(-4, io.SEEK_END)
            size = max(size, int.from_bytes(handle.read(4), "little"))
    return size > STREAM_BUNDLE_BYTES


def read_file(path: Path) -> Iterator[Entry]:
    if is_ndjson(path):
        yield from _read_ndjson(path)
        return
    if is_streamed(path):
        yield from _stream_bundle(path)
        return
    with open_input(path) as handle:
        blob = handle.read()
    yield from read_json_document(blob, locator_prefix="")


def _read_ndjson(path: Path) -> Iterator[Entry]:
    with open_input(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield from read_ndjson_line(line, number)


def read_ndjson_line(line: bytes, number: int) -> Iterator[Entry]:
    line = line.strip()
    try:
        head = HEAD_DECODER.decode(line)
    except msgspec.DecodeError:
        head = None  # not a JSON object: the full decode below names the fault
    if head is not None and head.resourceType != "Bundle":
        yield Entry(locator=f"line {number}", body=line, head=head)
        return
    try:
        resource = DECODER.decode(line)
    except msgspec.DecodeError as error:
        yield Entry(locator=f"line {number}", error=f"malformed JSON: {error}", raw=line)
        return
    if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
        yield from bundle_entries(resource, locator_prefix=f"line {number} ")
        return
    yield Entry(locator=f"line {number}", resource=resource if isinstance(resource, dict) else None,
                error=None if isinstance(resource, dict) else "line is not a JSON object",
                raw=None if isinstance(resource, dict) else line)


def read_json_document(blob: bytes, *, locator_prefix: str) -> Iterator[Entry]:
    try:
        compact = msgspec.json.format(blob, indent=-1)
        head = HEAD_DECODER.decode(compact)
    except msgspec.DecodeError:
        head = None  # the full decode below names the fault
    if head is not None:
        if head.resourceType != "Bundle":
            yield Entry(locator=f"{locator_prefix}resource", body=compact, head=head)
            return
        entries = _raw_bundle_entries(compact, locator_prefix)
        if entries is not None:
            yield from entries
            return
    try:
        document = DECODER.decode(blob)
    except msgspec.DecodeError as error:
        yield Entry(locator=f"{locator_prefix}document", error=f"malformed JSON: {error}", raw=blob)
        return
    if not isinstance(document, dict):
        yield Entry(locator=f"{locator_prefix}document", error="document is not a JSON object",
                    raw=blob)
        return
    if document.get("resourceType") == "Bundle":
        yield from bundle_entries(document, locator_prefix=locator_prefix)
    else:
        yield Entry(locator=f"{locator_prefix}resource", resource=document)


def _urn_target(full_url: Any, kind: Any, rid: Any) -> str | None:
    """``Type/id`` that a bundle entry's fullUrl stands for; the id may come from a urn:uuid."""
    if not isinstance(full_url, str):
        return None
    if not rid and full_url.startswith("urn:uuid:"):
        rid = full_url[len("urn:uuid:"):]
    return f"{kind}/{rid}" if isinstance(kind, str) and isinstance(rid, str) else None


def _add_urn(mapping: dict[str, str], full_url: Any, kind: Any, rid: Any) -> None:
    target = _urn_target(full_url, kind, rid)
    if target is not None:
        mapping[full_url] = target


def _urn_map(entries: list[Any]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            _add_urn(mapping, entry.get("fullUrl"), resource.get("resourceType"),
                     resource.get("id"))
    return mapping


def bundle_entries(bundle: dict[str, Any], *, locator_prefix: str) -> Iterator[Entry]:
    entries = bundle.get("entry") or []
    bundle_type = bundle.get("type")
    if not isinstance(entries, list):
        yield Entry(locator=f"{locator_prefix}bundle", error="Bundle.entry is not a list",
                    raw=ENCODER.encode(bundle))
        return
    mapping = _urn_map(entries)
    for number, entry in enumerate(entries):
        yield _bundle_entry(entry, number, bundle_type, mapping, locator_prefix)


def _bundle_entry(entry: Any, number: int, bundle_type: Any, mapping: dict[str, str],
                  locator_prefix: str) -> Entry:
    locator = f"{locator_prefix}entry {number}"
    if not isinstance(entry, dict):
        return Entry(locator=locator, error="bundle entry is not a JSON object",
                     raw=ENCODER.encode(entry))
    resource = entry.get("resource")
    return Entry(
        locator=locator,
        resource=resource if isinstance(resource, dict) else None,
        bundle_type=bundle_type if isinstance(bundle_type, str) else None,
        urn_map=mapping,
        error=None if resource is None or isinstance(resource, dict) else
        "entry.resource is not a JSON object",
        raw=None if resource is None or isinstance(resource, dict) else ENCODER.encode(entry),
        **_entry_fields(entry.get("fullUrl"), entry.get("request"), entry.get("response")),
    )


def _entry_fields(full_url: Any, request: Any, response: Any) -> dict[str, Any]:
    """An Entry's fullUrl, request and response members, each only when well formed."""
    request = request if isinstance(request, dict) else {}
    response = response if isinstance(response, dict) else {}
    return {"full_url": full_url if isinstance(full_url, str) else None,
            "method": _text(request.get("method")), "request_url": _text(request.get("url")),
            "last_modified": _text(response.get("lastModified"))}


try:  # the compiled pass over a bundle (``_scan.c``), where the install built it
    from dlt_pipelines.fhir._scan import bundle as _compiled_bundle
except ImportError:
    _compiled_bundle = None


def read_bundle(blob: bytes) -> tuple[str | None, bytes, list[tuple], dict[str, str]] | None:
    """A bundle's entries as the compiled pass reads them, without decoding a resource:
    (bundle type, the bundle's text without whitespace, entries, the urn map). An entry is
    (full_url, start, end, resource_type, id, method, url, last_modified), its resource being
    ``text[start:end]`` (start -1 without one); its members as ``_entry_fields`` reads them.
    None when the extension is not built or the document is not a bundle of that plain shape
    (escapes in those members, a resource that is not an object, text that is not JSON):
    ``read_json_document`` reads those."""
    if _compiled_bundle is None:
        return None
    found = _compiled_bundle(blob)
    if found is not None and found[1]:  # whitespace between tokens: read the compact text
        blob = msgspec.json.format(blob, indent=-1)
        found = _compiled_bundle(blob)
    if found is None:
        return None
    bundle_type, _, entries = found
    mapping: dict[str, str] = {}
    for entry in entries:
        _add_found_urn(mapping, entry)
    return bundle_type, blob, entries, mapping


def _add_found_urn(mapping: dict[str, str], found: tuple) -> None:
    """The urn map's pair of an entry the compiled pass read, when it holds a resource."""
    full_url, start, _end, kind, rid = found[:5]
    if start >= 0:
        _add_urn(mapping, full_url, kind, rid)


def bundle_entry(text: bytes, number: int, found: tuple, bundle_type: str | None,
                 mapping: dict[str, str]) -> Entry:
    """The Entry of one entry ``read_bundle`` found, as ``read_json_document`` makes it."""
    full_url, start, end, _kind, _rid, method, url, modified = found
    body = text[start:end] if start >= 0 else None
    return Entry(locator=f"entry {number}", body=body,
                 head=HEAD_DECODER.decode(body) if body is not None else None,
                 bundle_type=bundle_type, urn_map=mapping, full_url=full_url, method=method,
                 request_url=url, last_modified=modified)


def _text(value: Any) -> str | None:
    """A member that must be a string: None when it is missing, empty or of another type."""
    return value if isinstance(value, str) and value else None


def _raw_bundle_entries(compact: bytes, locator_prefix: str) -> list[Entry] | None:
    """A bundle's entries with their resources' text kept, or None when the bundle's shape needs
    the full decode (an entry or resource that is not an object, for example)."""
    try:
        bundle = _BUNDLE_DECODER.decode(compact)
        heads = [HEAD_DECODER.decode(entry.resource) if len(entry.resource) else None
                 for entry in bundle.entry or ()]
    except msgspec.DecodeError:
        return None
    mapping = _raw_urn_map(bundle.entry or (), heads)
    bundle_type = bundle.type if isinstance(bundle.type, str) else None
    return [_raw_entry(entry, head, number, bundle_type, mapping, locator_prefix)
            for number, (entry, head) in enumerate(zip(bundle.entry or (), heads))]


def _raw_urn_map(entries, heads) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for entry, head in zip(entries, heads):
        if head is not None:
            _add_urn(mapping, entry.fullUrl, head.resourceType, head.id)
    return mapping


def _raw_entry(entry: _RawEntry, head: Head | None, number: int, bundle_type: str | None,
               mapping: dict[str, str], locator_prefix: str) -> Entry:
    return Entry(
        locator=f"{locator_prefix}entry {number}",
        body=bytes(entry.resource) if len(entry.resource) else None, head=head,
        bundle_type=bundle_type, urn_map=mapping,
        **_entry_fields(entry.fullUrl, entry.request, entry.response),
    )


def _stream_bundle(path: Path) -> Iterator[Entry]:
    """A large bundle, entry by entry: a first pass collects fullUrls, a second yields entries.
    The compiled pass cuts the file into its entries and reads each (``_stream_entries``) where
    it is built; ijson reads it otherwise."""
    if _compiled_entry is not None:
        yield from _stream_entries(path)
        return
    import ijson

    with open_input(path) as handle:
        bundle_type = None
        mapping: dict[str, str] = {}
        for prefix, event, value in ijson.parse(handle, use_float=False):
            if prefix == "type" and event == "string":
                bundle_type = value
            elif prefix == "entry.item" and event == "start_map":
                full_url = kind = rid = None
            elif prefix == "entry.item.fullUrl":
                full_url = value
            elif prefix == "entry.item.resource.resourceType":
                kind = value
            elif prefix == "entry.item.resource.id":
                rid = value
            elif prefix == "entry.item" and event == "end_map":
                _add_urn(mapping, full_url, kind, rid)
    with open_input(path) as handle:
        for number, entry in enumerate(ijson.items(handle, "entry.item", use_float=False)):
            # ijson gives Decimals already; re-encode through msgspec for one consistent shape.
            text = ENCODER.encode(entry)
            try:
                raw = _ENTRY_DECODER.decode(text)
                head = HEAD_DECODER.decode(raw.resource) if len(raw.resource) else None
            except msgspec.DecodeError:
                yield _bundle_entry(DECODER.decode(text), number, bundle_type, mapping, "")
                continue
            yield _raw_entry(raw, head, number, bundle_type, mapping, "")
    logger.info("streamed a %d MB bundle entry by entry", path.stat().st_size >> 20)


try:  # the compiled pass over one entry, and the cutter of a stream into JSON values
    from dlt_pipelines.fhir._scan import entry as _compiled_entry
    from dlt_pipelines.fhir._scan import value_end as _value_end
except ImportError:
    _compiled_entry = _value_end = None

_CHUNK_BYTES = 4 << 20
_SPACE = re.compile(rb"[ \t\r\n]*")


class _Stream:
    """A bundle's text read a chunk at a time: ``values`` yields its top-level members as (key,
    value text), the elements of ``entry`` one at a time as ("entry", element text). Memory holds
    a chunk and the element being read, never the bundle."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self._buffer = b""
        self._at = 0  # where reading goes on in the buffer
        self._dropped = 0  # bytes of the file before the buffer

    def _more(self) -> bool:
        chunk = self._handle.read(_CHUNK_BYTES)
        if not chunk:
            return False
        self._buffer = self._buffer[self._at:] + chunk
        self._dropped += self._at
        self._at = 0
        return True

    def _fault(self, what: str) -> InputError:
        return InputError(f"the bundle is not valid JSON near byte {self._dropped + self._at} "
                          f"({what}): fix the file, or give it as NDJSON")

    def _skip(self, *expected: bytes) -> bytes:
        """The next byte after whitespace, which must be one of ``expected``; consumed."""
        found = self._peek()
        if found not in expected:
            raise self._fault(f"{found!r} where {b' or '.join(expected)!r} belongs")
        self._at += 1
        return found

    def _peek(self) -> bytes:
        """The next byte after whitespace, not consumed."""
        while True:
            self._at = _SPACE.match(self._buffer, self._at).end()
            if self._at < len(self._buffer):
                return self._buffer[self._at:self._at + 1]
            if not self._more():
                raise self._fault("the file ends early")

    def _value(self) -> bytes:
        while True:
            end = _value_end(self._buffer, self._at)
            if end >= 0:
                text = self._buffer[self._at:end]
                self._at = end
                return text.strip()
            if end == -2:
                raise self._fault("no JSON value")
            if not self._more():
                raise self._fault("the file ends early")

    def values(self) -> Iterator[tuple[str, bytes]]:
        self._skip(b"{")
        if self._peek() == b"}":
            return
        while True:
            key = DECODER.decode(self._value())
            self._skip(b":")
            if key == "entry" and self._peek() == b"[":
                self._skip(b"[")
                if self._peek() == b"]":
                    self._skip(b"]")
                else:
                    while True:
                        yield "entry", self._value()
                        if self._skip(b",", b"]") == b"]":
                            break
            else:
                yield key, self._value()
            if self._skip(b",", b"}") == b"}":
                return


def _stream_entries(path: Path) -> Iterator[Entry]:
    """A large bundle, entry by entry, read by the compiled pass: the first reading gathers the
    urn map and the bundle's type, the second yields the entries, their resources compacted as
    ``read_json_document`` compacts a whole bundle."""
    bundle_type: str | None = None
    mapping: dict[str, str] = {}
    with open_input(path) as handle:
        for key, text in _Stream(handle).values():
            if key == "type":
                value = DECODER.decode(text)
                bundle_type = value if isinstance(value, str) else None
            elif key == "entry":
                found = _compiled_entry(text)
                if found is not None:
                    _add_found_urn(mapping, found[1])
                else:
                    with contextlib.suppress(msgspec.DecodeError):  # quarantined below
                        mapping.update(_urn_map([DECODER.decode(text)]))
    with open_input(path) as handle:
        number = 0
        for key, text in _Stream(handle).values():
            if key != "entry":
                continue
            found = _compiled_entry(text)
            if found is not None and found[0]:  # whitespace between tokens: the compact text
                text = msgspec.json.format(text, indent=-1)
                found = _compiled_entry(text)
            if found is not None:
                yield bundle_entry(text, number, found[1], bundle_type, mapping)
            else:
                try:
                    yield _bundle_entry(DECODER.decode(text), number, bundle_type, mapping, "")
                except msgspec.DecodeError as error:
                    yield Entry(locator=f"entry {number}", error=f"malformed JSON: {error}",
                                raw=text)
            number += 1
    logger.info("streamed a %d MB bundle entry by entry", path.stat().st_size >> 20)


def decode_bytes(blob: bytes) -> Iterator[Entry]:
    """Entries from bytes a server sent: a Bundle, a resource, or NDJSON lines."""
    stripped = blob.lstrip()
    if stripped.startswith(b"{") and b"\n{" not in stripped.rstrip():
        yield from read_json_document(blob, locator_prefix="")
        return
    for number, line in enumerate(io.BytesIO(blob), start=1):
        if line.strip():
            yield from read_ndjson_line(line, number)
