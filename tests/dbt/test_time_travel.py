"""Marts as of a timestamp: each table read at the snapshot current then, into its own database."""

from __future__ import annotations

from infra import marts
from tests.dbt.conftest import BuiltLake


def test_as_of_build_reads_the_snapshots_current_then(sample: BuiltLake) -> None:
    summary = marts.build(sample.lake, as_of=sample.between_loads, select="+patients +encounters")
    as_of = marts.normalize_as_of(sample.between_loads)
    then = marts.connect_marts(sample.lake, as_of=as_of)
    now = marts.connect_marts(sample.lake)
    try:
        counts_then = then.execute(
            "select (select count(*) from patients), (select count(*) from encounters)"
        ).fetchall()
        counts_now = now.execute(
            "select (select count(*) from patients), (select count(*) from encounters)"
        ).fetchall()
    finally:
        then.close()
        now.close()

    # Before the second load only the Bulk NDJSON export (13 patients, 1215 encounters) existed.
    assert counts_then == [(sample.loads["bulk"]["patient"], sample.loads["bulk"]["encounter"])]
    assert counts_then == [(13, 1215)]
    assert counts_now == [(53, 2057)]
    assert summary["as_of"] == as_of.isoformat()
    assert marts.marts_database_path(sample.lake.data_dir, as_of).name == (
        f"marts-asof-{as_of.strftime('%Y%m%dT%H%M%SZ')}.duckdb"
    )
