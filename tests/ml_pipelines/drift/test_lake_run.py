"""A drift run in an encrypted lake: profiles, metrics, reports, the report command, erasure."""

import argparse
import json
from pathlib import Path

import pytest

from infra.allowlist import allowed
from infra.errors import ConfigError

from ml_pipelines.drift import commands, lake_io, profiles
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.erase import erase_patient
from ml_pipelines.drift.run import run_drift

CONFIG = DriftConfig(reference="2011..2019", current="2021..", false_alarm_splits=20,
                     min_window_units=100)


@pytest.fixture(scope="module")
def drift_lake(tmp_path_factory, encounters, lake_at):
    root = tmp_path_factory.mktemp("drift-lake")
    lake = lake_at(root)
    result = run_drift(lake, encounters, config=CONFIG, run_id="20261204T120000Z")
    return lake, result


def test_run_stores_metrics_profiles_and_reports(drift_lake):
    lake, result = drift_lake

    assert result.has_drift and result.passed and len(result.drifted) == 13
    metrics = lake.read_arrow(lake_io.METRICS_TABLE)
    assert metrics.num_rows == 98
    assert sum(metrics.column("is_drifted").to_pylist()) == 13
    assert sorted(result.profile_paths) == [
        "1986", "1987", "1988", "1989", "current-2021..", "reference-2011..2019"
    ]
    reference_view = profiles.read_profile(lake.fs, result.profile_paths["reference-2011..2019"])
    counts = reference_view.get_column("age_years").get_metric("counts").n.value
    assert counts == 704
    document = json.loads(lake_io.read_file(lake, result.report_json))
    assert document["false_alarms"]["splits"] == 20
    assert document["gate"]["lines"][1].startswith("thresholds: adjusted p <= 0.05 (bh)")


def test_nothing_lands_in_plaintext(drift_lake):
    lake, result = drift_lake
    written = [path for path in Path(lake.data_dir).rglob("*") if path.is_file()]
    for relative in (*result.profile_paths.values(), result.report_json, result.report_html):
        raw = (Path(lake.data_dir) / relative).read_bytes()
        assert raw[:4] == b"CLKE"
    for path in written:
        relative = path.relative_to(lake.data_dir).as_posix()
        data = path.read_bytes()
        assert b"COVID" not in data, relative
        if allowed(relative) is None:
            assert data[:4] == b"CLKE", relative


def test_report_command_writes_a_decrypted_copy(drift_lake, tmp_path):
    lake, result = drift_lake
    out = tmp_path / "drift.html"
    args = argparse.Namespace(data_dir=str(lake.data_dir), role="loader", out=out, run=None,
                              feature_set="encounters")

    assert commands.handle_report(args) == 0

    assert out.read_bytes() == lake_io.read_file(lake, result.report_html)
    assert "COVID-19 appeared" in out.read_text(encoding="utf-8")
    missing = argparse.Namespace(data_dir=str(lake.data_dir), role="loader", out=out,
                                 run="no-such-run", feature_set="encounters")
    with pytest.raises(ConfigError, match="no drift report .* check --run"):
        commands.handle_report(missing)


def test_gate_command_fails_only_in_fail_mode(drift_lake, capsys):
    lake, _ = drift_lake
    def gate(mode: str) -> int:
        return commands.handle_gate(
            argparse.Namespace(data_dir=str(lake.data_dir), role="loader", gate=mode,
                               feature_set="encounters")
        )

    assert gate("warn") == 0
    assert gate("fail") == 1
    printed = capsys.readouterr().out
    assert "effect_h >= 0.1" in printed


def test_carelake_parses_the_drift_commands():
    from infra.cli import build_parser

    args = build_parser().parse_args(["--data-dir", "d", "drift", "report", "--out", "x.html"])

    assert args.handler is commands.handle_report
    assert (args.data_dir, args.out) == ("d", Path("x.html"))


def test_eraser_removes_profiles_and_reports(lake, encounters):
    result = run_drift(lake, encounters, config=CONFIG, run_id="erase-run")

    removed = erase_patient(lake, "any-patient-key")

    assert removed == len(result.profile_paths) + 2
    assert not lake.fs.find(profiles.PROFILE_ROOT)
    assert lake.read_arrow(lake_io.METRICS_TABLE).num_rows == 98


def _rendered(root: Path, name: str, replacements: dict[str, str]) -> str:
    sql = (root / "dbt_project" / "models" / "marts" / "drift" / f"{name}.sql").read_text()
    for jinja, relation in replacements.items():
        sql = sql.replace(jinja, relation)
    assert "{{" not in sql
    return sql


def test_drift_marts_over_the_metrics_table(drift_lake, repo_root):
    lake, result = drift_lake
    connection = lake.duckdb()
    features_sql = _rendered(
        repo_root,
        "drift_features",
        {"{{ source('ml', 'drift_metrics') }}": lake.scan_sql(lake_io.METRICS_TABLE)},
    )
    connection.execute(f"create temp view drift_features as {features_sql}")
    runs_sql = _rendered(repo_root, "drift_runs",
                         {"{{ ref('drift_features') }}": "drift_features"})

    rows = connection.execute(runs_sql).fetchall()

    assert len(rows) == 1
    (run_id, feature_set, _, reference, current, tested, drifted, largest, change, key,
     has_drift) = rows[0]
    assert (key, run_id, feature_set) == (
        "20261204T120000Z:encounters", "20261204T120000Z", "encounters"
    )
    assert (reference, current) == ("2011..2019", "2021..")
    assert (tested, drifted, has_drift) == (98, 13, True)
    assert change == "median age down 4.2 years (from 40.5 to 36.3)"
    assert round(largest, 3) == 1.366
    ranks = connection.execute(
        "select count(distinct drift_feature_key), max(effect_rank) from drift_features"
    ).fetchone()
    assert ranks == (98, 98)


def test_stage_is_unavailable_before_ingest(lake):
    from infra.errors import StageUnavailable
    from infra.stages import StageContext
    from ml_pipelines.drift import stage

    with pytest.raises(StageUnavailable, match="no bronze.encounter table: run the ingest stage"):
        stage.run(StageContext(settings=lake.settings, lake=lake, sources=[]))
