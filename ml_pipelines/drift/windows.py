"""Time windows: label each unit with its month, quarter or year, and cut a feature set by them."""

from __future__ import annotations

import pandas as pd

from infra.errors import ConfigError
from ml_pipelines.drift.features import FeatureSet

WINDOW_KINDS = ("month", "quarter", "year")
WINDOW_COLUMN = "window"


def window_labels(dates: pd.Series, *, window: str) -> pd.Series:
    """"2021", "2021-Q3" or "2021-07" for each date (UTC); missing dates stay missing."""
    if window not in WINDOW_KINDS:
        raise ConfigError(f"drift.window is {window!r}: use one of {', '.join(WINDOW_KINDS)}")
    moments = pd.to_datetime(dates, utc=True, errors="coerce", format="mixed")
    years = moments.dt.year.astype("Int64").astype("string")
    if window == "year":
        return years
    if window == "quarter":
        return years + "-Q" + moments.dt.quarter.astype("Int64").astype("string")
    return years + "-" + moments.dt.month.astype("Int64").astype("string").str.zfill(2)


def with_windows(features: FeatureSet, *, window: str) -> FeatureSet:
    """A copy whose frame carries a ``window`` column; units without a date are left out."""
    frame = features.frame.copy()
    frame[WINDOW_COLUMN] = window_labels(frame[features.date_column], window=window)
    frame = frame.loc[frame[WINDOW_COLUMN].notna()].reset_index(drop=True)
    return features.with_frame(frame)


def window_names(features: FeatureSet) -> list[str]:
    return sorted(features.frame[WINDOW_COLUMN].dropna().unique().tolist())


def select(features: FeatureSet, spec: str) -> FeatureSet:
    """The units of the windows that ``spec`` names.

    ``spec`` is one window ("2019"), an inclusive range ("2011..2019", "2021-Q1..2021-Q4"), or an
    open range ("..2019", "2021.."). Labels of one kind sort in time order, so ranges compare
    them as text.
    """
    labels = features.frame[WINDOW_COLUMN]
    if ".." in spec:
        start, _, end = spec.partition("..")
        mask = pd.Series(True, index=labels.index)
        if start:
            mask &= labels >= start
        if end:
            mask &= labels <= end
    else:
        mask = labels == spec
    chosen = features.subset(mask.fillna(False).astype(bool))
    if chosen.frame.empty:
        raise ConfigError(
            f"window {spec!r} holds no {features.unit_noun} of feature set {features.name!r}: "
            f"pick among {', '.join(window_names(features)[-12:])}"
        )
    return chosen
