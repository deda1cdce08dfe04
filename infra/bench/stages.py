"""One benchmark function per carelake stage, each calling the real entry point.

The ingest calls ``dlt_pipelines.fhir.pipeline.ingest``, the marts ``infra.marts.build``; NLP,
vision and drift run their stage of ``carelake run`` (``infra.stages.STAGES``) with a context on
the benchmark's lake.

Every function takes the scaled input folder (``fhir/`` from the scaler, ``images/`` beside it) and
a scratch data folder for the lake, runs the stage once and returns its counts. The runner calls
each in a child process of its own, so that the child's peak memory is the stage's alone. A stage
whose entry point is not part of this build raises ``StageUnavailable``: it is reported as "not
available" with the reason, and never timed on something else.

The lake's keys go to ``<data dir>/../keys`` (outside the data folder, as carelake requires),
with the file key provider: the benchmark never touches a user's token or key folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from infra.errors import StageUnavailable

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "data" / "sample" / "images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def scaled_input(
    inputs: list[str], output: str, factor: int, seed: int = 0, workers: int = 1
) -> dict[str, int]:
    """Scale ``inputs`` into ``output/fhir`` and copy the sample images ``factor`` times."""
    from dlt_pipelines.fhir.scaler import scale

    root = Path(output)
    report = scale([Path(path) for path in inputs], root / "fhir", factor=factor, seed=seed,
                   workers=workers)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    sources = sorted(
        path for path in SAMPLE_IMAGES.glob("*") if path.suffix.lower() in IMAGE_SUFFIXES
    )
    for copy in range(factor):
        for index, path in enumerate(sources):
            shutil.copyfile(path, images / f"{copy:03d}-{index:02d}{path.suffix.lower()}")
    return {
        "resources": sum(report.resources_out.values()), "bytes": report.bytes_out,
        "bytes_in": report.bytes_in, "files": report.files_out, "images": factor * len(sources),
    }


def open_lake(data_dir: Path):
    """A lake in ``data_dir`` with its keys beside it; created on first use.

    The key folder and provider go into this process's environment (it is a benchmark child of
    its own), because the ingest's worker processes rebuild their settings from ``CARELAKE_*``
    variables.
    """
    try:
        from infra.lake import Lake
    except ModuleNotFoundError as error:
        raise StageUnavailable(f"the lake is not part of this build ({error.name})") from None
    from infra.settings import load_settings

    os.environ["CARELAKE_KEYS__KEY_DIR"] = str(Path(data_dir).parent / "keys")
    os.environ["CARELAKE_KEYS__PROVIDER"] = "file"
    return Lake.open(load_settings(data_dir=data_dir))


def ingest(inputs: str, data_dir: str, fhir: str | None = None) -> dict[str, int]:
    """``dlt_pipelines.fhir.pipeline.ingest`` over the scaled FHIR files (``inputs/fhir``), or
    over the folder ``fhir``."""
    try:
        from dlt_pipelines.fhir.pipeline import ingest as run_ingest
    except ModuleNotFoundError as error:
        raise StageUnavailable(f"the ingest is not part of this build ({error.name})") from None
    lake = open_lake(Path(data_dir))
    report = run_ingest(lake, [Path(fhir) if fhir else Path(inputs) / "fhir"])
    return {
        "resources": report.resources, "bytes": report.bytes, "files": report.files,
        "quarantined": sum(report.quarantined.values()),
        "scratch_peak_mb": round(report.scratch_peak_bytes / 2**20, 1),
    }


def _stage(name: str, inputs: str, data_dir: str, sources: list[str]) -> dict[str, Any]:
    """Run stage ``name`` of ``carelake run`` on the lake the ingest benchmark wrote."""
    from infra.stages import STAGES, StageContext, resolve

    function = resolve(dict(STAGES)[name])
    lake = open_lake(Path(data_dir))
    if not lake.tables(str(lake.settings.get("lake.bronze_namespace"))):
        raise StageUnavailable(
            f"the {name} stage needs the lake the ingest writes, and it is empty"
        )
    context = StageContext(settings=lake.settings, lake=lake, sources=sources, progress=False)
    result = function(context)
    if result.status in {"not available", "skipped"}:
        raise StageUnavailable(result.reason or result.status)
    if result.status != "ok":
        raise RuntimeError(f"the {name} stage ended with status {result.status!r}")
    return _numbers(result.details)


def _numbers(details: dict[str, Any]) -> dict[str, Any]:
    """The counts of a stage's details: its top-level numbers."""
    return {
        key: value for key, value in details.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def marts(inputs: str, data_dir: str) -> dict[str, Any]:
    """``infra.marts.build`` on the lake the ingest benchmark wrote."""
    try:
        from infra.marts import build
    except ModuleNotFoundError as error:
        raise StageUnavailable(f"the marts are not part of this build ({error.name})") from None
    lake = open_lake(Path(data_dir))
    if not lake.tables(str(lake.settings.get("lake.bronze_namespace"))):
        raise StageUnavailable("the marts need the lake the ingest writes, and it is empty")
    built = build(lake)
    details = built.as_json() if hasattr(built, "as_json") else built
    return _numbers(details if isinstance(details, dict) else {})


def nlp(inputs: str, data_dir: str) -> dict[str, Any]:
    return _stage("nlp", inputs, data_dir, [])


def vision(inputs: str, data_dir: str) -> dict[str, Any]:
    return _stage("vision", inputs, data_dir, [str(Path(inputs) / "images")])


def drift(inputs: str, data_dir: str) -> dict[str, Any]:
    return _stage("drift", inputs, data_dir, [])
