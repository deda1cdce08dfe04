"""Live FHIR servers in the ingest: REST pages and Bulk Data lines through the file transform.

``server_resources(lake, urls)`` gives ``pipeline.ingest`` one dlt resource per server and FHIR
type (``extra_resources``). Each yields the server's searchset pages (``rest.fhir_rest_source``,
incremental by ``_lastUpdated``) into a transformer that splits a page into entries from its raw
bytes, runs them through the ingest's ``Transformer`` and hands on bronze rows and quarantine
rows, tables named as the file ingest names them.

``bulk_resources(lake)`` does the same for one ``$export`` of ``[sources.fhir_bulk]``, batching
NDJSON lines, applying the DELETE entries of its "deleted" files, and remembering the export's
``transactionTime`` as the next ``_since``.

The marks live in the ingest pipeline's state, which the ingest keeps encrypted in the lake
between runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import dlt
import pyarrow as pa

from dlt_pipelines.fhir import bronze
from dlt_pipelines.fhir.auth import auth_from_config
from dlt_pipelines.fhir.bulk_export import ExportRecord, ExportReport, run_export
from dlt_pipelines.fhir.pipeline import TaskResult, _collect
from dlt_pipelines.fhir.rest import source_from_settings, type_list
from dlt_pipelines.fhir.sources import Entry, read_json_document, read_ndjson_line
from dlt_pipelines.fhir.transform import Transformer
from dlt_pipelines.fhir.transport import RetryPolicy
from infra.errors import ConfigError

# NDJSON lines transformed and handed on together in a Bulk Data load.
BULK_BATCH_LINES = 2000

logger = logging.getLogger(__name__)


def server_label(base_url: str) -> str:
    """A stable, short name for a server: a digest of its base URL, not the URL itself."""
    return hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:12]


def _new_load_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def _tables(result: TaskResult) -> Iterator[Any]:
    if result.quarantine:
        yield dlt.mark.with_table_name(
            pa.Table.from_pylist(result.quarantine, schema=bronze.QUARANTINE_SCHEMA),
            "quarantine")
    for kind, table in result.tables.items():
        yield dlt.mark.with_table_name(table, kind)


def server_resources(
    lake: Any, urls: Sequence[str], *, load_id: str | None = None,
    loaded_at: dt.datetime | None = None,
) -> list[Any]:
    """One dlt resource per server and type, yielding bronze and quarantine tables."""
    load_id = load_id or _new_load_id()
    loaded_at = loaded_at or dt.datetime.now(dt.UTC)
    resources: list[Any] = []
    for url in urls:
        label = server_label(url)
        source = source_from_settings(lake.settings, base_url=url, resource_prefix=f"s{label}_")
        for name, pages in source.resources.items():
            to_bronze = _to_bronze(lake, source_label=f"fhir-rest:{label}", load_id=load_id,
                                   loaded_at=loaded_at)
            resources.append(pages | to_bronze.with_name(f"{name}_bronze"))
        logger.info("server %s (%s): %d resource type(s) to search", label,
                    urlsplit(url).hostname, len(source.resources))
    return resources


def _to_bronze(lake: Any, *, source_label: str, load_id: str, loaded_at: dt.datetime) -> Any:
    @dlt.transformer(max_table_nesting=0)
    def to_bronze(page: dict[str, Any]) -> Iterator[Any]:
        transformer = Transformer(lake.patients, index_key=lake.keys.material("index"),
                                  source=source_label, load_id=load_id, loaded_at=loaded_at)
        prefix = f"{page['resource_type']} page {page['page_number']} "
        entries = read_json_document(page["body"], locator_prefix=prefix)
        yield from _tables(_collect(transformer, entries, lake, source_label))

    return to_bronze


def _entries(records: Iterable[ExportRecord]) -> Iterator[Entry]:
    for record in records:
        yield from read_ndjson_line(record.body, record.line_number)


def bulk_resources(
    lake: Any, *, load_id: str | None = None, loaded_at: dt.datetime | None = None,
    report: ExportReport | None = None,
) -> list[Any]:
    """One dlt resource running the export of ``[sources.fhir_bulk]`` into bronze tables."""
    options = lake.settings.section("sources.fhir_bulk")
    base_url = str(options.get("base_url") or "")
    if not base_url:
        raise ConfigError("sources.fhir_bulk.base_url is empty: set it to the Bulk Data "
                          "server's FHIR root (CARELAKE_SOURCES__FHIR_BULK__BASE_URL)")
    load_id = load_id or _new_load_id()
    loaded_at = loaded_at or dt.datetime.now(dt.UTC)
    report = report if report is not None else ExportReport()
    label = server_label(base_url)
    source_label = f"fhir-bulk:{label}"
    export_options = {
        "auth": auth_from_config(options, section="fhir_bulk", base_url=base_url),
        "level": str(options.get("level", "system")),
        "group_id": str(options.get("group_id") or "") or None,
        "types": type_list(options.get("types"), setting="sources.fhir_bulk.types") or None,
        "policy": RetryPolicy(max_retries=int(options.get("max_retries", 5))),
        "verify_tls": bool(options.get("verify_tls", True)),
        "ca_bundle": str(options.get("ca_bundle") or "") or None,
        "timeout_s": float(options.get("timeout_s", 60)),
        "poll_interval_s": float(options.get("poll_interval_s", 10)),
        "max_wait_s": float(options.get("max_wait_s", 6 * 3600)),
    }

    @dlt.resource(name=f"b{label}_export", max_table_nesting=0)
    def export() -> Iterator[Any]:
        state = dlt.current.resource_state()
        transformer = Transformer(lake.patients, index_key=lake.keys.material("index"),
                                  source=source_label, load_id=load_id, loaded_at=loaded_at)
        batch: list[ExportRecord] = []
        for record in run_export(base_url, since=state.get("since"), report=report,
                                 **export_options):
            if record.kind == "error":
                continue  # counted by issue code in the report; not a resource to load
            batch.append(record)
            if len(batch) >= BULK_BATCH_LINES:
                yield from _tables(_collect(transformer, _entries(batch), lake, source_label))
                batch = []
        if batch:
            yield from _tables(_collect(transformer, _entries(batch), lake, source_label))
        state["since"] = report.transaction_time

    return [export]
