"""Time travel: read any table as of a snapshot id or a timestamp, through DuckDB.

``bronze_connection`` gives a DuckDB connection with one view per bronze table (``bronze.<type>``)
reading the snapshot that was current at ``as_of`` (or the current one). Tables created after
``as_of`` are left out: they did not exist then.
"""

from __future__ import annotations

import datetime as dt

from infra.errors import ConfigError


def parse_as_of(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--as-of {text!r} is not an ISO timestamp such as "
                          "2026-12-01T10:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def snapshots_as_of(lake, as_of: dt.datetime | None, *,
                    namespaces: tuple[str, ...] = ("bronze",)) -> dict[str, int | None]:
    """Per table, the snapshot id current at ``as_of`` (None: current). Missing then: left out."""
    chosen: dict[str, int | None] = {}
    for namespace in namespaces:
        for identifier in lake.tables(namespace):
            if as_of is None:
                chosen[identifier] = None
                continue
            snapshot = lake.snapshot_as_of(identifier, int(as_of.timestamp() * 1000))
            if snapshot is not None:
                chosen[identifier] = snapshot
    return chosen


def create_views(connection, lake, snapshots: dict[str, int | None]) -> None:
    for identifier, snapshot_id in snapshots.items():
        namespace, name = identifier.split(".", 1)
        connection.execute(f'create schema if not exists "{namespace}"')
        connection.execute(f'create or replace view "{namespace}"."{name}" as select * from '
                           f"{lake.scan_sql(identifier, snapshot_id=snapshot_id)}")


def bronze_connection(lake, *, as_of: dt.datetime | None = None, snapshot_id: int | None = None,
                      table: str | None = None):
    connection = lake.duckdb()
    if snapshot_id is not None:
        if not table:
            raise ConfigError("--snapshot-id needs --table (snapshot ids belong to one table)")
        identifier = table if "." in table else f"bronze.{table}"
        create_views(connection, lake, {identifier: snapshot_id})
        return connection
    create_views(connection, lake, snapshots_as_of(lake, as_of))
    return connection
