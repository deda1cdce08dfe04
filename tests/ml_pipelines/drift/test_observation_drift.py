"""Vitals and labs from bronze.observation as drift features, on the bundles' Observations."""

import json

import pyarrow as pa
import pytest

from ml_pipelines.drift import windows
from ml_pipelines.drift.compare import compare
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.fhir_features import reference_id
from ml_pipelines.drift.observation_features import lake_observation_features


@pytest.fixture(scope="module")
def vitals_lake(tmp_path_factory, fhir_resources, lake_at):
    """A lake whose bronze.observation holds the bundles' Observations as the ingest stores them
    (the resource as JSON beside its patient key)."""
    lake = lake_at(tmp_path_factory.mktemp("vitals-lake"))
    observations = [item for item in fhir_resources if item["resourceType"] == "Observation"]
    lake.append("bronze.observation", pa.table({
        "id": [item["id"] for item in observations],
        "resource_type": ["Observation"] * len(observations),
        "patient_key": [reference_id(item.get("subject")) for item in observations],
        "resource": [json.dumps(item) for item in observations],
    }))
    return lake


def test_lake_without_observations_has_no_vitals(lake):
    assert lake_observation_features(lake) is None


def test_vitals_carry_each_encounters_values_with_clinical_names(vitals_lake):
    vitals = lake_observation_features(vitals_lake)

    assert (len(vitals.frame), len(vitals.numeric)) == (433, 44)
    assert vitals.label("observation:8480-6") == "systolic blood pressure"
    assert vitals.units["observation:8480-6"] == "mmHg"
    assert vitals.units["observation:4548-4"] == "%"
    # Blood pressure comes from the panel's components, one pair per encounter.
    assert int(vitals.frame["observation:8480-6"].notna().sum()) == 339
    assert int(vitals.frame["observation:8462-4"].notna().sum()) == 339
    assert round(float(vitals.frame["observation:8480-6"].median()), 1) == 123.3


def test_vitals_drift_names_the_measures_that_moved(vitals_lake):
    vitals = windows.with_windows(lake_observation_features(vitals_lake), window="year")

    result = compare(windows.select(vitals, "..2009"), windows.select(vitals, "2010.."),
                     config=DriftConfig(), reference_name="..2009", current_name="2010..")

    assert (len(result.features), len(result.drifted)) == (42, 3)
    assert [item.description for item in result.drifted] == [
        "median body height down 7.8 cm (from 167.8 to 160.1)",
        "median BMI down 0.9 kg/m² (from 28.3 to 27.4)",
        "median body weight down 7.8 kg (from 77.2 to 69.4)",
    ]
