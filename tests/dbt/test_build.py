"""dbt build on the sample lake: every node runs, every test passes, the marts match the sources."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

from infra import marts
from tests.dbt import reference
from tests.dbt.conftest import BuiltLake, query


def test_sample_build_runs_every_model_seed_and_test(sample: BuiltLake) -> None:
    manifest = json.loads(sample.lake.fs.cat_file(f"{marts.DOCS_PREFIX}/manifest.json"))
    nodes = Counter(node["resource_type"] for node in manifest["nodes"].values())
    exposures = len(manifest["exposures"])
    unit_tests = len(manifest["unit_tests"])

    # Every node ran and passed: no error, failure, warning or skip.
    assert sample.summary["build"] == {
        "exposure_no-op": exposures,
        "model_success": nodes["model"],
        "seed_success": nodes["seed"],
        "test_pass": nodes["test"],
        "unit_test_pass": unit_tests,
    }
    assert (exposures, nodes["seed"], unit_tests) == (4, 3, 5)
    assert nodes["model"] >= 33 and nodes["test"] >= 123


def test_source_freshness_warns_on_the_static_sample(sample: BuiltLake) -> None:
    # Synthea's clinical dates end years ago: encounters and observations are stale by design.
    assert sample.summary["freshness"] == {"source_warn": 2}


def test_marts_hold_one_row_per_source_resource(sample: BuiltLake, shared_data: Path) -> None:
    items = list(reference.resources(shared_data))
    expected = {
        "patients": len(reference.of_type(items, "Patient")),
        "encounters": len(reference.of_type(items, "Encounter")),
        "conditions": len(reference.of_type(items, "Condition")),
        "observations": len(reference.of_type(items, "Observation")),
        "medications": len(reference.of_type(items, "MedicationRequest")),
        "procedures": len(reference.of_type(items, "Procedure")),
        "immunizations": len(reference.of_type(items, "Immunization")),
    }
    counted = {
        table: query(sample.lake, f"select count(*) from {table}")[0][0] for table in expected
    }
    assert counted == expected
    assert expected == {
        "patients": 53, "encounters": 2057, "conditions": 802, "observations": 5001,
        "medications": 1967, "procedures": 2544, "immunizations": 669,
    }


def test_vitals_keep_every_measurement_and_flag_the_implausible(
    sample: BuiltLake, shared_data: Path
) -> None:
    expected = {
        row["vital_id"]: (row["loinc_code"], row["value"], row["is_implausible"])
        for row in reference.vital_measurements(reference.resources(shared_data))
    }
    rows = query(
        sample.lake, "select vital_id, loinc_code, canonical_value, is_implausible from vitals"
    )
    assert {row[0]: row[1:] for row in rows} == expected
    assert len(rows) == len(expected)


def test_diabetes_cohort_and_latest_hba1c_match_the_sources(
    sample: BuiltLake, shared_data: Path
) -> None:
    items = list(reference.resources(shared_data))
    diabetic = {
        reference.subject_id(condition)
        for condition in reference.of_type(items, "Condition")
        if "44054006" in reference.codes(condition["code"], "http://snomed.info/sct")
    }
    latest: dict[str, tuple[str, Decimal]] = {}
    for observation in reference.of_type(items, "Observation"):
        if "4548-4" in reference.codes(observation["code"], "http://loinc.org"):
            patient = reference.subject_id(observation)
            moment = reference.utc(observation["effectiveDateTime"])
            value = Decimal(observation["valueQuantity"]["value"]).quantize(reference.SIX_PLACES)
            if patient not in latest or moment > latest[patient][0]:
                latest[patient] = (moment, value)

    rows = query(
        sample.lake,
        "select latest_hba1c_percent, is_hba1c_controlled, hba1c_count from diabetes_patients "
        "order by latest_hba1c_percent",
    )
    measured = sorted(
        (latest[patient][1], latest[patient][1] < 7) for patient in diabetic if patient in latest
    )
    unmeasured = [(None, None)] * len([patient for patient in diabetic if patient not in latest])
    assert [(row[0], row[1]) for row in rows] == measured + unmeasured
    assert len(rows) == len(diabetic) == 3
    assert len(measured) == 2
    assert sorted(row[2] for row in rows) == [0, 10, 10]


def test_hypertension_cohort_reads_blood_pressure_components(
    sample: BuiltLake, shared_data: Path
) -> None:
    items = list(reference.resources(shared_data))
    hypertensive = {
        reference.subject_id(condition)
        for condition in reference.of_type(items, "Condition")
        if {"38341003", "59621000"}
        & set(reference.codes(condition["code"], "http://snomed.info/sct"))
    }
    readings: dict[str, list[tuple]] = defaultdict(list)
    for observation in reference.of_type(items, "Observation"):
        values = {
            reference.codes(component["code"], "http://loinc.org")[0]:
            Decimal(component["valueQuantity"]["value"]).quantize(reference.SIX_PLACES)
            for component in observation.get("component", [])
            if "valueQuantity" in component
        }
        if "8480-6" in values and "8462-4" in values:
            readings[reference.subject_id(observation)].append(
                (
                    reference.utc(observation["effectiveDateTime"]),
                    values["8480-6"],
                    values["8462-4"],
                )
            )
    expected = sorted(
        (len(readings[patient]), max(readings[patient])[1], max(readings[patient])[2])
        for patient in hypertensive
        if readings[patient]
    )
    rows = query(
        sample.lake,
        "select bp_reading_count, latest_systolic_mm_hg, latest_diastolic_mm_hg "
        "from hypertension_patients where bp_reading_count > 0 order by all",
    )
    assert rows == expected
    total = query(sample.lake, "select count(*) from hypertension_patients")[0][0]
    assert total == len(hypertensive)


def test_encounter_lengths_and_patient_timelines_are_consistent(sample: BuiltLake) -> None:
    negative = query(sample.lake, "select count(*) from encounters where length_minutes < 0")
    gaps = query(
        sample.lake,
        "select count(*) from (select patient_key, max(event_sequence) as last, count(*) as n "
        "from patient_timelines group by patient_key) where last <> n",
    )
    assert negative == [(0,)]
    assert gaps == [(0,)]
