"""The two baselines the ingest is measured against, on the same scaled input in the same run.

- ``orjson_parse``: read every bundle and NDJSON line and ``orjson.loads`` it, nothing else. No
  ingest can be faster than parsing its input: this is the limit.
- ``naive_dlt``: the common choice, plain dicts through dlt (``max_table_nesting=0``, one table per
  resource type) into dlt's DuckDB destination, in a private scratch folder. No validation, no
  pseudonymization, no encryption, no Iceberg.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)


def fhir_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix in {".json", ".ndjson"})


def _resources(files: list[Path]) -> Iterator[dict[str, Any]]:
    for path in files:
        if path.suffix == ".ndjson":
            with path.open("rb") as source:
                for line in source:
                    if line.strip():
                        yield orjson.loads(line)
        else:
            bundle = orjson.loads(path.read_bytes())
            for entry in bundle.get("entry") or []:
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    yield entry["resource"]


def orjson_parse(fhir: str, scratch: str) -> dict[str, int]:
    """Parse everything under ``fhir`` with orjson; returns resources and bytes read."""
    files = fhir_files(Path(fhir))
    resources = sum(1 for _ in _resources(files))
    size = sum(path.stat().st_size for path in files)
    logger.info("orjson baseline: %d resources, %d bytes", resources, size)
    return {"resources": resources, "bytes": size, "files": len(files)}


def naive_dlt(fhir: str, scratch: str) -> dict[str, int]:
    """Load everything under ``fhir`` as dicts with dlt into DuckDB under ``scratch``."""
    import dlt

    files, scratch_dir = fhir_files(Path(fhir)), Path(scratch)
    size = sum(path.stat().st_size for path in files)
    counted = {"resources": 0}

    def rows() -> Iterator[dict[str, Any]]:
        for resource in _resources(files):
            counted["resources"] += 1
            yield resource

    resource = dlt.resource(
        rows(), name="fhir", max_table_nesting=0,
        table_name=lambda item: str(item.get("resourceType", "unknown")).lower(),
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_naive_dlt", pipelines_dir=str(scratch_dir / "dlt"),
        destination=dlt.destinations.duckdb(str(scratch_dir / "naive.duckdb")), dataset_name="fhir",
    )
    pipeline.run(resource)
    with pipeline.sql_client() as client:
        tables = [row[0] for row in client.execute_sql(
            "select table_name from information_schema.tables where table_schema = 'fhir' "
            "and table_name not like '_dlt%'"
        )]
        loaded = sum(
            client.execute_sql(f'select count(*) from "{table}"')[0][0] for table in tables
        )
    logger.info("naive dlt baseline: %d resources into %d tables", loaded, len(tables))
    return {"resources": loaded, "bytes": size, "files": len(files), "tables": len(tables)}
