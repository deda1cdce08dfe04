"""Column lineage: every mart column follows back to the FHIR element its meta names."""

from __future__ import annotations

import json
from collections import defaultdict

from infra import marts
from tests.dbt.conftest import BuiltLake, query


def _manifest(lake) -> dict:
    return json.loads(lake.fs.cat_file(f"{marts.DOCS_PREFIX}/manifest.json"))


# The folders this project's own rules are checked on; the ML marts (marts/nlp, marts/imaging,
# marts/drift) belong to the ML sidecar.
CHECKED_FOLDERS = (["staging"], ["intermediate"], ["marts", "clinical"], ["marts", "cohorts"])


def _checked(node: dict) -> bool:
    return any(node["fqn"][1:1 + len(folder)] == folder for folder in CHECKED_FOLDERS)


def _declared(column: dict) -> set[str]:
    text = (column.get("meta") or {}).get("fhir_element", "")
    return {part.strip() for part in text.split(",") if part.strip()}


def test_every_model_states_its_grain_and_documents_every_column(sample: BuiltLake) -> None:
    manifest = _manifest(sample.lake)
    catalog = json.loads(sample.lake.fs.cat_file(f"{marts.DOCS_PREFIX}/catalog.json"))
    problems = []
    models = [
        node for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and _checked(node)
    ]
    for node in models:
        if not node["description"] or not (node.get("meta") or {}).get("grain"):
            problems.append(f"{node['name']}: description or grain missing")
        built = catalog["nodes"].get(node["unique_id"], {}).get("columns", {})
        if not built:
            problems.append(f"{node['name']}: not in the catalog")
        undocumented = {name.lower() for name in built} - set(node["columns"])
        undescribed = [
            name for name, column in node["columns"].items() if not column["description"]
        ]
        if undocumented or undescribed:
            problems.append(f"{node['name']}: {sorted(undocumented)} {undescribed}")
    assert problems == []
    assert len(models) == 33


def test_mart_column_meta_matches_the_lineage_computed_from_sql(sample: BuiltLake) -> None:
    manifest = _manifest(sample.lake)
    computed: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in query(sample.lake, "select mart, column_name, fhir_element from column_lineage"):
        if row[2]:
            computed[(row[0], row[1])].add(row[2])
    mismatched, unexplained = [], []
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["fqn"][1] != "marts" or not _checked(node):
            continue
        for name, column in node["columns"].items():
            declared = _declared(column)
            if declared != computed.get((node["name"], name), set()):
                mismatched.append((node["name"], name, sorted(declared)))
            if not declared and not (column.get("meta") or {}).get("derived"):
                unexplained.append((node["name"], name))
    assert mismatched == []
    assert unexplained == []


def test_an_auditor_follows_a_vital_value_back_to_the_fhir_quantity(sample: BuiltLake) -> None:
    rows = query(
        sample.lake,
        "select fhir_element, source_table, path from column_lineage "
        "where mart = 'vitals' and column_name = 'canonical_value' and fhir_element is not null "
        "order by 1",
    )
    assert rows == [
        (
            "Observation.component.valueQuantity.value",
            "bronze.observation",
            "vitals.canonical_value <- int_measurements_normalized.canonical_value <- "
            "int_measurements_unioned.value_decimal <- "
            "stg_fhir__observation_components.value_decimal "
            "<- bronze.observation.resource",
        ),
        (
            "Observation.valueQuantity.value",
            "bronze.observation",
            "vitals.canonical_value <- int_measurements_normalized.canonical_value <- "
            "int_measurements_unioned.value_decimal <- stg_fhir__observations.value_decimal "
            "<- bronze.observation.resource",
        ),
    ]
    seeds = query(
        sample.lake,
        "select path from column_lineage where mart = 'vitals' and column_name = 'canonical_value' "
        "and fhir_element is null",
    )
    # The conversion: `case when from_ucum_code is null ... else value * multiply_by + then_add`.
    assert sorted(seeds) == [
        ("vitals.canonical_value <- int_measurements_normalized.canonical_value <- "
         "unit_conversions.from_ucum_code",),
        ("vitals.canonical_value <- int_measurements_normalized.canonical_value <- "
         "unit_conversions.multiply_by",),
        ("vitals.canonical_value <- int_measurements_normalized.canonical_value <- "
         "unit_conversions.then_add",),
    ]
