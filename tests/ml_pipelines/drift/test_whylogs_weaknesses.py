"""Why decisions use exact tests: whylogs' sketch chi-square on windows of unequal size.

A random 300 images as the reference and the other 111,820 as the current window are one
population. whylogs' chi-square takes the small reference's proportions as exact (and truncates
the expected counts), so it reports drift of the sex balance in every such split; the
homogeneity test, in which both windows vary, does not.
"""

import numpy as np

from ml_pipelines.drift import profiles
from ml_pipelines.drift.compare import compare
from ml_pipelines.drift.config import DriftConfig

COLUMNS = ["age_years", "sex", "finding:hernia"]


def test_sketch_chi_square_alarms_on_unequal_random_windows_and_ours_does_not(chestxray):
    sketch_alarms, exact_alarms = 0, 0
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(len(chestxray.frame))
        small = chestxray.with_frame(chestxray.frame.iloc[order[:300]])
        large = chestxray.with_frame(chestxray.frame.iloc[order[300:]])

        scores = profiles.whylogs_scores(
            profiles.profile_frame(small, columns=COLUMNS),
            profiles.profile_frame(large, columns=COLUMNS),
            chestxray,
        )
        ours = compare(small, large, config=DriftConfig(min_effect_size=0.0))

        sketch_alarms += scores["sex"]["whylogs_chi-square_p_value"] < 0.05
        exact_alarms += ours.feature("sex").p_value < 0.05
    assert (sketch_alarms, exact_alarms) == (5, 0)
