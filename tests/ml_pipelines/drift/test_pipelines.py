"""The drift stage: ZenML drift and retraining pipelines over a lake ingested from FHIR files."""

import pytest

# Set the way a user would, through the environment; the steps reopen the lake and see them too.
SETTINGS = {
    "CARELAKE_DRIFT__REFERENCE": "2011..2019",
    "CARELAKE_DRIFT__CURRENT": "2021..",
    "CARELAKE_DRIFT__FALSE_ALARM_SPLITS": "20",
    "CARELAKE_DRIFT__MIN_WINDOW_UNITS": "100",
}


@pytest.mark.slow
def test_drift_stage_makes_model_versions_kept_with_their_metrics(
    tmp_path, shared_data, monkeypatch
):
    from conftest import make_lake
    from dlt_pipelines.fhir.pipeline import ingest
    from infra.stages import StageContext

    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    lake = make_lake(tmp_path)
    ingest(lake, [shared_data / "synthea-bulk-ndjson-10-patients",
                  shared_data / "synthea-r4-bundles-smart" / "bundles"], workers=1)

    from ml_pipelines.drift import stage

    result = stage.run(StageContext(settings=lake.settings, lake=lake, sources=[]))

    assert result.status == "ok"
    assert result.details == {
        "drifted_features": 13,
        "metrics_rows": 98,
        "profiles": 6,
        "retrained": True,
        "promoted": True,
        "feature_sets": {
            "encounters": "compared",
            "notes": "the lake holds no notes yet (its stage has not run)",
            "images": "the lake holds no images yet (its stage has not run)",
        },
    }

    from zenml.client import Client
    from zenml.enums import ModelStages

    from ml_pipelines.pipelines.retrain import retrain_pipeline
    from ml_pipelines.steps.drift.retrain import MODEL_NAME

    first = Client().get_model_version(MODEL_NAME, 1).run_metadata
    assert first["promoted"] is True and "production_version" not in first
    # Patient keys are pseudonyms under this lake's own key, so which patients are held out
    # differs from lake to lake; the window's 90 encounters are always split between the two.
    assert first["training_rows"] + first["holdout_rows"] == 90
    assert first["training_rows"] > 0 and first["holdout_rows"] > 0

    second_run = retrain_pipeline(data_dir=str(lake.data_dir), current="2020", overrides={})
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
