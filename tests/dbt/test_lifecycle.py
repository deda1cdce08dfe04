"""Updates, deletes and erasure reaching the marts (on the edge lake; these tests change it)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from infra import marts
from tests.dbt import bronze_fixture
from tests.dbt.conftest import BuiltLake, query

THIRD_LOAD_AT = dt.datetime(2026, 1, 7, 8, 0, tzinfo=dt.UTC)


def _bronze_row(lake, table: str, resource_id: str) -> dict:
    rows = lake.read_arrow(f"bronze.{table}", where=f"id == '{resource_id}'").to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_incremental_observations_follow_updates_and_deletes(edge: BuiltLake) -> None:
    lake = edge.lake

    # A marker on an untouched row shows the next build merges rather than rebuilds.
    connection = marts.connect_marts(lake, read_only=False)
    connection.execute(
        "update observations set code_display = 'untouched' where observation_id = 'bmd'"
    )
    connection.close()

    updated = _bronze_row(lake, "observation", "bmi")
    resource = json.loads(updated["resource"])
    resource["valueQuantity"]["value"] = 18.25
    updated.update(resource=json.dumps(resource), loaded_at=THIRD_LOAD_AT, load_id="load-3")
    bronze_fixture.replace_resources(lake, "observation", [updated])
    assert lake.delete("bronze.observation", "id == 'satO2'") == 1

    summary = marts.build(lake, select="+observations")
    rows = dict(query(lake, "select observation_id, value_decimal from observations"))
    markers = query(lake, "select code_display from observations where observation_id = 'bmd'")

    assert summary["build"]["model_success"] == 2
    assert rows["bmi"] == Decimal("18.25")
    assert "satO2" not in rows
    assert len(rows) == 48
    assert markers == [("untouched",)]

    marts.build(lake, select="+observations", full_refresh=True)
    assert query(lake, "select code_display from observations where observation_id = 'bmd'") == [
        ("Femur DXA Bone density",)
    ]


def test_marts_eraser_deletes_every_row_of_one_patient(edge: BuiltLake) -> None:
    lake = edge.lake
    key = query(
        lake, "select patient_key from observations where observation_id = 'blood-pressure'"
    )[0][0]
    before = {
        table: query(lake, f'select count(*) from "{table}" where {column} = ?', [key])[0][0]
        for table, column in marts.PATIENT_TABLES.items()
    }

    deleted = marts.erase_patient(lake, key)

    after = {
        table: query(lake, f'select count(*) from "{table}" where {column} = ?', [key])[0][0]
        for table, column in marts.PATIENT_TABLES.items()
    }
    assert deleted == sum(before.values())
    # The spec examples hang nine vital signs on Patient/example.
    assert before["vitals"] == 9 and before["patients"] == 1
    assert set(after.values()) == {0}
