"""Live FHIR servers in the ingest: REST search pages through the same transform as files.

``server_resources(lake, urls)`` gives ``pipeline.ingest`` one dlt resource per server and FHIR
type (``extra_resources``). Each yields the server's searchset pages (``rest.fhir_rest_source``,
incremental by ``_lastUpdated``) into a transformer that splits a page into entries from its raw
bytes, runs them through the ingest's ``Transformer`` and hands on bronze rows and quarantine
rows, tables named as the file ingest names them. The marks live in the ingest pipeline's state,
which the ingest keeps encrypted in the lake between runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import dlt
import pyarrow as pa

from dlt_pipelines.fhir import bronze
from dlt_pipelines.fhir.pipeline import _collect
from dlt_pipelines.fhir.rest import source_from_settings
from dlt_pipelines.fhir.sources import read_json_document
from dlt_pipelines.fhir.transform import Transformer

logger = logging.getLogger(__name__)


def server_label(base_url: str) -> str:
    """A stable, short name for a server: a digest of its base URL, not the URL itself."""
    return hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:12]


def server_resources(
    lake: Any, urls: Sequence[str], *, load_id: str | None = None,
    loaded_at: dt.datetime | None = None,
) -> list[Any]:
    """One dlt resource per server and type, yielding bronze and quarantine tables."""
    load_id = load_id or (
        dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    )
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
        result = _collect(transformer, entries, lake, source_label, load_id, loaded_at)
        if result.quarantine:
            yield dlt.mark.with_table_name(
                pa.Table.from_pylist(result.quarantine, schema=bronze.QUARANTINE_SCHEMA),
                "quarantine")
        for kind, table in result.tables.items():
            yield dlt.mark.with_table_name(table, kind)

    return to_bronze
