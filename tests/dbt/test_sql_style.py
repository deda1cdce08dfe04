"""SQL style: sqlfluff with the dbt templater and DuckDB's dialect passes on every model."""

from __future__ import annotations

import os

import pytest
from sqlfluff.core import FluffConfig, Linter

from infra import marts
from infra.scratch import private_scratch
from tests.dbt.conftest import REPO_ROOT, BuiltLake

MODELS = REPO_ROOT / "dbt_project" / "models"
# This project's folders; the ML marts (marts/nlp, marts/imaging, marts/drift) are the ML
# sidecar's to lint.
LINTED = [MODELS / "staging", MODELS / "intermediate", MODELS / "marts" / "clinical",
          MODELS / "marts" / "cohorts"]


@pytest.mark.slow
def test_every_model_passes_sqlfluff(sample: BuiltLake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    with private_scratch("dbt") as scratch, marts.dbt_environment(sample.lake, as_of=None):
        monkeypatch.setenv("DBT_TARGET_PATH", str(scratch / "target"))
        monkeypatch.setenv("DBT_LOG_PATH", str(scratch / "logs"))
        config = FluffConfig.from_path(str(REPO_ROOT / "dbt_project"))
        result = Linter(config=config).lint_paths(tuple(str(path) for path in LINTED))

    files = [linted for path in result.paths for linted in path.files]
    violations = [
        f"{os.path.relpath(linted.path, REPO_ROOT)}:{violation.line_no} "
        f"{violation.rule_code()} {violation.desc()}"
        for linted in files
        for violation in linted.violations
    ]
    assert violations == []
    assert len(files) == 33
