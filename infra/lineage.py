"""Column-level lineage of the marts, computed from dbt's compiled SQL with sqlglot.

dbt's graph links models; auditors need columns. For every column of every model, sqlglot's
``lineage`` finds the columns of the upstream relations it is computed from (one hop per model,
with the manifest's documented columns as the schema, so ``select *`` resolves). Following the hops
from a mart column ends at staging columns, whose ``meta.fhir_element`` names the FHIR element they
flatten, and at the bronze table they read. The result is one row per mart column and FHIR element:
the path it took, model by model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.lineage import lineage as sqlglot_lineage

logger = logging.getLogger(__name__)

Relation = tuple[str, str, str]


def _relation_key(database: str | None, schema: str | None, name: str | None) -> Relation:
    return ((database or "").lower(), (schema or "").lower(), (name or "").lower())


def _relations(manifest: dict[str, Any]) -> dict[Relation, dict[str, Any]]:
    relations: dict[Relation, dict[str, Any]] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] in {"model", "seed", "snapshot"}:
            name = node.get("alias") or node["name"]
            relations[_relation_key(node["database"], node["schema"], name)] = node
    for source in manifest["sources"].values():
        name = source.get("identifier") or source["name"]
        # carelake's source() macro resolves every source in DuckDB's in-memory catalog.
        relations[_relation_key("memory", source["schema"], name)] = source
    return relations


def _schema(relations: dict[Relation, dict[str, Any]]) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for (database, db_schema, name), node in relations.items():
        columns = {column: "text" for column in node.get("columns", {})}
        if columns:
            schema.setdefault(database, {}).setdefault(db_schema, {})[name] = columns
    return schema


@contextlib.contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs an INFO line per DuckDB list index it rewrites; that is not news here."""
    sqlglot_logger = logging.getLogger("sqlglot")
    level = sqlglot_logger.level
    sqlglot_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sqlglot_logger.setLevel(level)


def _hops(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, list[tuple[Relation, str]]]:
    """For each output column of one model, the (relation, column) pairs it is computed from."""
    try:
        with _quiet_sqlglot():
            roots = sqlglot_lineage(
                None, node["compiled_code"], schema=schema, dialect="duckdb", trim_selects=True
            )
    except (sqlglot.errors.SqlglotError, KeyError, ValueError) as error:
        logger.warning("no lineage for model %s: %s", node["name"], type(error).__name__)
        return {}
    hops: dict[str, list[tuple[Relation, str]]] = {}
    for column, root in roots.items():
        found = []
        for lineage_node in root.walk():
            if lineage_node.downstream or not isinstance(lineage_node.source, exp.Table):
                continue
            table = lineage_node.source
            relation = _relation_key(table.catalog, table.db, table.name)
            found.append((relation, lineage_node.name.split(".")[-1].strip('"').lower()))
        hops[column.strip('"').lower()] = found
    return hops


def column_edges(manifest: dict[str, Any]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(model unique_id, column) -> [(upstream unique_id, column)] for every documented column."""
    relations = _relations(manifest)
    schema = _schema(relations)
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or not node.get("compiled_code"):
            continue
        hops = _hops(node, schema)
        for column in node.get("columns", {}):
            upstream = {
                (relations[relation]["unique_id"], upstream_column)
                for relation, upstream_column in hops.get(column.lower(), [])
                if relation in relations
            }
            edges[(node["unique_id"], column)] = sorted(upstream)
    return edges


def _trace(
    start: tuple[str, str],
    edges: dict[tuple[str, str], list[tuple[str, str]]],
) -> Iterable[list[tuple[str, str]]]:
    """Every path from a column down to a column with no upstream (a source or a literal)."""
    stack = [[start]]
    while stack:
        path = stack.pop()
        upstream = edges.get(path[-1], [])
        if not upstream:
            yield path
            continue
        for step in upstream:
            if step not in path:
                stack.append([*path, step])


def column_lineage(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per mart column and FHIR element it comes from, with the path between them."""
    edges = column_edges(manifest)
    nodes = {**manifest["nodes"], **manifest["sources"]}
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for (unique_id, column), _ in sorted(edges.items()):
        node = nodes[unique_id]
        if node["fqn"][1:2] != ["marts"]:
            continue
        for path in _trace((unique_id, column), edges):
            elements = [
                (step_id, step_column, element)
                for step_id, step_column in path
                for element in [_fhir_element(nodes[step_id], step_column)]
                if element
            ]
            source_id, _ = path[-1]
            source = nodes[source_id]
            for _, _, element in elements or [(None, None, "")]:
                # One row per FHIR element reached; a path reaching none (a seed) is a row too.
                key = (node["name"], column, element or "path:" + " ".join(map(str, path)))
                rows.setdefault(key, {
                    "mart": node["name"],
                    "column_name": column,
                    "fhir_element": element or None,
                    "source_table": f"{source['schema']}.{source['name']}"
                    if source["resource_type"] == "source" else None,
                    "path": " <- ".join(_step_name(nodes[step], name) for step, name in path),
                })
    logger.info("computed column lineage: %d rows over %d model columns", len(rows), len(edges))
    return [rows[key] for key in sorted(rows)]


def _step_name(node: dict[str, Any], column: str) -> str:
    if node["resource_type"] == "source":
        return f"{node['schema']}.{node['name']}.{column}"
    return f"{node['name']}.{column}"


def _fhir_element(node: dict[str, Any], column: str) -> str:
    meta = node.get("columns", {}).get(column, {}).get("meta", {}) or {}
    return meta.get("fhir_element", "") if node["fqn"][1:2] == ["staging"] else ""


def store(
    rows: list[dict[str, Any]],
    *,
    connect: Callable[[], Any],
    table: str,
) -> int:
    """Write the lineage rows to ``marts.main.<table>``; returns how many."""
    connection = connect()
    try:
        connection.execute(
            f"create or replace table marts.main.{table} (mart varchar, column_name varchar, "
            "fhir_element varchar, source_table varchar, path varchar)"
        )
        if rows:
            connection.executemany(
                f"insert into marts.main.{table} values (?, ?, ?, ?, ?)",
                [[row["mart"], row["column_name"], row["fhir_element"], row["source_table"],
                  row["path"]] for row in rows],
            )
        connection.execute("checkpoint")
    finally:
        connection.close()
    return len(rows)

