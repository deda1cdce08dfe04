"""Compare a reference window with a current one, feature by feature, and decide what drifted.

Each feature gets a two-sample test on exact data (KS on the raw values of a numeric feature,
a contingency test on the counts of a category or flag), effect sizes beside the p-value
(``effect_h``, Hellinger distance, PSI, and for a flag the prevalence difference with Newcombe's
interval), and a p-value adjusted across all features. A feature drifted when its adjusted
p-value is at most ``alpha`` and its ``effect_h`` reaches ``min_effect_size``: significant and
large enough to matter.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml_pipelines.drift import naming, statistics
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.features import FeatureSet

logger = logging.getLogger(__name__)

MAX_PLOTTED_CATEGORIES = 12


@dataclass
class FeatureDrift:
    """The comparison of one feature between the two windows."""

    feature: str
    label: str
    kind: str
    reference_n: int
    current_n: int
    test: str
    statistic: float
    p_value: float
    effect_h: float
    hellinger: float
    psi: float
    reference_value: float
    current_value: float
    difference: float
    difference_low: float | None = None
    difference_high: float | None = None
    adjusted_p: float = 1.0
    drifted: bool = False
    description: str = ""
    bins: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """As a dict; an infinite statistic (Fisher's odds ratio with an empty cell) is None."""
        record = asdict(self)
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                record[key] = None
        return record


@dataclass
class Comparison:
    """All features of one reference-current comparison, and what drifted."""

    feature_set: str
    reference: str
    current: str
    reference_units: int
    current_units: int
    unit_noun: str
    config: DriftConfig
    features: list[FeatureDrift]
    appeared: list[str] = field(default_factory=list)
    disappeared: list[str] = field(default_factory=list)
    untested: int = 0

    @property
    def drifted(self) -> list[FeatureDrift]:
        return sorted(
            (item for item in self.features if item.drifted), key=lambda item: -item.effect_h
        )

    @property
    def has_drift(self) -> bool:
        return any(item.drifted for item in self.features)

    def feature(self, name: str) -> FeatureDrift:
        for item in self.features:
            if item.feature == name:
                return item
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "reference": self.reference,
            "current": self.current,
            "reference_units": self.reference_units,
            "current_units": self.current_units,
            "unit_noun": self.unit_noun,
            "config": self.config.as_json(),
            "has_drift": self.has_drift,
            "drifted": [item.description for item in self.drifted],
            "appeared": self.appeared,
            "disappeared": self.disappeared,
            "untested_flags": self.untested,
            "features": [item.as_json() for item in self.features],
        }


def compare(
    reference: FeatureSet,
    current: FeatureSet,
    *,
    config: DriftConfig,
    reference_name: str = "reference",
    current_name: str = "current",
) -> Comparison:
    """Compare every feature of ``current`` with ``reference`` and mark what drifted."""
    reference = reference.aligned_with(current)
    current = current.aligned_with(reference)
    records: list[FeatureDrift] = []
    appeared: list[tuple[int, str]] = []
    disappeared: list[tuple[int, str]] = []
    untested = 0

    for column in reference.numeric:
        record = _compare_numeric(reference, current, column, config=config)
        if record is not None:
            records.append(record)
    for column in reference.categorical:
        records.append(_compare_categorical(reference, current, column))
    flags = list(reference.flags)
    reference_sums = reference.frame[flags].sum(axis=0) if flags else {}
    current_sums = current.frame[flags].sum(axis=0) if flags else {}
    for column in flags:
        reference_hits = int(reference_sums[column])
        current_hits = int(current_sums[column])
        change = _presence_change(reference, current, column, reference_hits, current_hits)
        if change is not None:
            (appeared if reference_hits == 0 else disappeared).append(change)
        if reference_hits + current_hits < config.min_count:
            untested += 1
            continue
        records.append(_compare_flag(reference, current, column, reference_hits, current_hits))

    adjusted = statistics.adjust_p_values(
        [record.p_value for record in records], method=config.correction
    )
    for record, adjusted_p in zip(records, adjusted, strict=True):
        record.adjusted_p = float(adjusted_p)
        record.drifted = bool(
            adjusted_p <= config.alpha and record.effect_h >= config.min_effect_size
        )

    comparison = Comparison(
        feature_set=reference.name,
        reference=reference_name,
        current=current_name,
        reference_units=len(reference.frame),
        current_units=len(current.frame),
        unit_noun=reference.unit_noun,
        config=config,
        features=records,
        appeared=[line for _, line in sorted(appeared, key=lambda pair: -pair[0])],
        disappeared=[line for _, line in sorted(disappeared, key=lambda pair: -pair[0])],
        untested=untested,
    )
    logger.info(
        "compared %s %s (%d %s) with %s (%d): %d features tested, %d drifted, %d appeared",
        reference.name,
        current_name,
        comparison.current_units,
        reference.unit_noun,
        reference_name,
        comparison.reference_units,
        len(records),
        len(comparison.drifted),
        len(appeared),
    )
    return comparison


