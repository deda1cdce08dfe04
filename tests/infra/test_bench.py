"""The benchmark runner on 1x of the bundled sample, with both baselines: shape and real figures.

No timing is asserted: only that every figure is there and positive, that the counts are the
sample's exact counts, and that the memory measurement sees what a child really allocated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.bench.__main__ import main
from infra.bench.child import run as run_child
from infra.bench.report import BEGIN, END, growth, slope, verdict, write_markdown
from infra.bench.runner import measure
from infra.errors import ConfigError

ALLOCATED_MB = 300
SAMPLE_RESOURCES = 959  # data/sample/fhir: 3 bundles and 12 NDJSON files


def allocate(megabytes: int) -> dict[str, int]:
    """Run in a benchmark child: hold ``megabytes`` of touched memory for a moment."""
    block = b"x" * (megabytes << 20)
    return {"bytes": len(block)}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("bench")
    markdown = folder / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nProse before.\n\n## Beyond one machine\n\nProse after.\n")
    status = main(["--scales", "1", "--stages", "ingest", "--out", str(folder / "bench.json"),
                   "--markdown", str(markdown)])
    assert status == 0
    return json.loads((folder / "bench.json").read_text()), markdown


def test_the_results_have_every_measurement_with_positive_figures(results) -> None:
    data, _ = results
    assert data["benchmark"] == "carelake" and data["format"] == 1 and data["scales"] == [1]
    assert set(data["machine"]) == {"cpus", "python", "system", "memory_gb"}
    (run,) = data["runs"]
    assert run["factor"] == 1
    assert run["input"]["resources"] == SAMPLE_RESOURCES
    assert run["input"]["files"] == 15 and run["input"]["images"] == 4
    assert run["input"]["bytes"] > 0
    assert list(run["results"]) == ["scale", "orjson_parse", "naive_dlt", "ingest"]

    for name, result in run["results"].items():
        assert result["status"] == "ok", (name, result.get("reason"))
        for figure in ("seconds", "peak_rss_mb", "peak_tree_rss_mb", "mb_per_s", "resources_per_s",
                       "items_per_s"):
            assert isinstance(result[figure], float) and result[figure] > 0, (name, figure)
        assert result["peak_tree_rss_mb"] >= result["peak_rss_mb"]


def test_the_counts_are_the_sample_counts(results) -> None:
    data, _ = results
    measured = data["runs"][0]["results"]
    assert measured["scale"]["counts"]["resources"] == SAMPLE_RESOURCES
    assert measured["orjson_parse"]["counts"]["resources"] == SAMPLE_RESOURCES
    assert measured["naive_dlt"]["counts"]["resources"] == SAMPLE_RESOURCES
    ingest = measured["ingest"]["counts"]
    assert ingest["resources"] + ingest["quarantined"] == SAMPLE_RESOURCES
    assert ingest["files"] == 15


def test_growth_needs_two_scales_and_the_markdown_keeps_the_prose(results) -> None:
    data, markdown = results
    assert data["growth"]["ingest"] == {
        "scales": 1, "time_exponent": None, "time_exponent_largest": None,
        "memory_exponent": None, "memory_exponent_largest": None,
        "verdict": "needs two or more scales",
    }
    text = markdown.read_text()
    prose = "# Benchmarks\n\nProse before.\n\n## Beyond one machine\n\nProse after.\n\n"
    assert text.startswith(prose + BEGIN + "\n") and text.endswith(END + "\n")
    assert "| orjson_parse | ok |" in text and "| naive_dlt | ok |" in text

    write_markdown(markdown, data)
    assert markdown.read_text() == text  # a second run replaces its own block only


def test_a_stage_without_its_lake_is_not_available_and_never_timed(tmp_path: Path) -> None:
    status = main(["--scales", "1", "--stages", "marts", "--no-baselines",
                   "--out", str(tmp_path / "bench.json"), "--markdown", ""])
    data = json.loads((tmp_path / "bench.json").read_text())
    marts = data["runs"][0]["results"]["marts"]

    assert status == 0
    assert marts == {"status": "not available", "reason": "the ingest stage did not run"}


def test_a_missing_entry_point_is_reported_with_the_reason() -> None:
    outcome = run_child({"function": "ml_pipelines.no_such_stage:run"})
    module = "ml_pipelines.no_such_stage"
    assert outcome == {
        "status": "not available", "reason": f"{module} is not part of this build ({module})",
    }


def test_peak_memory_is_the_childs_own(tmp_path: Path) -> None:
    outcome = measure("tests.infra.test_bench:allocate", tmp_path, "allocate",
                      megabytes=ALLOCATED_MB)

    assert outcome["status"] == "ok"
    assert outcome["counts"] == {"bytes": ALLOCATED_MB << 20}
    assert outcome["peak_rss_mb"] >= ALLOCATED_MB


def test_the_growth_exponent_is_the_log_log_slope() -> None:
    assert slope([(1e6, 2.0), (1e7, 20.0), (1e8, 200.0)]) == pytest.approx(1.0)
    assert slope([(1e6, 1.0), (1e7, 100.0)]) == pytest.approx(2.0)
    assert slope([(1e6, 1.0)]) is None
    assert verdict(1.02) == "linear"
    assert verdict(1.6) == "worse than linear"
    assert verdict(0.3) == "sublinear (fixed costs dominate)"
    runs = [
        {"input": {"bytes": size}, "results": {"ingest": {"status": "ok", "seconds": seconds,
                                                           "peak_rss_mb": memory}}}
        for size, seconds, memory in ((1e6, 10.0, 100.0), (1e7, 10.0, 100.0), (1e8, 1000.0, 100.0))
    ]
    assert growth(runs)["ingest"] == {
        "scales": 3, "time_exponent": 1.0, "time_exponent_largest": 2.0,
        "memory_exponent": 0.0, "memory_exponent_largest": 0.0, "verdict": "worse than linear",
    }


def test_an_unknown_stage_is_refused() -> None:
    from infra.bench.runner import run_benchmark

    with pytest.raises(ConfigError, match="unknown stage 'ingset'"):
        run_benchmark(scales=[1], stages=["ingset"])
