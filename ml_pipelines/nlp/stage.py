"""The ``nlp`` stage of ``carelake run``: the ZenML NLP pipeline over the lake's notes.

Settings read (``[nlp]``): ``model_pack`` (a MedCAT pack to use instead of building one),
``synthea_concepts_dir`` (a shared data folder whose Synthea concept list widens the built concept
database; empty: none), ``linker`` (``primary_name``, the default, or ``context``: MedCAT's
context linker with a corpus vocabulary, trained on the notes), ``embeddings`` (embed notes with
sentence-transformers; default true), ``evaluation_data_dir`` (the public data folder the
evaluation figures are computed from at each run; empty: only the Synthea coding check).
"""

from __future__ import annotations

import logging
from typing import Any

from infra.errors import ConfigError, StageUnavailable
from infra.stages import StageContext, StageResult
from ml_pipelines.nlp import jobs

logger = logging.getLogger(__name__)


def _flag(value: Any, *, name: str) -> bool:
    """A boolean setting, also when it came from the environment as text."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if str(value).strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def run_pipeline(settings: Any, *, evaluation_data_dir: str | None = None) -> dict[str, Any]:
    """Run the NLP pipeline on the lake of ``settings``; returns the figures it recorded. The
    evaluation figures are computed when ``evaluation_data_dir`` (else the setting
    ``nlp.evaluation_data_dir``) names the public data folder."""
    from ml_pipelines.zenml_env import use_local_zenml

    use_local_zenml(settings.data_dir)
    try:
        from ml_pipelines.pipelines.nlp import nlp_pipeline
    except ModuleNotFoundError as error:
        raise StageUnavailable(f"the NLP pipeline needs {error.name}: pip install zenml") from None

    pipeline_run = nlp_pipeline(
        data_dir=str(settings.data_dir),
        model_pack=str(settings.get("nlp.model_pack", "") or ""),
        concepts_dir=str(settings.get("nlp.synthea_concepts_dir", "") or ""),
        linker=str(settings.get("nlp.linker", "primary_name") or "primary_name"),
        embeddings=_flag(settings.get("nlp.embeddings", True), name="nlp.embeddings"),
        evaluation_data_dir=str(
            evaluation_data_dir or settings.get("nlp.evaluation_data_dir", "") or ""),
    )
    from zenml.client import Client

    run = Client().get_pipeline_run(pipeline_run.id)
    if run.status.value != "completed":
        raise RuntimeError(f"the NLP pipeline run {run.id} ended {run.status.value}")
    figures = run.steps["record_model"].output.load()
    figures["pipeline_run_id"] = str(run.id)
    return figures


def run(context: StageContext) -> StageResult:
    snapshots = jobs.note_snapshots(context.lake)
    if not any(snapshot is not None for snapshot in snapshots.values()):
        return StageResult(status="skipped",
                           reason="the lake holds no DocumentReference or DiagnosticReport notes")
    figures = run_pipeline(context.settings)
    counts = figures["run"]
    details = {
        "pipeline_run_id": figures["pipeline_run_id"],
        "notes": counts["notes"],
        "notes_by_status": counts["notes_by_status"],
        "mentions": counts["mentions"],
        "mentions_by_context": counts["mentions_by_context"],
        "embeddings": counts["embeddings"],
        "synthea_coding_check": {key: figures["synthea_coding_check"][key]
                                 for key in ("precision", "recall")},
    }
    return StageResult(status="ok", details=details)