def _presence_change(
    reference: FeatureSet,
    current: FeatureSet,
    column: str,
    reference_hits: int,
    current_hits: int,
) -> tuple[int, str] | None:
    """(count, line) for a flag absent from one of the windows, else None."""
    if reference_hits == 0 and current_hits > 0:
        return current_hits, naming.describe_appeared(
            reference.label(column),
            unit_noun=reference.unit_noun,
            reference_total=len(reference.frame),
            current_hits=current_hits,
            current_total=len(current.frame),
        )
    if current_hits == 0 and reference_hits > 0:
        return reference_hits, naming.describe_disappeared(
            reference.label(column),
            unit_noun=reference.unit_noun,
            reference_hits=reference_hits,
            reference_total=len(reference.frame),
            current_total=len(current.frame),
        )
    return None


def _compare_numeric(
    reference: FeatureSet, current: FeatureSet, column: str, *, config: DriftConfig
) -> FeatureDrift | None:
    reference_values = reference.frame[column].dropna().to_numpy(dtype=float)
    current_values = current.frame[column].dropna().to_numpy(dtype=float)
    if len(reference_values) < 2 or len(current_values) < 2:
        return None
    test = statistics.ks_test(reference_values, current_values)
    reference_counts, current_counts, edges = statistics.binned_counts(
        reference_values, current_values, bins=config.bins
    )
    reference_median = float(np.median(reference_values))
    current_median = float(np.median(current_values))
    label = reference.label(column)
    return FeatureDrift(
        feature=column,
        label=label,
        kind="numeric",
        reference_n=len(reference_values),
        current_n=len(current_values),
        test=test.test,
        statistic=test.statistic,
        p_value=test.p_value,
        effect_h=statistics.effect_h(reference_counts, current_counts),
        hellinger=statistics.hellinger(reference_counts, current_counts),
        psi=statistics.population_stability_index(reference_counts, current_counts),
        reference_value=reference_median,
        current_value=current_median,
        difference=current_median - reference_median,
        description=naming.describe_numeric(
            label,
            unit=reference.units.get(column, ""),
            reference_median=reference_median,
            current_median=current_median,
        ),
        bins=_numeric_bins(reference_counts, current_counts, edges),
    )


def _compare_categorical(reference: FeatureSet, current: FeatureSet, column: str) -> FeatureDrift:
    reference_counts = reference.frame[column].astype("string").fillna("unknown").value_counts()
    current_counts = current.frame[column].astype("string").fillna("unknown").value_counts()
    categories = sorted(set(reference_counts.index) | set(current_counts.index))
    reference_vector = reference_counts.reindex(categories, fill_value=0).to_numpy()
    current_vector = current_counts.reindex(categories, fill_value=0).to_numpy()
    test = statistics.homogeneity_test(reference_vector, current_vector)
    reference_shares = statistics.proportions(reference_vector)
    current_shares = statistics.proportions(current_vector)
    largest = int(np.argmax(np.abs(current_shares - reference_shares)))
    label = reference.label(column)
    return FeatureDrift(
        feature=column,
        label=label,
        kind="categorical",
        reference_n=int(reference_vector.sum()),
        current_n=int(current_vector.sum()),
        test=test.test,
        statistic=test.statistic,
        p_value=test.p_value,
        effect_h=statistics.effect_h(reference_vector, current_vector),
        hellinger=statistics.hellinger(reference_vector, current_vector),
        psi=statistics.population_stability_index(reference_vector, current_vector),
        reference_value=float(reference_shares[largest]),
        current_value=float(current_shares[largest]),
        difference=float(current_shares[largest] - reference_shares[largest]),
        description=naming.describe_category(
            label,
            category=categories[largest],
            unit_noun=reference.unit_noun,
            reference_share=float(reference_shares[largest]),
            current_share=float(current_shares[largest]),
        ),
        bins=_category_bins(categories, reference_shares, current_shares),
    )


