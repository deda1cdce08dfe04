"""The dbt-duckdb plugin that shows the lake to dbt: one DuckDB view per bronze and ML table.

dbt-duckdb calls ``Plugin.configure_connection`` once for the connection a dbt run uses. The plugin
registers the lake's encrypted filesystem on it, loads the avro, iceberg and httpfs extensions from
their PyPI packages (``INSTALL`` would need the network), and creates ``bronze.<type>`` and
``ml.<table>`` views in DuckDB's in-memory catalog over ``iceberg_scan`` of each table's current
metadata file. With an ``as_of`` timestamp each view reads the snapshot that was current then; a
table that did not exist yet, or an ML table no stage has written, becomes an empty view with the
documented columns, so the marts build either way and say "no rows" rather than fail.

The lake comes from ``bind()`` when carelake runs dbt in-process (``infra.marts.build``), or is
opened from the settings when someone runs ``dbt`` by hand.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from dbt.adapters.duckdb.plugins import BasePlugin

from infra.errors import ConfigError

logger = logging.getLogger(__name__)

# Load order matters: the iceberg extension needs avro for its manifests.
EXTENSIONS: tuple[tuple[str, str], ...] = (
    ("duckdb_extension_avro", "avro"),
    ("duckdb_extension_iceberg", "iceberg"),
    ("duckdb_extension_httpfs", "httpfs"),
)

BRONZE_COLUMNS: dict[str, str] = {
    "id": "varchar",
    "resource_type": "varchar",
    "version_id": "varchar",
    "last_updated": "timestamptz",
    "patient_key": "varchar",
    "source": "varchar",
    "load_id": "varchar",
    "loaded_at": "timestamptz",
    "resource": "varchar",
}

# Resource types the staging models read; each gets a view even when the lake has no such table.
BRONZE_TABLES: tuple[str, ...] = (
    "patient", "encounter", "condition", "observation", "medicationrequest", "procedure",
    "immunization", "allergyintolerance", "diagnosticreport", "documentreference",
    "imagingstudy", "careplan", "claim", "explanationofbenefit", "practitioner",
    "organization", "location",
)

# Tables the ML stages write, and where each stage defines its Arrow schema. The ML marts declare
# these sources in their own yml (dbt_project/models/marts/<nlp|imaging|drift>/).
ML_TABLE_SCHEMAS: dict[str, str] = {
    "note_mentions": "ml_pipelines.nlp.tables:MENTION_SCHEMA",
    "images": "ml_pipelines.vision.tables:IMAGES_SCHEMA",
    "imaging_findings": "ml_pipelines.vision.tables:FINDINGS_SCHEMA",
    "drift_metrics": "ml_pipelines.drift.lake_io:METRICS_SCHEMA",
}


def ml_table_columns() -> dict[str, dict[str, str]]:
    """Column names and DuckDB types of each ML table whose stage is part of this build."""
    found: dict[str, dict[str, str]] = {}
    scratch = duckdb.connect()
    try:
        for name, target in ML_TABLE_SCHEMAS.items():
            module_name, _, attribute = target.partition(":")
            try:
                schema = getattr(importlib.import_module(module_name), attribute)
            except ModuleNotFoundError as error:
                if error.name and module_name.startswith(error.name):
                    continue  # that stage is not in this build: its marts are not either
                raise
            relation = scratch.from_arrow(schema.empty_table())
            found[name] = {
                column: str(kind) for column, kind in zip(relation.columns, relation.types)
            }
    finally:
        scratch.close()
    return found


@dataclass
class _Binding:
    lake: Any
    as_of: dt.datetime | None


_BOUND: list[_Binding] = []


def bind(lake: Any, *, as_of: dt.datetime | None) -> None:
    """Hand the open lake (and the as-of time) to the plugin for the in-process dbt run."""
    _BOUND[:] = [_Binding(lake=lake, as_of=as_of)]


def unbind() -> None:
    _BOUND.clear()


def extension_path(module_name: str, name: str) -> Path:
    module = importlib.import_module(module_name)
    found = sorted(Path(module.__file__).parent.rglob(f"{name}.duckdb_extension"))
    if not found:
        raise ConfigError(
            f"the package {module_name} holds no {name}.duckdb_extension file: reinstall it "
            f"with the version of duckdb ({duckdb.__version__})"
        )
    return found[-1]


def load_extensions(connection: duckdb.DuckDBPyConnection) -> None:
    for module_name, name in EXTENSIONS:
        connection.execute(f"LOAD '{extension_path(module_name, name)}'")


def _empty_view_sql(columns: dict[str, str]) -> str:
    selected = ", ".join(f'cast(null as {kind}) as "{name}"' for name, kind in columns.items())
    return f"select {selected} where false"


def _scan_sql(table: Any, as_of: dt.datetime | None) -> str | None:
    """The iceberg_scan over the snapshot current now (or at ``as_of``); None when none was."""
    if as_of is None:
        snapshot = table.current_snapshot()
    else:
        snapshot = table.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
    if snapshot is None:
        return None
    location = table.metadata_location.replace("'", "''")
    return f"select * from iceberg_scan('{location}', snapshot_from_id => {snapshot.snapshot_id})"


def _existing_tables(lake: Any, namespace: str) -> set[str]:
    return {identifier.rsplit(".", 1)[-1] for identifier in lake.tables(namespace)}


def view_statements(lake: Any, *, as_of: dt.datetime | None) -> dict[str, str]:
    """``schema.view`` -> the select it stands for, for every bronze and ML source."""
    statements: dict[str, str] = {}
    namespaces = {
        "bronze": dict.fromkeys(BRONZE_TABLES, BRONZE_COLUMNS), "ml": ml_table_columns(),
    }
    for namespace, expected in namespaces.items():
        existing = _existing_tables(lake, namespace)
        for name in sorted(existing | set(expected)):
            scan = None
            if name in existing:
                scan = _scan_sql(lake.table(f"{namespace}.{name}"), as_of)
            if scan is None:
                columns = expected.get(name, BRONZE_COLUMNS)
                scan = _empty_view_sql(columns)
            statements[f"{namespace}.{name}"] = scan
    return statements


def create_views(
    connection: duckdb.DuckDBPyConnection, lake: Any, *, as_of: dt.datetime | None
) -> int:
    """Create the source views in the connection's in-memory catalog; returns how many."""
    statements = view_statements(lake, as_of=as_of)
    for schema in sorted({name.split(".")[0] for name in statements}):
        connection.execute(f"create schema if not exists memory.{schema}")
    for name, select in statements.items():
        schema, view = name.split(".")
        connection.execute(f'create or replace view memory.{schema}."{view}" as {select}')
    logger.info(
        "created %d source views over the lake (%s)",
        len(statements),
        "as of " + as_of.isoformat() if as_of else "current snapshots",
    )
    return len(statements)


def _open_lake_from_settings() -> Any:
    try:
        from infra.lake import Lake
    except ModuleNotFoundError:
        raise ConfigError(
            "dbt was run outside carelake and infra.lake is not part of this build: run "
            "`carelake marts build` instead"
        ) from None
    from infra.settings import load_settings

    return Lake.open(load_settings(), role="loader", create=False)


def _parse_as_of(text: str) -> dt.datetime | None:
    if not text:
        return None
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class Plugin(BasePlugin):
    """Creates the lake's source views on the connection dbt-duckdb opens."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self._as_of_text = str(plugin_config.get("as_of") or "")

    def configure_connection(self, conn: duckdb.DuckDBPyConnection) -> None:
        if _BOUND:
            lake, as_of = _BOUND[0].lake, _BOUND[0].as_of
        else:
            lake, as_of = _open_lake_from_settings(), _parse_as_of(self._as_of_text)

        conn.register_filesystem(lake.fs)
        load_extensions(conn)
        conn.execute("set TimeZone = 'UTC'")
        create_views(conn, lake, as_of=as_of)
