"""The drift stage: ZenML drift and retraining pipelines over a lake ingested from FHIR files.

ZenML binds one store per process, and other tests load it with theirs: the stage runs in a
fresh interpreter that prints what the test then checks.
"""

import json
import os
import subprocess
import sys

import pytest

# Set the way a user would, through the environment; the steps reopen the lake and see them too.
SETTINGS = {
    "CARELAKE_DRIFT__REFERENCE": "2011..2019",
    "CARELAKE_DRIFT__CURRENT": "2021..",
    "CARELAKE_DRIFT__FALSE_ALARM_SPLITS": "20",
    "CARELAKE_DRIFT__MIN_WINDOW_UNITS": "100",
}

SCRIPT = """
import json, sys
from pathlib import Path
from dlt_pipelines.fhir.pipeline import ingest
from infra.lake import Lake
from infra.settings import load_settings
from infra.stages import StageContext
from ml_pipelines.drift import stage

data, shared = Path(sys.argv[1]), Path(sys.argv[2])
lake = Lake.open(load_settings(data_dir=data))
ingest(lake, [shared / "synthea-bulk-ndjson-10-patients",
              shared / "synthea-r4-bundles-smart" / "bundles"], workers=1)
result = stage.run(StageContext(settings=lake.settings, lake=lake, sources=[]))

from zenml.client import Client
from zenml.enums import ModelStages
from ml_pipelines.pipelines.retrain import retrain_pipeline
from ml_pipelines.steps.drift.retrain import MODEL_NAME

client = Client()
first = dict(client.get_model_version(MODEL_NAME, 1).run_metadata)
second_run = retrain_pipeline(data_dir=str(data), current="2020", overrides={})
second = second_run.steps["train_and_evaluate"].output.load()
kept = dict(client.get_model_version(MODEL_NAME, 2).run_metadata)
record = {
    "stage": result.as_json(),
    "first": first,
    "second": second,
    "versions": [v.number for v in client.list_model_versions(
        model_name_or_id=MODEL_NAME, sort_by="asc:number")],
    "production": client.get_model_version(MODEL_NAME, ModelStages.PRODUCTION).number,
    "kept": kept,
    "model_file": lake.fs.exists(kept["model_path"]),
}
print("RESULT " + json.dumps(record, default=str))
"""


@pytest.mark.slow
def test_drift_stage_makes_model_versions_kept_with_their_metrics(tmp_path, shared_data,
                                                                  repo_root):
    environment = {**os.environ, **SETTINGS, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": str(repo_root)}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(shared_data)],
        cwd=repo_root, env=environment, capture_output=True, text=True, timeout=540,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    record = json.loads(line[len("RESULT "):])

    stage_record = record["stage"]
    assert stage_record["status"] == "ok"
    assert {key: stage_record[key] for key in
            ("drifted_features", "metrics_rows", "profiles", "retrained", "promoted")} == {
        "drifted_features": 13, "metrics_rows": 98, "profiles": 6, "retrained": True,
        "promoted": True,
    }
    assert stage_record["feature_sets"] == {
        "encounters": "compared",
        "vitals": "compared",
        "notes": "the lake holds no notes yet (its stage has not run)",
        "embeddings": "the lake holds no embeddings yet (its stage has not run)",
        "images": "the lake holds no images yet (its stage has not run)",
    }

    first = record["first"]
    assert first["promoted"] is True and "production_version" not in first
    # Patient keys are pseudonyms under this lake's own key, so which patients are held out
    # differs from lake to lake; the window's 90 encounters are always split between the two.
    assert first["training_rows"] + first["holdout_rows"] == 90
    assert first["training_rows"] > 0 and first["holdout_rows"] > 0

    second = record["second"]
    assert second["production_version"] == 1
    assert record["versions"] == [1, 2]
    assert record["production"] == (2 if second["promoted"] else 1)
    assert record["kept"]["holdout_brier"] == second["holdout_brier"]
    assert record["kept"]["production_holdout_brier"] == second["production_holdout_brier"]
    assert record["model_file"] is True