def _compare_flag(
    reference: FeatureSet,
    current: FeatureSet,
    column: str,
    reference_hits: int,
    current_hits: int,
) -> FeatureDrift:
    reference_total, current_total = len(reference.frame), len(current.frame)
    reference_vector = np.array([reference_total - reference_hits, reference_hits])
    current_vector = np.array([current_total - current_hits, current_hits])
    test = statistics.homogeneity_test(reference_vector, current_vector)
    reference_share = reference_hits / reference_total
    current_share = current_hits / current_total
    interval = statistics.prevalence_difference_interval(
        reference_hits, reference_total, current_hits, current_total
    )
    label = reference.label(column)
    return FeatureDrift(
        feature=column,
        label=label,
        kind="flag",
        reference_n=reference_total,
        current_n=current_total,
        test=test.test,
        statistic=test.statistic,
        p_value=test.p_value,
        effect_h=statistics.effect_h(reference_vector, current_vector),
        hellinger=statistics.hellinger(reference_vector, current_vector),
        psi=statistics.population_stability_index(reference_vector, current_vector),
        reference_value=reference_share,
        current_value=current_share,
        difference=current_share - reference_share,
        difference_low=interval[0],
        difference_high=interval[1],
        description=naming.describe_flag(
            label,
            unit_noun=reference.unit_noun,
            reference_share=reference_share,
            current_share=current_share,
            interval=interval,
        ),
        bins=[
            {"label": "without", "reference": 1 - reference_share, "current": 1 - current_share},
            {"label": "with", "reference": reference_share, "current": current_share},
        ],
    )


def _numeric_bins(
    reference_counts: np.ndarray, current_counts: np.ndarray, edges: np.ndarray
) -> list[dict[str, Any]]:
    reference_shares = statistics.proportions(reference_counts)
    current_shares = statistics.proportions(current_counts)
    bounds = ["", *[naming.number(edge) for edge in edges], ""]
    bins = []
    for index in range(len(reference_counts)):
        low, high = bounds[index], bounds[index + 1]
        label = f"< {high}" if not low else (f">= {low}" if not high else f"{low} to {high}")
        bins.append(
            {
                "label": label,
                "reference": float(reference_shares[index]),
                "current": float(current_shares[index]),
            }
        )
    return bins


def _category_bins(
    categories: list[str], reference_shares: np.ndarray, current_shares: np.ndarray
) -> list[dict[str, Any]]:
    order = np.argsort(-(reference_shares + current_shares))[:MAX_PLOTTED_CATEGORIES]
    return [
        {
            "label": categories[index],
            "reference": float(reference_shares[index]),
            "current": float(current_shares[index]),
        }
        for index in order
    ]


def split_at_random(features: FeatureSet, *, seed: int) -> tuple[FeatureSet, FeatureSet]:
    """Two random halves of one window: by construction, no drift between them."""
    order = np.random.default_rng(seed).permutation(len(features.frame))
    half = len(order) // 2
    frame = features.frame
    first = features.with_frame(frame.iloc[np.sort(order[:half])].reset_index(drop=True))
    second = features.with_frame(frame.iloc[np.sort(order[half:])].reset_index(drop=True))
    return first, second


@dataclass(frozen=True)
class FalseAlarms:
    """How often random halves of one window were reported as drifted."""

    splits: int
    alarms: int
    level: float
    features_flagged: dict[str, int]

    @property
    def rate(self) -> float:
        return self.alarms / self.splits if self.splits else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "splits": self.splits,
            "alarms": self.alarms,
            "rate": self.rate,
            "level": self.level,
            "within_level": self.rate <= self.level,
            "features_flagged": self.features_flagged,
        }


def false_alarm_rate(features: FeatureSet, *, config: DriftConfig, splits: int) -> FalseAlarms:
    """Split one window at random ``splits`` times; count the splits reported as drift."""
    quiet = logging.getLogger(__name__)
    previous = quiet.level
    quiet.setLevel(logging.WARNING)
    alarms = 0
    flagged: dict[str, int] = {}
    try:
        for index in range(splits):
            first, second = split_at_random(features, seed=config.seed + index)
            comparison = compare(first, second, config=config)
            if comparison.has_drift:
                alarms += 1
                for item in comparison.drifted:
                    flagged[item.feature] = flagged.get(item.feature, 0) + 1
    finally:
        quiet.setLevel(previous)
    result = FalseAlarms(splits=splits, alarms=alarms, level=config.alpha, features_flagged=flagged)
    logger.info(
        "false alarms of %s over %d random splits: %d (rate %.3f, level %.3f)",
        features.name,
        splits,
        alarms,
        result.rate,
        config.alpha,
    )
    return result

