"""Usage reporting is off before dbt, dlt, ZenML or whylogs can load."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_telemetry_variables_are_set_by_importing_any_package():
    for package in ("infra", "dlt_pipelines", "ml_pipelines"):
        script = (f"import os; os.environ.pop('DO_NOT_TRACK', None); import {package}, os; "
                  "print(os.environ['DO_NOT_TRACK'], os.environ['RUNTIME__DLTHUB_TELEMETRY'], "
                  "os.environ['ZENML_ANALYTICS_OPT_IN'], os.environ['WHYLOGS_NO_ANALYTICS'], "
                  "os.environ['DBT_SEND_ANONYMOUS_USAGE_STATS'])")
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, check=True).stdout.split()
        assert out == ["1", "false", "false", "True", "False"], package
