import math

import numpy as np
import pytest

from infra.errors import ConfigError
from ml_pipelines.drift import statistics


def test_effect_h_is_cohens_h_for_a_prevalence():
    # Cohen's h for 0% against 10%: 2 * asin(sqrt(0.1)).
    assert statistics.effect_h(np.array([100, 0]), np.array([90, 10])) == pytest.approx(
        2 * math.asin(math.sqrt(0.1)), abs=1e-12
    )
    assert statistics.effect_h(np.array([5, 5]), np.array([50, 50])) == 0.0


def test_hellinger_and_psi_of_known_counts():
    reference, current = np.array([50, 50]), np.array([90, 10])
    assert statistics.hellinger(reference, current) == pytest.approx(
        math.sqrt(1 - (math.sqrt(0.45) + math.sqrt(0.05))), abs=1e-12
    )
    # Half a count added to each bin: p = (0.5, 0.5), q = (90.5, 10.5) / 101.
    q = np.array([90.5, 10.5]) / 101
    expected = float(np.sum((q - 0.5) * np.log(q / 0.5)))
    assert statistics.population_stability_index(reference, current) == pytest.approx(expected)
    assert round(expected, 6) == 0.853059


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), method 10: 56/70 against 48/80 gives 0.0524 to 0.3339 for p1 - p2.
    low, high = statistics.prevalence_difference_interval(48, 80, 56, 70)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_wilson_interval_of_zero_successes():
    low, high = statistics.wilson_interval(0, 100)
    assert low == pytest.approx(0.0, abs=1e-15) and high == pytest.approx(0.0370, abs=1e-4)


def test_benjamini_hochberg_and_holm_adjustments():
    p_values = [0.01, 0.04, 0.03, 0.005]
    assert statistics.adjust_p_values(p_values, method="bh") == pytest.approx(
        [0.02, 0.04, 0.04, 0.02]
    )
    assert statistics.adjust_p_values(p_values, method="holm") == pytest.approx(
        [0.03, 0.06, 0.06, 0.02]
    )
    with pytest.raises(ConfigError, match="drift.correction"):
        statistics.adjust_p_values(p_values, method="bonferroni-ish")


def test_homogeneity_test_uses_fisher_for_sparse_flags_and_chi_square_otherwise():
    sparse = statistics.homogeneity_test(np.array([700, 0]), np.array([88, 2]))
    assert sparse.test == "fisher"
    # Both flagged units fall in the current window: (90 / 790) * (89 / 789).
    assert sparse.p_value == pytest.approx(90 / 790 * 89 / 789, rel=1e-9)
    dense = statistics.homogeneity_test(np.array([400, 300, 300]), np.array([40, 30, 30]))
    assert dense.test == "chi-square" and dense.p_value == pytest.approx(1.0)


def test_rare_categories_are_pooled_before_the_chi_square():
    reference, current = statistics.merge_rare(np.array([500, 480, 2, 1]), np.array([50, 45, 0, 1]))
    assert reference.tolist() == [500, 480, 3] and current.tolist() == [50, 45, 1]
