"""The live FHIR REST source: search each resource type, page by page, as raw bundle bytes.

Queries are composed with fhirpy's search sets; the transport is httpx, because the ingest needs
each response's bytes exactly as sent (fhirpy's own fetch decodes JSON and turns ``0.700`` into a
float). Links and ``total`` are read with ``msgspec`` from the bytes; the bytes themselves are
passed on untouched.

Paging follows ``Bundle.link[relation=next]`` and stops at a broken next link: one already
followed (a loop), one on a different scheme, host or port than the base URL (never followed, so
a token is not carried off-host), or one the server answers with a 4xx. A broken link and a
``total`` larger than what the pages held are warnings in the ``SearchReport``, not crashes; a
type whose paging broke keeps its old high-water mark so the next load asks again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import dlt
import httpx
import msgspec
from fhirpy import SyncFHIRClient
from fhirpy.base.utils import encode_params

from dlt_pipelines.fhir.auth import auth_from_config, open_client
from dlt_pipelines.fhir.transport import RetryPolicy, safe_url, send
from infra.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)

# Searched when sources.fhir_rest.resource_types is empty: the types carelake's marts and ML
# sidecar read, and those their references point at.
DEFAULT_RESOURCE_TYPES = (
    "Patient", "Encounter", "Condition", "Observation", "Procedure", "MedicationRequest",
    "Immunization", "AllergyIntolerance", "DiagnosticReport", "DocumentReference",
    "ImagingStudy", "Device", "Organization", "Practitioner", "PractitionerRole", "Location",
)


@dataclass(frozen=True)
class Page:
    """One searchset Bundle as the server sent it."""

    resource_type: str
    number: int
    url: str  # the request URL with every query value that could identify a patient masked
    body: bytes
    entries: int  # entries with search.mode "match" (or no mode)
    total: int | None
    last_updated_max: str | None

    def as_item(self) -> dict[str, Any]:
        """The page as a dlt item: plain values, the body as binary."""
        return {
            "resource_type": self.resource_type,
            "page_number": self.number,
            "url": self.url,
            "entries": self.entries,
            "total": self.total,
            "body": self.body,
        }


@dataclass
class TypeReport:
    pages: int = 0
    entries: int = 0
    total: int | None = None
    last_updated_max: str | None = None
    complete: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class SearchReport:
    """What a search run fetched, per resource type, and what went wrong without stopping it."""

    types: dict[str, TypeReport] = field(default_factory=dict)

    @property
    def warning_count(self) -> int:
        return sum(len(report.warnings) for report in self.types.values())

    def counts(self) -> dict[str, Any]:
        """Counts for a run summary: pages, entries and warnings, per type and in all."""
        return {
            "pages": sum(report.pages for report in self.types.values()),
            "entries": sum(report.entries for report in self.types.values()),
            "warnings": self.warning_count,
            "by_type": {
                name: {"pages": report.pages, "entries": report.entries,
                       "warnings": list(report.warnings)}
                for name, report in self.types.items()
            },
        }


class _Meta(msgspec.Struct):
    lastUpdated: str | None = None  # noqa: N815 - FHIR's name


class _Resource(msgspec.Struct):
    meta: _Meta | None = None


class _Search(msgspec.Struct):
    mode: str | None = None


class _Entry(msgspec.Struct):
    resource: _Resource | None = None
    search: _Search | None = None


class _Link(msgspec.Struct):
    relation: str = ""
    url: str = ""


class _Bundle(msgspec.Struct):
    resourceType: str = ""  # noqa: N815
    type: str | None = None
    total: int | None = None
    link: list[_Link] = []
    entry: list[_Entry] = []


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _later(first: str | None, second: str | None) -> str | None:
    if first is None or second is None:
        return first or second
    try:
        return second if _instant(second) > _instant(first) else first
    except (TypeError, ValueError):
        return first


def _page_key(url: str) -> tuple[Any, ...]:
    """A URL compared by origin, path and its set of query parameters, in any order."""
    parts = urlsplit(url)
    return (*_origin(url), parts.path, tuple(sorted(parse_qsl(parts.query, True))))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def search_url(base_url: str, resource_type: str, *, since: str | None, page_size: int) -> str:
    """The first search URL of a type, composed with fhirpy: ``_count`` and ``_lastUpdated=gt``."""
    search = SyncFHIRClient(base_url).resources(resource_type).limit(page_size)
    if since:
        search = search.search(_lastUpdated__gt=since)
    return f"{base_url.rstrip('/')}/{resource_type}?{encode_params(search.params)}"


def _decode_bundle(body: bytes, *, where: str) -> _Bundle:
    try:
        bundle = msgspec.json.decode(body, type=_Bundle)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise SourceError(
            f"{where} answered with something that is not a FHIR Bundle: check that the base "
            "URL points at the FHIR API root"
        ) from None
    if bundle.resourceType != "Bundle":
        raise SourceError(f"{where} answered with a {bundle.resourceType or 'non-FHIR'} "
                          "resource, not a searchset Bundle: check the base URL")
    return bundle


def _raise_for_first_page(response: httpx.Response, *, where: str) -> None:
    status = response.status_code
    if status in (401, 403):
        raise SourceError(
            f"{where} answered HTTP {status}: the server refused our credentials; check "
            "sources.fhir_rest.auth and its secrets (SOURCES__FHIR_REST__TOKEN and the like)"
        )
    raise SourceError(
        f"{where} answered HTTP {status}: check that the server offers this resource type "
        "and that the base URL is the FHIR API root"
    )


def _search_type(
    client: httpx.Client, base_url: str, resource_type: str, *, since: str | None,
    page_size: int, policy: RetryPolicy, report: TypeReport,
) -> Iterator[Page]:
    url = search_url(base_url, resource_type, since=since, page_size=page_size)
    base_origin = _origin(base_url)
    followed: set[tuple[Any, ...]] = set()
    number = 0

    while True:
        where = f"search of {resource_type} (page {number + 1}, {urlsplit(url).path})"
        followed.add(_page_key(url))
        response = send(client, "GET", url, policy=policy)
        if response.status_code != 200:
            if number == 0 or response.status_code in (401, 403):
                _raise_for_first_page(response, where=where)
            report.warnings.append(f"broken next link: HTTP {response.status_code}")
            logger.warning("%s: next link answered HTTP %d; paging stopped", where,
                           response.status_code)
            return

        body = response.content
        bundle = _decode_bundle(body, where=where)
        number += 1
        matches = [entry for entry in bundle.entry
                   if entry.search is None or entry.search.mode in (None, "match")]
        newest = None
        for entry in matches:
            if entry.resource is not None and entry.resource.meta is not None:
                newest = _later(newest, entry.resource.meta.lastUpdated)
        if number == 1:
            report.total = bundle.total
        report.pages += 1
        report.entries += len(matches)
        report.last_updated_max = _later(report.last_updated_max, newest)
        yield Page(resource_type, number, safe_url(url), body, len(matches), bundle.total, newest)

        next_url = next((link.url for link in bundle.link if link.relation == "next"), None)
        if not next_url:
            break
        next_url = urljoin(url, next_url)
        if _origin(next_url) != base_origin:
            report.warnings.append("broken next link: points off the base URL's host")
            logger.warning("%s: next link leaves the base URL's host; not followed", where)
            return
        if _page_key(next_url) in followed:
            report.warnings.append("broken next link: loops back to a page already read")
            logger.warning("%s: next link loops back to a page already read", where)
            return
        url = next_url

    report.complete = True
    if report.total is not None and report.total != report.entries:
        report.warnings.append(
            f"total mismatch: Bundle.total is {report.total}, the pages held {report.entries}"
        )
        logger.warning("search of %s: Bundle.total %d but the pages held %d entries",
                       resource_type, report.total, report.entries)


def iter_search_pages(
    base_url: str,
    resource_types: Sequence[str],
    *,
    auth: httpx.Auth | None,
    since: str | Mapping[str, str | None] | None = None,
    page_size: int = 500,
    policy: RetryPolicy | None = None,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    timeout_s: float = 60.0,
    client: httpx.Client | None = None,
    report: SearchReport | None = None,
) -> Iterator[Page]:
    """Every searchset page of each type, in order; ``since`` asks ``_lastUpdated=gt<since>``.

    ``since`` is one instant for all types or one per type. Fill ``report`` to learn the
    counts, the newest ``meta.lastUpdated`` seen and the warnings of each type.
    """
    policy = policy or RetryPolicy()
    report = report if report is not None else SearchReport()
    own_client = client is None
    client = client or open_client(
        auth=auth, verify_tls=verify_tls, ca_bundle=ca_bundle, timeout_s=timeout_s
    )
    try:
        for resource_type in resource_types:
            type_since = since.get(resource_type) if isinstance(since, Mapping) else since
            type_report = report.types[resource_type] = TypeReport()
            yield from _search_type(
                client, base_url, resource_type, since=type_since, page_size=page_size,
                policy=policy, report=type_report,
            )
            logger.info(
                "searched %s%s: %d page(s), %d entries, %d warning(s)", resource_type,
                " (incremental)" if type_since else "", type_report.pages, type_report.entries,
                len(type_report.warnings),
            )
    finally:
        if own_client:
            client.close()


def fhir_rest_source(
    base_url: str,
    resource_types: Sequence[str],
    *,
    auth: httpx.Auth | None,
    page_size: int = 500,
    policy: RetryPolicy | None = None,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    timeout_s: float = 60.0,
    report: SearchReport | None = None,
    name: str = "fhir_rest",
    resource_prefix: str = "",
) -> Any:
    """A dlt source with one resource per FHIR type, each yielding searchset pages as items.

    Resources are named ``<resource_prefix><type in lower case>``; give each server its own
    prefix when several load in one pipeline, so their marks stay apart.

    Each resource keeps ``last_updated`` (the newest ``meta.lastUpdated`` it has loaded) in
    dlt's resource state and asks ``_lastUpdated=gt<last_updated>`` on the next run. The mark is
    written only after the type's last page was yielded with its paging complete; dlt commits
    it with the extract step that holds those pages, and a run that fails keeps the old mark.
    """
    report = report if report is not None else SearchReport()
    options = {
        "auth": auth, "page_size": page_size, "policy": policy, "verify_tls": verify_tls,
        "ca_bundle": ca_bundle, "timeout_s": timeout_s,
    }

    def pages_of(resource_type: str) -> Any:
        @dlt.resource(
            name=f"{resource_prefix}{resource_type.lower()}",
            write_disposition="append",
            columns={"body": {"data_type": "binary"}},
        )
        def pages() -> Iterator[dict[str, Any]]:
            state = dlt.current.resource_state()
            mark = state.get("last_updated")
            for page in iter_search_pages(
                base_url, [resource_type], since=mark, report=report, **options
            ):
                yield page.as_item()

            type_report = report.types[resource_type]
            if type_report.complete:
                state["last_updated"] = _later(mark, type_report.last_updated_max)
            else:
                logger.warning("search of %s incomplete: high-water mark kept", resource_type)

        return pages

    @dlt.source(name=name, max_table_nesting=0)
    def fhir_rest() -> list[Any]:
        return [pages_of(resource_type) for resource_type in resource_types]

    return fhir_rest()


def type_list(value: Any, *, setting: str) -> list[str]:
    """Resource types from a setting: a TOML list or a comma-separated string."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    types = list(value or [])
    bad = [name for name in types if not (isinstance(name, str) and name[:1].isupper()
                                          and name.isalnum())]
    if bad:
        raise ConfigError(f"{setting} holds {len(bad)} value(s) that are not FHIR resource "
                          "type names: write them as in FHIR, for example Patient, Observation")
    return types


