"""Model drift: a model's performance in the reference and the current window, and its drop.

Two measures. The NLP model's recall against the coded conditions: of the conditions coded in
encounters whose note the NLP stage processed, the share it found affirmed in that note
(``ml.note_mentions``). And any predictive model's metric on labelled windows. A drop of more
than ``model_drop`` from the reference to the current window is model drift.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ml_pipelines.drift.features import FeatureSet

logger = logging.getLogger(__name__)

MENTIONS_TABLE = "ml.note_mentions"
STATUS_TABLE = "ml.note_status"
PROCESSED_STATUSES = ("ok", "html_stripped", "bytes_replaced")
CONDITION_PREFIX = "condition:"


def coded_conditions(features: FeatureSet, encounters: set[str]) -> pd.DataFrame:
    """(encounter_key, concept_code) of every condition coded in the given encounters."""
    columns = [column for column in features.flags if column.startswith(CONDITION_PREFIX)]
    frame = features.frame.loc[features.frame["encounter_key"].isin(encounters)]
    long = frame.melt(id_vars=["encounter_key"], value_vars=columns, var_name="flag")
    long = long.loc[long["value"] == 1]
    return pd.DataFrame(
        {
            "encounter_key": long["encounter_key"].to_numpy(),
            "concept_code": long["flag"].str.slice(len(CONDITION_PREFIX)).to_numpy(),
        }
    )


def recall(coded: pd.DataFrame, mentions: pd.DataFrame) -> dict[str, float | int]:
    """Share of coded (encounter, concept) pairs with an affirmed mention of that concept."""
    affirmed = mentions.loc[mentions["context"] == "affirmed", ["encounter_key", "concept_code"]]
    pairs = coded.drop_duplicates()
    found = pairs.merge(affirmed.drop_duplicates(), on=["encounter_key", "concept_code"])
    total = len(pairs)
    return {"coded": total, "found": len(found), "recall": len(found) / total if total else 0.0}


def metric_drop(
    *,
    model: str,
    metric: str,
    reference_window: str,
    current_window: str,
    reference: float,
    current: float,
    threshold: float,
) -> dict[str, Any]:
    """The drop of a metric from the reference to the current window, and its verdict."""
    drop = reference - current
    row = {
        "model": model,
        "metric": metric,
        "reference_window": reference_window,
        "current_window": current_window,
        "reference": reference,
        "current": current,
        "drop": drop,
        "threshold": threshold,
        "drifted": drop > threshold,
    }
    logger.info(
        "model %s %s: %.3f in %s, %.3f in %s (drop %.3f, threshold %.3f)",
        model, metric, reference, reference_window, current, current_window, drop, threshold,
    )
    return row


def nlp_recall_drift(
    lake: Any,
    reference: FeatureSet,
    current: FeatureSet,
    *,
    reference_window: str,
    current_window: str,
    threshold: float,
) -> list[dict[str, Any]]:
    """NLP recall against coded conditions in both windows; empty when NLP has not run."""
    if not (lake.has_table(MENTIONS_TABLE) and lake.has_table(STATUS_TABLE)):
        logger.info("no NLP tables in the lake yet: NLP recall drift not measured")
        return []
    status = lake.read_arrow(STATUS_TABLE, columns=("encounter_id", "status")).to_pandas()
    documented = set(status.loc[status["status"].isin(PROCESSED_STATUSES), "encounter_id"])
    mentions = lake.read_arrow(
        MENTIONS_TABLE, columns=("encounter_id", "concept_code", "context")
    ).to_pandas().rename(columns={"encounter_id": "encounter_key"})

    before = recall(coded_conditions(reference, documented), mentions)
    now = recall(coded_conditions(current, documented), mentions)
    if not before["coded"] or not now["coded"]:
        logger.info("no coded conditions in documented encounters of both windows: NLP recall "
                    "drift not measured")
        return []
    return [
        metric_drop(
            model="nlp",
            metric="recall against coded conditions",
            reference_window=reference_window,
            current_window=current_window,
            reference=float(before["recall"]),
            current=float(now["recall"]),
            threshold=threshold,
        )
    ]
