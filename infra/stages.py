"""The stages of ``carelake run``, in order, and the record each one leaves in the run summary.

A stage is a function ``run(context) -> StageResult`` named here by ``module:function`` and imported
only when it runs, so a stage whose dependencies are missing fails alone, as "not available".
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from infra.errors import StageUnavailable

logger = logging.getLogger(__name__)

STAGES: list[tuple[str, str]] = [
    ("ingest", "dlt_pipelines.fhir.stage:run"),
    ("marts", "infra.marts:run_stage"),
    ("nlp", "ml_pipelines.nlp.stage:run"),
    ("vision", "ml_pipelines.vision.stage:run"),
    ("drift", "ml_pipelines.drift.stage:run"),
]


@dataclass
class StageContext:
    """What a stage gets: settings, the open lake, the sources asked for, earlier results."""

    settings: Any
    lake: Any
    sources: list[str]
    results: dict[str, StageResult] = field(default_factory=dict)
    progress: bool = True


@dataclass
class StageResult:
    status: str  # "ok", "failed", "not available", "skipped"
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 3)}
        if self.reason:
            record["reason"] = self.reason
        record.update(self.details)
        return record


def resolve(target: str):
    module_name, _, function_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise StageUnavailable(
                f"stage module {module_name} is not part of this build") from None
        raise
    return getattr(module, function_name)


def run_stage(name: str, target: str, context: StageContext) -> StageResult:
    started = time.perf_counter()
    try:
        result = resolve(target)(context)
    except StageUnavailable as reason:
        result = StageResult(status="not available", reason=str(reason))
    result.seconds = time.perf_counter() - started
    logger.info("stage %s: %s in %.1f s", name, result.status, result.seconds)
    return result
