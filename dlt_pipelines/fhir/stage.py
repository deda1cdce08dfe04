"""The ingest stage of ``carelake run``: files and folders, or a FHIR server's base URL."""

from __future__ import annotations

from pathlib import Path

from dlt_pipelines.fhir.pipeline import ingest
from infra.stages import StageContext, StageResult

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"


def split_sources(sources: list[str]) -> tuple[list[str], list[str]]:
    urls = [source for source in sources if source.startswith(("http://", "https://"))]
    files = [source for source in sources if source not in urls]
    return files, urls


def run(context: StageContext) -> StageResult:
    bulk = bool(context.settings.get("sources.fhir_bulk.base_url"))
    default = [] if bulk else [str(SAMPLE_DIR / "fhir")]
    files, urls = split_sources(context.sources or default)
    report = ingest(context.lake, files, progress=context.progress, servers=urls, bulk=bulk)
    return StageResult(status="ok", details=report.as_json())