def source_from_settings(
    settings: Any, *, base_url: str | None = None, report: SearchReport | None = None,
    resource_prefix: str = "",
) -> Any:
    """``fhir_rest_source`` configured from ``[sources.fhir_rest]`` and dlt's secrets.

    ``base_url`` (for example one given on the command line) replaces the configured one.
    """
    options = settings.section("sources.fhir_rest")
    base_url = base_url or str(options.get("base_url") or "")
    if not base_url:
        raise ConfigError(
            "sources.fhir_rest.base_url is empty: set it to the FHIR API root, for example "
            "CARELAKE_SOURCES__FHIR_REST__BASE_URL=https://fhir.example.org/r4"
        )
    types = type_list(options.get("resource_types"), setting="sources.fhir_rest.resource_types")
    return fhir_rest_source(
        base_url,
        types or list(DEFAULT_RESOURCE_TYPES),
        auth=auth_from_config(options, section="fhir_rest", base_url=base_url),
        page_size=int(options.get("page_size", 500)),
        policy=RetryPolicy(max_retries=int(options.get("max_retries", 5))),
        verify_tls=bool(options.get("verify_tls", True)),
        ca_bundle=str(options.get("ca_bundle") or "") or None,
        timeout_s=float(options.get("timeout_s", 60)),
        report=report,
        resource_prefix=resource_prefix,
    )
