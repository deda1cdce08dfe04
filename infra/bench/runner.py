"""Run the benchmark: scale the input, then time the baselines and every stage, each in a child.

For each scale factor the runner makes the scaled input in a private scratch folder, measures
``scale`` itself, the two baselines and the chosen stages in that order, and removes the folder
before the next factor. Each measurement is a child process (``infra.bench.child``): its peak
memory is the high-water mark the kernel reports for it when it ends (``wait4``'s
``ru_maxrss``: the largest single process of the stage, itself or a worker), beside the largest
sum over its process tree seen by sampling every 50 ms.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from infra.bench.report import growth
from infra.scratch import private_scratch

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "data" / "sample" / "fhir"
STAGE_NAMES = ("ingest", "marts", "nlp", "vision", "drift")
BASELINES = ("orjson_parse", "naive_dlt")
# The count each measurement's throughput is taken from.
UNITS = {
    "scale": "resources", "orjson_parse": "resources", "naive_dlt": "resources",
    "ingest": "resources", "marts": "rows", "nlp": "notes", "vision": "images", "drift": "rows",
}
# Stages whose throughput in MB/s of FHIR input means something.
BYTE_RATES = {"scale", "orjson_parse", "naive_dlt", "ingest"}
SAMPLE_SECONDS = 0.05


def run_benchmark(
    *, scales: list[int], stages: list[str], inputs: list[Path] | None = None,
    baselines: bool = True, seed: int = 0, workers: int = 1,
) -> dict[str, Any]:
    """Measure every stage at every scale; returns the results as a JSON-ready dict."""
    unknown = [name for name in stages if name not in STAGE_NAMES]
    if unknown:
        from infra.errors import ConfigError

        raise ConfigError(f"unknown stage {unknown[0]!r}: choose from {', '.join(STAGE_NAMES)}")
    inputs = [Path(path) for path in inputs] if inputs else [SAMPLE]
    ordered = [name for name in STAGE_NAMES if name in stages]
    started_at = datetime.datetime.now(datetime.UTC)
    runs = []
    with private_scratch("bench") as scratch:
        for factor in scales:
            runs.append(_one_scale(factor, ordered, inputs, scratch / f"x{factor}",
                                   baselines=baselines, seed=seed, workers=workers))
    return {
        "benchmark": "carelake",
        "format": 1,
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.machine()}",
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
        "seed": seed,
        "scales": list(scales),
        "runs": runs,
        "growth": growth(runs),
    }


def _one_scale(
    factor: int, stages: list[str], inputs: list[Path], folder: Path, *, baselines: bool,
    seed: int, workers: int,
) -> dict[str, Any]:
    scaled, data_dir = folder / "input", folder / "data"
    folder.mkdir(parents=True)
    results: dict[str, dict[str, Any]] = {}
    results["scale"] = measure(
        "infra.bench.stages:scaled_input", folder, "scale",
        inputs=[str(path) for path in inputs], output=str(scaled), factor=factor, seed=seed,
        workers=workers,
    )
    if results["scale"]["status"] != "ok":
        shutil.rmtree(folder, ignore_errors=True)
        return {"factor": factor, "input": {}, "results": results}
    counts = results["scale"]["counts"]
    size = {"bytes": counts["bytes"], "resources": counts["resources"], "files": counts["files"],
            "images": counts["images"]}

    if baselines:
        for name in BASELINES:
            results[name] = measure(f"infra.bench.baselines:{name}", folder, name,
                                     fhir=str(scaled / "fhir"), scratch=str(folder / name))
    for name in stages:
        if name != "ingest" and results.get("ingest", {}).get("status") != "ok":
            reason = "the ingest stage did not run" if "ingest" not in results else \
                f"it needs the ingest stage's lake, and the ingest is {results['ingest']['status']}"
            results[name] = {"status": "not available", "reason": reason}
            continue
        results[name] = measure(f"infra.bench.stages:{name}", folder, name,
                                 inputs=str(scaled), data_dir=str(data_dir))
    for name, result in results.items():
        _rates(name, result, size)
    shutil.rmtree(folder, ignore_errors=True)
    return {"factor": factor, "input": size, "results": results}


def measure(function: str, folder: Path, name: str, **arguments: Any) -> dict[str, Any]:
    """Call ``function`` (``module:function``) with ``arguments`` in a child; its outcome.

    The outcome has the child's status, counts and seconds, plus ``peak_rss_mb`` and
    ``peak_tree_rss_mb``. ``folder`` holds the spec and outcome files.
    """
    spec_path, result_path = folder / f"{name}.spec.json", folder / f"{name}.result.json"
    spec_path.write_text(json.dumps(
        {"function": function, "arguments": arguments, "result": str(result_path)}
    ))
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO_ROOT), environ.get("PYTHONPATH", "")) if part
    )
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "infra.bench.child", str(spec_path)], cwd=REPO_ROOT, env=environ
    )
    tree_peak = 0
    watcher = psutil.Process(process.pid)
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, _tree_rss(watcher))
            time.sleep(SAMPLE_SECONDS)
    except BaseException:
        process.kill()  # the runner is stopping: take the measurement down with it
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)

    if result_path.is_file():
        outcome = json.loads(result_path.read_text())
    else:
        reason = f"the child exited with status {process.returncode}"
        outcome = {"status": "failed", "reason": reason}
    outcome["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    outcome["peak_tree_rss_mb"] = round(max(tree_peak, usage.ru_maxrss * 1024) / 2**20, 1)
    logger.info("%s: %s in %.2f s, peak %.0f MB", name, outcome["status"],
                outcome.get("seconds", 0.0), outcome["peak_rss_mb"])
    return outcome


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def _rates(name: str, result: dict[str, Any], size: dict[str, int]) -> None:
    if result.get("status") != "ok" or not result.get("seconds"):
        return
    seconds = result["seconds"]
    result["seconds"] = round(seconds, 3)
    unit = UNITS.get(name)
    counts = result.get("counts") or {}
    if name in BYTE_RATES:
        result["mb_per_s"] = round(size["bytes"] / 1e6 / seconds, 2)
        result["resources_per_s"] = round(size["resources"] / seconds, 1)
    if unit and isinstance(counts.get(unit), int | float):
        result["unit"] = unit
        result["items_per_s"] = round(counts[unit] / seconds, 1)
