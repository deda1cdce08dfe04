"""The NLP marts' SQL on DuckDB over a real lake: mentions joined to coded conditions.

dbt's ``source``/``ref`` are replaced by the lake's Iceberg scan of ``ml.note_mentions`` and a
relation with the columns the marts need from ``stg_fhir__conditions``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ml_pipelines.nlp import jobs, tables
from tests.ml_pipelines.nlp.conftest import SNOMED, _b64, bronze_rows, first_subject

MARTS = Path(__file__).resolve().parents[3] / "dbt_project" / "models" / "marts" / "nlp"

CONDITIONS = """(
    select
        patient_key,
        json_extract_string(resource, '$.code.coding[0].system') as code_system,
        json_extract_string(resource, '$.code.coding[0].code') as code,
        json_extract_string(resource, '$.code.coding[0].display') as code_display
    from {scan}
)"""


def _render(name: str, lake) -> str:
    sql = (MARTS / f"{name}.sql").read_text(encoding="utf-8")
    mentions = f"(select * from {lake.scan_sql(tables.MENTIONS)})"
    conditions = CONDITIONS.format(scan=lake.scan_sql("bronze.condition"))
    sql = sql.replace("{{ source('ml', 'note_mentions') }}", mentions)
    return sql.replace("{{ ref('stg_fhir__conditions') }}", conditions)


def _add_uncoded_case(lake, shared_data: Path) -> None:
    """Hyperlipidemia coded only for another patient, and named in a note of the first one."""
    note = {"resourceType": "DocumentReference", "id": "gap-note",
            "subject": {"reference": first_subject(shared_data)},
            "content": [{"attachment": {"contentType": "text/plain",
                                        "data": _b64(b"Hyperlipidemia noted. Denies asthma.")}}]}
    other = {"resourceType": "Condition", "id": "gap-condition",
             "subject": {"reference": "Patient/gap-other"},
             "code": {"coding": [{"system": SNOMED, "code": "55822004",
                                  "display": "Hyperlipidemia (disorder)"}]}}
    for resource_type, rows in bronze_rows(lake, [note, other]).items():
        lake.append(f"bronze.{resource_type.lower()}", pa.Table.from_pylist(rows))


def test_marts_split_note_concepts_from_coded_conditions(notes_lake, shared_data):
    _add_uncoded_case(notes_lake, shared_data)
    reference = jobs.prepare_model(notes_lake)
    jobs.extract_to_lake(notes_lake, reference, jobs.note_snapshots(notes_lake), run_id="run-m")
    connection = notes_lake.duckdb()

    uncoded = connection.execute(
        "select concept_code, mention_count from "
        f"({_render('nlp_uncoded_note_concepts', notes_lake)}) order by concept_code").fetchall()
    unmentioned = connection.execute(
        f"select code from ({_render('nlp_unmentioned_coded_conditions', notes_lake)})"
        " order by code").fetchall()
    assert uncoded == [("55822004", 1)]
    unmentioned_codes = [code for (code,) in unmentioned]
    assert len(unmentioned_codes) == 18
    # the edge notes' concepts that are negated, hypothetical or family history stay unmentioned
    assert {"38341003", "73211009", "195967001", "233604007", "386661006"} <= set(
        unmentioned_codes)
    assert "55822004" not in unmentioned_codes
