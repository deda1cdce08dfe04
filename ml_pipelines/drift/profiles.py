"""whylogs profiles per window, stored encrypted, and whylogs' own drift scores beside ours.

A profile summarizes one window of one feature set: counts, KLL quantile sketches of numeric
features and frequent items of categories and flags. Only the feature columns are profiled,
never the patient key or the dates. Profiles are written through the lake's encrypted
filesystem at ``ml/drift/profiles/<feature-set>/<window>/<run>.bin``.

whylogs' drift algorithms run on these sketches. They are recorded next to carelake's exact
tests for comparison, not used for the decision: the sketch KS reports drift between random
halves of a large window, and the sketch chi-square turns any category missing from the
reference into a p-value of zero (``docs/drift.md`` has the measurements).
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import pandas as pd

from ml_pipelines.drift.features import FeatureSet

logger = logging.getLogger(__name__)

PROFILE_ROOT = "ml/drift/profiles"


def _whylogs():
    import whylogs

    return whylogs


def profiled_columns(features: FeatureSet, *, min_count: int) -> list[str]:
    """Numeric and categorical features, and the flags set in at least ``min_count`` units."""
    flags = [c for c in features.flags if int(features.frame[c].sum()) >= min_count]
    return [*features.numeric, *features.categorical, *flags]


def profile_frame(features: FeatureSet, *, columns: list[str] | None = None) -> Any:
    """A whylogs ``DatasetProfileView`` of the feature columns of ``features``."""
    wanted = columns if columns is not None else list(features.features)
    parts = {}
    for column in wanted:
        values = features.frame[column]
        kind = features.kind(column)
        if kind == "numeric":
            parts[column] = values.astype(float)
        elif kind == "categorical":
            parts[column] = values.astype("string").fillna("unknown").astype(object)
        else:
            parts[column] = values.astype("int64")
    frame = pd.DataFrame(parts, index=features.frame.index)
    return _whylogs().log(pandas=frame).view()


def path_segment(text: str) -> str:
    """A window or run name as one safe path segment ("2011..2019" becomes "2011_to_2019")."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text.replace("..", "_to_")) or "all"


def profile_path(feature_set: str, window: str, run_id: str) -> str:
    folder = f"{PROFILE_ROOT}/{path_segment(feature_set)}/{path_segment(window)}"
    return f"{folder}/{path_segment(run_id)}.bin"


def write_profile(fs: Any, path: str, view: Any) -> int:
    """Write a serialized profile through ``fs`` (the lake's encrypted filesystem); returns its
    size in bytes."""
    data = view.serialize()
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(data)
    return len(data)


def read_profile(fs: Any, path: str) -> Any:
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    with fs.open(path, "rb") as handle:
        return DatasetProfileView.deserialize(handle.read())


def store_window_profiles(
    fs: Any,
    features: FeatureSet,
    windows: dict[str, FeatureSet],
    *,
    run_id: str,
    min_count: int,
) -> dict[str, str]:
    """Profile each window over the same columns and store it; returns window -> path."""
    columns = profiled_columns(features, min_count=min_count)
    paths: dict[str, str] = {}
    total = 0
    for window, window_features in windows.items():
        path = profile_path(features.name, window, run_id)
        total += write_profile(fs, path, profile_frame(window_features, columns=columns))
        paths[window] = path
    logger.info(
        "stored %d whylogs profiles of %s for run %s (%d bytes)",
        len(paths),
        features.name,
        run_id,
        total,
    )
    return paths


def whylogs_scores(
    reference_view: Any, current_view: Any, features: FeatureSet
) -> dict[str, dict[str, float | None]]:
    """whylogs' KS and Hellinger (numeric) and chi-square (categories, flags) per feature."""
    from whylogs.viz.drift.column_drift_algorithms import (
        KS,
        ChiSquare,
        Hellinger,
        calculate_drift_scores,
    )

    scores: dict[str, dict[str, float | None]] = {}
    present = set(reference_view.get_columns()) & set(current_view.get_columns())
    numeric = [column for column in features.numeric if column in present]
    discrete = [c for c in (*features.categorical, *features.flags) if c in present]
    runs = {
        "ks": {column: KS() for column in numeric},
        "hellinger": {column: Hellinger() for column in numeric},
        "chi-square": {column: ChiSquare() for column in discrete},
    }
    for algorithm, drift_map in runs.items():
        if not drift_map:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = calculate_drift_scores(
                target_view=current_view, reference_view=reference_view, drift_map=drift_map
            )
        for column in drift_map:
            score = result.get(column) or {}
            entry = scores.setdefault(column, {})
            entry[f"whylogs_{algorithm}_statistic"] = _finite(score.get("statistic"))
            if algorithm != "hellinger":
                entry[f"whylogs_{algorithm}_p_value"] = _finite(score.get("pvalue"))
    return scores


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None
