"""The Bulk Data ``$export`` client: kick-off, status polling, streamed downloads, clean-up.

The flow follows the FHIR Bulk Data Access specification:

1. kick-off: ``GET [base]/$export``, ``[base]/Patient/$export`` or ``[base]/Group/[id]/$export``
   with ``Prefer: respond-async`` and ``Accept: application/fhir+json``, optionally ``_type`` and
   ``_since``; the server answers 202 with the status URL in ``Content-Location``;
2. polling the status URL: 202 while in progress (waiting as ``Retry-After`` says, logging
   ``X-Progress``), 200 with the completion manifest, or 4xx/5xx with an OperationOutcome;
3. downloading every output file and error file, streamed: each NDJSON line is yielded as the
   bytes the server sent and nothing is held whole in memory or written to disk;
4. ``DELETE`` of the status URL once every file has been read.

A bearer token goes with downloads only when the manifest says ``requiresAccessToken`` and the
file lives on the base URL's host. Error files (OperationOutcome NDJSON) are yielded as records
of kind "error" and counted by issue code; their text is never logged. The files of the manifest's
``deleted`` array (Bundles whose entries ``DELETE`` resources removed since ``_since``) are
yielded as records of kind "deleted" for the ingest to apply.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import dlt
import httpx
import msgspec

from dlt_pipelines.fhir.auth import auth_from_config, open_client
from dlt_pipelines.fhir.rest import type_list
from dlt_pipelines.fhir.transport import RetryPolicy, retry_after_seconds, send
from infra.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
LEVELS = {"system", "patient", "group"}
SETTING = "sources.fhir_bulk.max_retries"


@dataclass(frozen=True)
class ExportRecord:
    """One NDJSON line of an export file: kind "resource", "error" or "deleted"."""

    resource_type: str
    file_number: int
    line_number: int
    body: bytes
    kind: str = "resource"

    @property
    def is_error(self) -> bool:
        return self.kind == "error"

    def as_item(self) -> dict[str, Any]:
        return {
            "resource_type": self.resource_type,
            "kind": self.kind,
            "file_number": self.file_number,
            "line_number": self.line_number,
            "body": self.body,
        }


@dataclass
class ExportReport:
    """What an export run did: polls, files, lines per type, error lines and issue codes."""

    status_path: str = ""
    transaction_time: str | None = None
    polls: int = 0
    files: int = 0
    lines: dict[str, int] = field(default_factory=dict)
    error_lines: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    # DELETE entries in the Bundles of the manifest's "deleted" files.
    deletions: int = 0
    status_deleted: bool = False

    def counts(self) -> dict[str, Any]:
        return {
            "polls": self.polls, "files": self.files, "lines": dict(self.lines),
            "resources": sum(self.lines.values()), "error_lines": self.error_lines,
            "error_codes": dict(self.error_codes), "deletions": self.deletions,
        }


class _Output(msgspec.Struct):
    type: str
    url: str
    count: int | None = None


class _Manifest(msgspec.Struct):
    transactionTime: str  # noqa: N815 - the specification's names
    request: str = ""
    requiresAccessToken: bool = False  # noqa: N815
    output: list[_Output] = []
    error: list[_Output] = []
    deleted: list[_Output] = []


class _Issue(msgspec.Struct):
    severity: str = ""
    code: str = ""
    diagnostics: str = ""


class _Outcome(msgspec.Struct):
    resourceType: str = ""  # noqa: N815
    issue: list[_Issue] = []


class _Request(msgspec.Struct):
    method: str = ""


class _DeletionEntry(msgspec.Struct):
    request: _Request | None = None


class _DeletionBundle(msgspec.Struct):
    entry: list[_DeletionEntry] = []


# Whatever in a server's diagnostics looks like an identifier is masked before it is shown.
_REFERENCE = re.compile(r"\b([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b")
_NUMBER = re.compile(r"\d{4,}")


def scrub(text: str, *, limit: int = 200) -> str:
    """Server text with references, UUIDs and long numbers masked, cut to ``limit`` characters."""
    text = _REFERENCE.sub(r"\1/*", text)
    text = _UUID.sub("*", text)
    text = _NUMBER.sub("*", text)
    return text[:limit]


def outcome_summary(body: bytes) -> str:
    """``severity code: diagnostics`` of each issue of an OperationOutcome, scrubbed."""
    try:
        outcome = msgspec.json.decode(body, type=_Outcome)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "no OperationOutcome in the answer"
    if outcome.resourceType != "OperationOutcome" or not outcome.issue:
        return "no OperationOutcome in the answer"
    return "; ".join(
        f"{issue.severity} {issue.code}: {scrub(issue.diagnostics)}".strip()
        for issue in outcome.issue[:3]
    )


def kick_off_url(
    base_url: str, *, level: str = "system", group_id: str | None = None,
    types: Sequence[str] | None = None, since: str | None = None,
) -> str:
    """The kick-off URL of a system, Patient or Group level export with ``_type``/``_since``."""
    if level not in LEVELS:
        raise ValueError(f"export level must be one of {sorted(LEVELS)}, not {level!r}")
    base = base_url.rstrip("/")
    if level == "group":
        if not group_id:
            raise ValueError("a group level export needs the group's id")
        path = f"{base}/Group/{quote(group_id, safe='')}/$export"
    else:
        path = f"{base}/Patient/$export" if level == "patient" else f"{base}/$export"
    params = {"_outputFormat": FHIR_NDJSON}
    if types:
        params["_type"] = ",".join(types)
    if since:
        params["_since"] = since
    return f"{path}?{urlencode(params, safe=':,/')}"


def kick_off(client: httpx.Client, url: str, *, policy: RetryPolicy) -> str:
    """Start an export; return the absolute status URL from ``Content-Location``."""
    headers = {"Prefer": "respond-async", "Accept": FHIR_JSON}
    response = send(client, "GET", url, policy=policy, headers=headers, setting=SETTING)
    where = f"$export kick-off at {urlsplit(url).path}"
    if response.status_code != 202:
        raise SourceError(
            f"{where} answered HTTP {response.status_code} ({outcome_summary(response.content)}):"
            " check that the server offers Bulk Data export at this level and the credentials"
        )
    location = response.headers.get("Content-Location")
    if not location:
        raise SourceError(f"{where} accepted the export but named no Content-Location: the "
                          "server does not follow the Bulk Data specification")
    return urljoin(url, location)


def _issue_codes(body: bytes) -> list[str]:
    try:
        outcome = msgspec.json.decode(body, type=_Outcome)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    return [issue.code for issue in outcome.issue] if outcome.resourceType else []


def wait_for_manifest(
    client: httpx.Client, status_url: str, *, policy: RetryPolicy, report: ExportReport,
    poll_interval_s: float = 10.0, max_wait_s: float = 6 * 3600.0,
    clock: Callable[[], float] = time.monotonic,
) -> _Manifest:
    """Poll until the manifest is ready; a failed or cancelled export raises ``SourceError``.

    A 5xx whose OperationOutcome has only ``transient`` issues (or no OperationOutcome) is a
    failed poll, retried with back-off; any other 4xx or 5xx is the export's own failure.
    """
    where = f"$export status at {urlsplit(status_url).path}"
    started = clock()
    failed_polls = 0
    while True:
        response = send(client, "GET", status_url, policy=policy,
                        headers={"Accept": "application/json"}, setting=SETTING,
                        retry_status=frozenset({429}))
        report.polls += 1
        status = response.status_code
        if status == 200:
            try:
                return msgspec.json.decode(response.content, type=_Manifest)
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise SourceError(
                    f"{where} answered 200 without a valid completion manifest: the server "
                    "does not follow the Bulk Data specification"
                ) from None
        codes = _issue_codes(response.content)
        transient = status >= 500 and all(code == "transient" for code in codes)
        if status != 202 and not (transient and failed_polls < policy.max_retries):
            raise SourceError(
                f"{where}: the export failed or was cancelled (HTTP {status}: "
                f"{outcome_summary(response.content)}); start a new export"
            )

        if status == 202:
            told = retry_after_seconds(response.headers.get("Retry-After"))
            wait = min(told if told is not None else poll_interval_s, policy.max_retry_after_s)
            progress = scrub(response.headers.get("X-Progress", ""), limit=60) or "no progress"
        else:
            wait = policy.backoff(failed_polls)
            failed_polls += 1
            progress = f"status poll failed with HTTP {status}, retry {failed_polls}"
        if clock() - started + wait > max_wait_s:
            raise SourceError(f"{where}: still in progress after {max_wait_s:.0f} s; raise "
                              "sources.fhir_bulk.max_wait_s or export fewer types")
        logger.info("export in progress (%s); next poll in %.1f s", progress, wait)
        policy.sleep(wait)


def _lines(response: httpx.Response) -> Iterator[bytes]:
    """The non-blank lines of a streamed body; a line split across chunks is joined once."""
    pending: list[bytes] = []
    for chunk in response.iter_bytes():
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.append(chunk)
            continue
        pending.append(parts[0])
        for line in (b"".join(pending), *parts[1:-1]):
            line = line.rstrip(b"\r")
            if line.strip():
                yield line
        pending = [parts[-1]]
    last = b"".join(pending).rstrip(b"\r")
    if last.strip():
        yield last


def iter_file(
    client: httpx.Client, output: _Output, *, number: int, base_url: str,
    requires_token: bool, policy: RetryPolicy, kind: str = "resource",
) -> Iterator[ExportRecord]:
    """Stream one output file, one record per NDJSON line."""
    url = urljoin(base_url.rstrip("/") + "/", output.url)
    same_host = urlsplit(url).netloc == urlsplit(base_url).netloc
    if requires_token and not same_host:
        raise SourceError(
            f"export file {number} lives on another host than the FHIR server and needs our "
            "access token; carelake does not send tokens off-host: ask the server to serve "
            "files from its own host or without requiresAccessToken"
        )
    auth = httpx.USE_CLIENT_DEFAULT if requires_token else None
    response = send(client, "GET", url, policy=policy, headers={"Accept": FHIR_NDJSON},
                    stream=True, auth=auth, setting=SETTING)
    try:
        if response.status_code != 200:
            raise SourceError(
                f"export file {number} ({output.type}, {urlsplit(url).path}) answered HTTP "
                f"{response.status_code}: the files may have expired; start a new export"
            )
        for line_number, line in enumerate(_lines(response), start=1):
            yield ExportRecord(output.type, number, line_number, line, kind)
    except httpx.TransportError as error:
        raise SourceError(
            f"export file {number} ({output.type}) broke off while downloading "
            f"({type(error).__name__}): run the export again"
        ) from None
    finally:
        response.close()


def _count_error(record: ExportRecord, report: ExportReport) -> None:
    report.error_lines += 1
    try:
        outcome = msgspec.json.decode(record.body, type=_Outcome)
        codes = [issue.code or "unknown" for issue in outcome.issue] or ["unknown"]
    except (msgspec.DecodeError, msgspec.ValidationError):
        codes = ["unreadable"]
    for code in codes:
        report.error_codes[code] = report.error_codes.get(code, 0) + 1


def _count_deletions(record: ExportRecord, report: ExportReport) -> None:
    try:
        bundle = msgspec.json.decode(record.body, type=_DeletionBundle)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    report.deletions += sum(
        1 for entry in bundle.entry
        if entry.request is not None and entry.request.method.upper() == "DELETE"
    )


def run_export(
    base_url: str,
    *,
    auth: httpx.Auth | None,
    level: str = "system",
    group_id: str | None = None,
    types: Sequence[str] | None = None,
    since: str | None = None,
    policy: RetryPolicy | None = None,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    timeout_s: float = 60.0,
    poll_interval_s: float = 10.0,
    max_wait_s: float = 6 * 3600.0,
    report: ExportReport | None = None,
    client: httpx.Client | None = None,
) -> Iterator[ExportRecord]:
    """Run one export end to end and yield every line of every output, then of every error file.

    The status URL is deleted after the last file was read; if the caller stops early or a
    download fails, it is deleted too, and the files are left for the server to expire.
    """
    policy = policy or RetryPolicy()
    report = report if report is not None else ExportReport()
    own_client = client is None
    client = client or open_client(
        auth=auth, verify_tls=verify_tls, ca_bundle=ca_bundle, timeout_s=timeout_s
    )
    try:
        url = kick_off_url(base_url, level=level, group_id=group_id, types=types, since=since)
        status_url = kick_off(client, url, policy=policy)
        report.status_path = urlsplit(status_url).path
        logger.info("export started at %s level (%s)", level,
                    f"{len(types)} type(s)" if types else "all types")
        try:
            manifest = wait_for_manifest(client, status_url, policy=policy, report=report,
                                         poll_interval_s=poll_interval_s, max_wait_s=max_wait_s)
            report.transaction_time = manifest.transactionTime
            yield from _download(client, manifest, base_url=base_url, policy=policy,
                                 report=report)
        finally:
            _delete(client, status_url, policy=policy, report=report)
        logger.info(
            "export complete: %d file(s), %d resource line(s) of %d type(s), %d deletion(s), "
            "%d error line(s), %d poll(s)", report.files, sum(report.lines.values()),
            len(report.lines), report.deletions, report.error_lines, report.polls,
        )
    finally:
        if own_client:
            client.close()


def _download(
    client: httpx.Client, manifest: _Manifest, *, base_url: str, policy: RetryPolicy,
    report: ExportReport,
) -> Iterator[ExportRecord]:
    files = [(output, "resource") for output in manifest.output]
    files += [(output, "deleted") for output in manifest.deleted]
    files += [(output, "error") for output in manifest.error]
    for number, (output, kind) in enumerate(files, start=1):
        lines = 0
        for record in iter_file(client, output, number=number, base_url=base_url,
                                requires_token=manifest.requiresAccessToken, policy=policy,
                                kind=kind):
            lines += 1
            if kind == "error":
                _count_error(record, report)
            elif kind == "deleted":
                _count_deletions(record, report)
            else:
                report.lines[record.resource_type] = report.lines.get(record.resource_type, 0) + 1
            yield record
        report.files += 1
        if output.count is not None and output.count != lines:
            logger.warning("export file %d (%s): manifest count %d, file held %d line(s)",
                           number, output.type, output.count, lines)


def _delete(client: httpx.Client, status_url: str, *, policy: RetryPolicy,
            report: ExportReport) -> None:
    try:
        response = send(client, "DELETE", status_url, policy=policy, setting=SETTING)
    except SourceError as error:
        logger.warning("could not delete the export status URL: %s", error)
        return
    report.status_deleted = response.status_code in (200, 202, 204)
    if not report.status_deleted:
        logger.warning("DELETE of the export status URL answered HTTP %d", response.status_code)


def bulk_export_source(
    base_url: str,
    *,
    auth: httpx.Auth | None,
    level: str = "system",
    group_id: str | None = None,
    types: Sequence[str] | None = None,
    report: ExportReport | None = None,
    name: str = "fhir_bulk",
    **options: Any,
) -> Any:
    """A dlt source with one resource, ``export_lines``, yielding every line of one export.

    The resource keeps ``since`` (the last complete export's ``transactionTime``) in dlt state
    and passes it as ``_since`` next time; it is written only after every file was read.
    """
    report = report if report is not None else ExportReport()

    @dlt.resource(name="export_lines", write_disposition="append",
                  columns={"body": {"data_type": "binary"}})
    def export_lines() -> Iterator[dict[str, Any]]:
        state = dlt.current.resource_state()
        for record in run_export(base_url, auth=auth, level=level, group_id=group_id,
                                 types=types, since=state.get("since"), report=report,
                                 **options):
            yield record.as_item()
        state["since"] = report.transaction_time

    @dlt.source(name=name, max_table_nesting=0)
    def fhir_bulk() -> Any:
        return export_lines

    return fhir_bulk()


def source_from_settings(settings: Any, *, report: ExportReport | None = None) -> Any:
    """``bulk_export_source`` configured from ``[sources.fhir_bulk]`` and dlt's secrets."""
    options = settings.section("sources.fhir_bulk")
    base_url = str(options.get("base_url") or "")
    if not base_url:
        raise ConfigError(
            "sources.fhir_bulk.base_url is empty: set it to the Bulk Data server's FHIR root, "
            "for example CARELAKE_SOURCES__FHIR_BULK__BASE_URL=https://bulk.example.org/fhir"
        )
    level = str(options.get("level", "system"))
    if level not in LEVELS:
        raise ConfigError(f"sources.fhir_bulk.level is {level!r}: use system, patient or group")
    group_id = str(options.get("group_id") or "") or None
    if level == "group" and not group_id:
        raise ConfigError("sources.fhir_bulk.level is group: set sources.fhir_bulk.group_id")
    return bulk_export_source(
        base_url,
        auth=auth_from_config(options, section="fhir_bulk", base_url=base_url),
        level=level,
        group_id=group_id,
        types=type_list(options.get("types"), setting="sources.fhir_bulk.types") or None,
        report=report,
        policy=RetryPolicy(max_retries=int(options.get("max_retries", 5))),
        verify_tls=bool(options.get("verify_tls", True)),
        ca_bundle=str(options.get("ca_bundle") or "") or None,
        timeout_s=float(options.get("timeout_s", 60)),
        poll_interval_s=float(options.get("poll_interval_s", 10)),
        max_wait_s=float(options.get("max_wait_s", 6 * 3600)),
    )
