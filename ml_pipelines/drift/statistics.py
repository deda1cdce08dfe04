"""Two-sample tests, effect sizes and multiple-testing corrections that drift detection stands on.

Every test here runs on the raw values or on exact counts, not on sketches: whylogs' own KS works
from KLL quantile sketches, whose rank error alone makes large samples look different, and its
chi-square treats the reference proportions as exact and truncates expected counts, which
misleads when the two windows differ in size. ``docs/drift.md`` shows both effects, measured.

The effect size that gates drift is ``effect_h``: twice the Bhattacharyya angle between two
distributions, ``2 * arccos(sum(sqrt(p * q)))``. For a prevalence it is exactly Cohen's h; for a
normal shifted by d standard deviations it is close to |d|. One threshold therefore means the same
thing for ages, sexes, encounter classes and condition flags.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from infra.errors import ConfigError

MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class TestResult:
    """A two-sample test: its name, statistic and p-value."""

    test: str
    statistic: float
    p_value: float


def quantile_edges(reference: np.ndarray, current: np.ndarray, *, bins: int) -> np.ndarray:
    """Inner bin edges at the pooled sample's quantiles, so both windows are binned alike."""
    pooled = np.concatenate([reference, current])
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)[1:-1]))
    return edges


def binned_counts(
    reference: np.ndarray, current: np.ndarray, *, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of both windows over the pooled-quantile bins; returns (reference, current, edges).

    A value equal to an edge falls in the bin above it, so integer ages keep whole years together.
    """
    edges = quantile_edges(reference, current, bins=bins)
    reference_bins = np.searchsorted(edges, reference, side="right")
    current_bins = np.searchsorted(edges, current, side="right")
    size = len(edges) + 1
    return (
        np.bincount(reference_bins, minlength=size),
        np.bincount(current_bins, minlength=size),
        edges,
    )


def proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros_like(counts, dtype=float)


def hellinger(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Hellinger distance between two count vectors over the same bins, in [0, 1]."""
    p, q = proportions(reference_counts), proportions(current_counts)
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def effect_h(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Twice the Bhattacharyya angle: Cohen's h for a prevalence, about |d| for a shifted normal."""
    p, q = proportions(reference_counts), proportions(current_counts)
    coefficient = float(np.clip(np.sum(np.sqrt(p * q)), 0.0, 1.0))
    return 2.0 * math.acos(coefficient)


def population_stability_index(
    reference_counts: np.ndarray, current_counts: np.ndarray, *, smoothing: float = 0.5
) -> float:
    """PSI, with ``smoothing`` counts added to every bin so that an empty bin does not make it
    infinite."""
    bins = len(reference_counts)
    p = (reference_counts + smoothing) / (reference_counts.sum() + smoothing * bins)
    q = (current_counts + smoothing) / (current_counts.sum() + smoothing * bins)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_test(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test on the raw values: exact for small samples, the
    asymptotic distribution where scipy's exact computation does not converge (it says so in a
    warning, silenced here because the fallback is the documented behaviour)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        result = stats.ks_2samp(reference, current, method="auto")
    return TestResult("ks", float(result.statistic), float(result.pvalue))


def merge_rare(
    reference_counts: np.ndarray, current_counts: np.ndarray, *, min_expected: float = MIN_EXPECTED
) -> tuple[np.ndarray, np.ndarray]:
    """Pool the categories whose expected count falls below ``min_expected`` into one.

    The chi-square approximation needs expected counts of about five; rare categories are tested
    together instead of one by one. Categories empty in both windows are dropped.
    """
    keep = (reference_counts + current_counts) > 0
    reference_counts, current_counts = reference_counts[keep], current_counts[keep]
    totals = reference_counts + current_counts
    share_small = min(reference_counts.sum(), current_counts.sum()) / max(totals.sum(), 1)
    rare = totals * share_small < min_expected
    if rare.sum() <= 1:
        return reference_counts, current_counts
    merged_reference = np.append(reference_counts[~rare], reference_counts[rare].sum())
    merged_current = np.append(current_counts[~rare], current_counts[rare].sum())
    return merged_reference, merged_current


def homogeneity_test(reference_counts: np.ndarray, current_counts: np.ndarray) -> TestResult:
    """Are two windows' category counts drawn from one distribution? Both samples vary.

    A 2 x k contingency test: Fisher's exact test for two categories with a small expected
    count, otherwise Pearson's chi-square of homogeneity after pooling rare categories. Unlike a
    goodness-of-fit test against reference proportions, it stays calibrated when the windows
    differ in size.
    """
    reference_counts = np.asarray(reference_counts, dtype=np.int64)
    current_counts = np.asarray(current_counts, dtype=np.int64)
    if reference_counts.sum() == 0 or current_counts.sum() == 0:
        return TestResult("none", 0.0, 1.0)
    table = np.vstack([reference_counts, current_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return TestResult("none", 0.0, 1.0)
    if table.shape[1] == 2:
        expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
        if expected.min() < MIN_EXPECTED:
            result = stats.fisher_exact(table)
            return TestResult("fisher", float(result.statistic), float(result.pvalue))
    merged_reference, merged_current = merge_rare(table[0], table[1])
    if len(merged_reference) < 2:
        return TestResult("none", 0.0, 1.0)
    merged = np.vstack([merged_reference, merged_current])
    if merged.shape[1] == 2:
        expected = np.outer(merged.sum(axis=1), merged.sum(axis=0)) / merged.sum()
        if expected.min() < MIN_EXPECTED:
            result = stats.fisher_exact(merged)
            return TestResult("fisher", float(result.statistic), float(result.pvalue))
        return _chi_square_two_by_two(merged)
    chi2 = stats.chi2_contingency(merged, correction=False)
    return TestResult("chi-square", float(chi2.statistic), float(chi2.pvalue))


def _chi_square_two_by_two(table: np.ndarray) -> TestResult:
    """Pearson's chi-square of a 2 x 2 table in closed form (one degree of freedom)."""
    (a, b), (c, d) = table.astype(float)
    total = a + b + c + d
    statistic = total * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    return TestResult("chi-square", statistic, math.erfc(math.sqrt(statistic / 2)))


@functools.lru_cache(maxsize=8)
def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, total: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if total == 0:
        return 0.0, 1.0
    z = _z(confidence)
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    half /= 1 + z * z / total
    return max(0.0, centre - half), min(1.0, centre + half)


def prevalence_difference_interval(
    reference_hits: int,
    reference_total: int,
    current_hits: int,
    current_total: int,
    *,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of (current share - reference share)."""
    p1 = reference_hits / reference_total if reference_total else 0.0
    p2 = current_hits / current_total if current_total else 0.0
    low1, high1 = wilson_interval(reference_hits, reference_total, confidence=confidence)
    low2, high2 = wilson_interval(current_hits, current_total, confidence=confidence)
    difference = p2 - p1
    lower = difference - math.sqrt((p2 - low2) ** 2 + (high1 - p1) ** 2)
    upper = difference + math.sqrt((high2 - p2) ** 2 + (p1 - low1) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def adjust_p_values(p_values: list[float], *, method: str) -> list[float]:
    """Adjusted p-values: "bh" (Benjamini-Hochberg), "holm" (Holm-Bonferroni) or "none".

    Under the global null (two random halves of one window) Benjamini-Hochberg bounds the chance
    of any false alarm by alpha; Holm bounds it whatever the dependence between features.
    """
    values = np.asarray(p_values, dtype=float)
    count = len(values)
    if count == 0 or method == "none":
        return values.tolist()
    order = np.argsort(values)
    ranked = values[order]
    if method == "bh":
        scaled = ranked * count / np.arange(1, count + 1)
        adjusted_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    elif method == "holm":
        scaled = ranked * (count - np.arange(count))
        adjusted_sorted = np.maximum.accumulate(scaled)
    else:
        raise ConfigError(
            f"drift.correction is {method!r}: use 'bh', 'holm' or 'none'"
        )
    adjusted = np.empty(count)
    adjusted[order] = np.minimum(adjusted_sorted, 1.0)
    return adjusted.tolist()
