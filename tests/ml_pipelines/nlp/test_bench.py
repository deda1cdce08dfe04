"""The benchmark over public notes, and the stage on a lake without notes."""

from __future__ import annotations

from infra.stages import StageContext
from ml_pipelines.nlp import bench
from ml_pipelines.nlp.stage import run


def test_bench_counts_notes_characters_and_mentions(shared_data):
    figures = bench.run(shared_data / "synthea-bulk-ndjson-10-patients", n_process=2, limit=40)
    assert (figures["notes"], figures["characters"], figures["concepts"]) == (40, 53261, 247)
    assert figures["in_process"]["mentions"] == 561
    assert figures["in_process"]["notes_per_s"] > 0
    batch = figures["batch_api"]
    assert batch["status"] in {"ok", "unavailable"}
    if batch["status"] == "ok":
        assert batch["mentions"] == figures["in_process"]["mentions"]
    else:
        assert "relation-extraction" in batch["reason"]


def test_stage_skips_a_lake_without_notes(tmp_path, monkeypatch):
    from infra.lake import Lake
    from infra.settings import load_settings

    monkeypatch.setenv("CARELAKE_KEYS__KEY_DIR", str(tmp_path / "keys"))
    settings = load_settings(data_dir=tmp_path / "data")
    result = run(StageContext(settings=settings, lake=Lake.open(settings), sources=[]))
    assert (result.status, result.reason) == (
        "skipped", "the lake holds no DocumentReference or DiagnosticReport notes")
