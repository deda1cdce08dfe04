"""Step: load the configured MedCAT model pack, or build one from the lake's codings."""

from __future__ import annotations

from typing import Any

from zenml import step

from ml_pipelines.nlp import jobs


@step(enable_cache=False)
def prepare_model(
    data_dir: str, model_pack: str, concepts_dir: str, linker: str
) -> dict[str, Any]:
    return jobs.prepare_model(
        jobs.open_lake(data_dir), model_pack=model_pack, concepts_dir=concepts_dir, linker=linker
    )
