"""The ``vision`` stage of ``carelake run``: score the lake's chest X-rays in a ZenML pipeline.

The stage answers "not available" with the reason, and writes nothing, when the weights are
absent (``weights not available: put <file> in <folder>``) or are not the pinned file. It never
scores with an untrained network. With no imported images and no bronze table that can hold an
image attachment it is "skipped". Otherwise the pipeline lists new image attachments of the bronze
layer, then scores every image not yet scored by these weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from infra.stages import StageContext, StageResult
from ml_pipelines.vision import lake_access, tables
from ml_pipelines.vision.attachments import bronze_tables
from ml_pipelines.vision.options import VisionOptions
from ml_pipelines.vision.weights import model_spec, verify_weights
from ml_pipelines.zenml_env import use_local_zenml

logger = logging.getLogger(__name__)

SOURCE_ROOT = Path(__file__).resolve().parents[2]
NO_IMAGES = "no images in the lake: import them with `carelake images import FOLDER`"


def _zenml_source_root() -> None:
    # ZenML resolves steps from a source root, by default the folder of the main script, which
    # is wrong for the console script and absent for ``python -c``: use carelake's own root
    os.environ.setdefault("ZENML_CUSTOM_SOURCE_ROOT", str(SOURCE_ROOT))
    from zenml.utils import source_utils

    source_utils.set_custom_source_root(os.environ["ZENML_CUSTOM_SOURCE_ROOT"])


def run(context: StageContext) -> StageResult:
    options = VisionOptions.from_settings(context.settings)
    lake = context.lake

    # before anything else: without the right weights there is nothing honest to produce
    verify_weights(model_spec(options.model), cache_dir=options.cache_dir,
                   pinned_sha256=options.weights_sha256)
    if not lake.has_table(tables.IMAGES_TABLE) and not bronze_tables(lake):
        return StageResult(status="skipped", reason=NO_IMAGES)

    use_local_zenml(lake.data_dir)
    _zenml_source_root()
    from ml_pipelines.pipelines.vision import run_vision_pipeline

    summary = run_vision_pipeline(lake_access.register(lake), options.as_json())
    details = {key: summary[key] for key in ("images", "scored", "skipped", "already_scored",
                                              "findings", "model_id", "weights_sha256",
                                              "run_id")}
    details["attachments_listed"] = summary["attachments"]["imported"]
    return StageResult(status="ok", details=details)
