"""Turn the attachments of DocumentReference and DiagnosticReport resources into note text.

Each attachment gets one status. Processed: ``ok`` (plain text in its declared charset, UTF-8 when
none is declared), ``html_stripped`` (``text/html`` reduced to its text), ``bytes_replaced`` (bytes
invalid in the declared charset were replaced by U+FFFD; offsets refer to the replaced text). Not
processed, with the reason kept: ``empty``, ``too_large`` (over ``MAX_NOTE_BYTES``), ``pdf``,
``url_only`` (no inline data), ``no_data``, ``unsupported_type``, ``unknown_charset``,
``bad_base64`` and ``unreadable`` (the protected value does not open: the patient was erased).
No attachment raises: a bad one is counted under its status.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from infra.errors import CarelakeError

logger = logging.getLogger(__name__)

MAX_NOTE_BYTES = 1_000_000
PROCESSED = ("ok", "html_stripped", "bytes_replaced")
NOT_PROCESSED = (
    "empty", "too_large", "pdf", "url_only", "no_data", "unsupported_type", "unknown_charset",
    "bad_base64", "unreadable",
)
NOTE_TYPES = ("DocumentReference", "DiagnosticReport")

OpenValue = Callable[[str], str]


@dataclass(frozen=True)
class Note:
    """One attachment of one resource. ``text`` is set only when the status is a processed one."""

    document_id: str
    resource_type: str
    attachment_index: int
    patient_key: str | None
    encounter_id: str | None
    note_date: str | None
    content_type: str
    status: str
    reason: str
    text: str | None = None

    @property
    def processed(self) -> bool:
        return self.status in PROCESSED


class _TextOfHtml(HTMLParser):
    _SKIPPED = {"script", "style", "head", "title"}
    _BLOCKS = {"p", "div", "br", "li", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5",
               "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _media_type(content_type: str) -> tuple[str, str | None]:
    parts = [part.strip() for part in content_type.split(";")]
    charset = None
    for parameter in parts[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return parts[0].lower(), charset


def decode_attachment(
    content_type: str, data: str | None, *, has_url: bool
) -> tuple[str, str, str | None]:
    """``(status, reason, text)`` of one attachment whose inline data is ``data`` (base64)."""
    media_type, charset = _media_type(content_type or "")
    if media_type == "application/pdf":
        return "pdf", "PDF attachments are not processed (no text extraction)", None
    if data is None:
        if has_url:
            reason = "the attachment has a url but no inline data; urls are not fetched"
            return "url_only", reason, None
        return "no_data", "the attachment has neither inline data nor a url", None
    if media_type not in {"text/plain", "text/html", ""}:
        return "unsupported_type", f"content type {media_type} is not text/plain or text/html", None
    if len(data) * 3 // 4 > MAX_NOTE_BYTES + 2:
        return "too_large", f"the note is over {MAX_NOTE_BYTES} bytes", None
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "bad_base64", "the inline data is not valid base64", None
    if len(raw) > MAX_NOTE_BYTES:
        return "too_large", f"the note is over {MAX_NOTE_BYTES} bytes", None

    encoding = charset or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        return "unknown_charset", f"charset {encoding} is not known to Python", None
    if encoding.replace("-", "").replace("_", "") == "utf8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    status, reason = "ok", ""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        text = raw.decode(encoding, errors="replace")
        status, reason = "bytes_replaced", f"bytes invalid in {encoding} were replaced by U+FFFD"

    if media_type == "text/html":
        text = html_to_text(text)
        if status == "ok":
            status, reason = "html_stripped", "HTML markup was removed; offsets refer to the text"
    if not text.strip():
        return "empty", "the note has no text", None
    return status, reason, text


def _reference_id(reference: Any) -> str | None:
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        return reference["reference"].rsplit("/", 1)[-1]
    return None


def _attachments(resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource.get("resourceType") == "DocumentReference":
        return [item.get("attachment") or {} for item in resource.get("content") or []]
    if resource.get("resourceType") == "DiagnosticReport":
        return list(resource.get("presentedForm") or [])
    return []


def notes_of(
    resource: dict[str, Any], *, patient_key: str | None, open_value: OpenValue | None = None
) -> Iterator[Note]:
    """Every attachment of one resource as a Note; ``open_value`` turns a stored data value into
    its base64 text (the lake's token opener), identity when None."""
    resource_type = resource.get("resourceType", "")
    if resource_type == "DocumentReference":
        encounters = (resource.get("context") or {}).get("encounter") or [None]
        encounter_id, note_date = _reference_id(encounters[0]), resource.get("date")
    else:
        encounter_id = _reference_id(resource.get("encounter"))
        note_date = resource.get("effectiveDateTime") or resource.get("issued")
    if patient_key is None:
        patient_key = _reference_id(resource.get("subject"))

    for index, attachment in enumerate(_attachments(resource)):
        content_type = attachment.get("contentType") or ""
        data = attachment.get("data")
        try:
            if data is not None and open_value is not None:
                data = open_value(data)
        except CarelakeError as error:
            status, reason, text = "unreadable", f"the protected data did not open: {error}", None
        else:
            status, reason, text = decode_attachment(
                content_type, data, has_url=bool(attachment.get("url"))
            )
        yield Note(
            document_id=str(resource.get("id", "")),
            resource_type=resource_type,
            attachment_index=index,
            patient_key=patient_key,
            encounter_id=encounter_id,
            note_date=note_date,
            content_type=content_type,
            status=status,
            reason=reason,
            text=text,
        )
