"""The ZenML drift and retraining pipelines over a lake ingested from the real FHIR files."""

import pytest

OVERRIDES = {
    "reference": "2011..2019",
    "current": "2021..",
    "false_alarm_splits": 20,
    "min_window_units": 100,
}


@pytest.mark.slow
def test_drift_triggers_a_new_model_version_kept_with_its_metrics(tmp_path, shared_data):
    from conftest import make_lake
    from dlt_pipelines.fhir.pipeline import ingest

    lake = make_lake(tmp_path)
    ingest(lake, [shared_data / "synthea-bulk-ndjson-10-patients",
                  shared_data / "synthea-r4-bundles-smart" / "bundles"], workers=1)

    from ml_pipelines.drift.stage import run_pipelines

    details = run_pipelines(str(lake.data_dir), overrides=OVERRIDES, retrain=True)

    summary = details["drift"]
    assert summary["has_drift"] and summary["drifted_features"] == 13
    assert summary["metrics_rows"] == 98
    first = details["retrain"]
    assert first["promoted"] and first["production_version"] is None
    # Patient keys are pseudonyms under this lake's own key, so which patients are held out
    # differs from lake to lake; the window's 90 encounters are always split between the two.
    assert first["training_rows"] + first["holdout_rows"] == 90
    assert first["training_rows"] > 0 and first["holdout_rows"] > 0

    from ml_pipelines.pipelines.retrain import retrain_pipeline
    from ml_pipelines.steps.drift.retrain import MODEL_NAME
    from zenml.client import Client
    from zenml.enums import ModelStages

    second_run = retrain_pipeline(data_dir=str(lake.data_dir), current="2020", overrides=OVERRIDES)
    second = second_run.steps["train_and_evaluate"].output.load()

    assert second["production_version"] == 1
    versions = Client().list_model_versions(model_name_or_id=MODEL_NAME, sort_by="asc:number")
    assert [version.number for version in versions] == [1, 2]
    production = Client().get_model_version(MODEL_NAME, ModelStages.PRODUCTION)
    assert production.number == (2 if second["promoted"] else 1)
    kept = Client().get_model_version(MODEL_NAME, 2).run_metadata
    assert kept["holdout_brier"] == second["holdout_brier"]
    assert kept["production_holdout_brier"] == second["production_holdout_brier"]
    assert lake.fs.exists(kept["model_path"])
