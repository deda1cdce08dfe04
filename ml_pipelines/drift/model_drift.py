"""Model drift: a model's performance per window, and a drop beyond the threshold.

Two measures: the NLP model's recall against the coded conditions (of the concepts coded in an
encounter, the share its notes' NLP mentions found, negated mentions excluded), and any
predictive model's metric on labelled windows. Both compare the current window with the
reference window; a drop larger than ``model_drop`` is model drift.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)


def recall_by_window(
    coded: pd.DataFrame, mentions: pd.DataFrame, *, window_column: str = "window"
) -> pd.DataFrame:
    """Recall per window of NLP mentions against coded concepts, per encounter.

    ``coded`` has one row per (window, encounter_key, concept); ``mentions`` one row per
    (encounter_key, concept, is_negated). Returns window, coded, found and recall.
    """
    affirmed = mentions.loc[~mentions["is_negated"].astype(bool), ["encounter_key", "concept"]]
    found = coded.merge(affirmed.drop_duplicates(), on=["encounter_key", "concept"], how="left",
                        indicator=True)
    found["is_found"] = found["_merge"] == "both"
    coded_unique = found.drop_duplicates([window_column, "encounter_key", "concept"])
    table = coded_unique.groupby(window_column).agg(
        coded=("concept", "size"), found=("is_found", "sum")
    )
    table["recall"] = table["found"] / table["coded"]
    return table.reset_index()


def metric_drop(
    per_window: pd.DataFrame,
    *,
    model: str,
    metric: str,
    reference: str,
    current: str,
    threshold: float,
    window_column: str = "window",
) -> dict[str, Any]:
    """The drop of ``metric`` from the reference window to the current one, and its verdict."""
    values = per_window.set_index(window_column)[metric]
    before, now = float(values.loc[reference]), float(values.loc[current])
    drop = before - now
    row = {
        "model": model,
        "metric": metric,
        "reference_window": reference,
        "current_window": current,
        "reference": before,
        "current": now,
        "drop": drop,
        "threshold": threshold,
        "drifted": drop > threshold,
    }
    logger.info(
        "model %s %s: %.3f in %s, %.3f in %s (drop %.3f, threshold %.3f)",
        model,
        metric,
        before,
        reference,
        now,
        current,
        drop,
        threshold,
    )
    return row
