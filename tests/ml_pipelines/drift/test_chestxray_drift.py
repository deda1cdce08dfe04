"""NIH ChestX-ray14 metadata: PA against AP views, and shifts injected into a copy of PA."""

import pytest

from ml_pipelines.drift.compare import compare, split_at_random
from ml_pipelines.drift.config import DriftConfig


@pytest.fixture(scope="module")
def views(chestxray):
    frame = chestxray.frame
    return (
        chestxray.subset(frame["view_position"] == "PA"),
        chestxray.subset(frame["view_position"] == "AP"),
    )


def test_pa_against_ap_shows_the_finding_prevalence_and_age_shift(views):
    posteroanterior, anteroposterior = views

    result = compare(posteroanterior, anteroposterior, config=DriftConfig(),
                     reference_name="PA", current_name="AP")

    assert (result.reference_units, result.current_units) == (67310, 44810)
    assert sorted(item.feature for item in result.drifted) == [
        "age_years",
        "finding:atelectasis",
        "finding:consolidation",
        "finding:edema",
        "finding:effusion",
        "finding:fibrosis",
        "finding:infiltration",
        "finding:no_finding",
        "follow_up",
    ]
    named = [item.description for item in result.drifted]
    assert (
        "Effusion in 9.8% of images, now 15% (difference +5.2 points, 95% CI +4.8 to +5.6)"
        in named
    )
    assert (
        "Infiltration in 14% of images, now 24% (difference +9.6 points, 95% CI +9.2 to +10.1)"
        in named
    )
    assert "median age down 1 year (from 49 to 48)" in named
    # Significant but below the effect size: the sex balance (55% against 58% male).
    sex = result.feature("sex")
    assert sex.adjusted_p < 1e-20 and not sex.drifted


def test_an_injected_shift_is_detected_and_named(views, inject_shift):
    reference, current = split_at_random(views[0], seed=3)

    result = compare(reference, inject_shift(current, age_years=10, new_share=0.10, seed=3),
                     config=DriftConfig())

    assert [item.description for item in result.drifted] == [
        "median age up 10 years (from 49 to 59)",
        "Injected condition in 0% of images, now 10% (difference +10.0 points, "
        "95% CI +9.7 to +10.3)",
    ]


def test_a_shift_below_the_effect_size_is_not_reported(views, inject_shift):
    reference, current = split_at_random(views[0], seed=3)

    result = compare(reference, inject_shift(current, age_years=1, new_share=0.002, seed=3),
                     config=DriftConfig())

    assert not result.has_drift
    age, injected = result.feature("age_years"), result.feature("condition:injected")
    # Both are real and significant on 33,655 images; both stay under effect_h 0.1.
    assert age.adjusted_p < 1e-9 and round(age.effect_h, 4) == 0.0713
    assert injected.adjusted_p < 1e-9 and round(injected.effect_h, 4) == 0.0893
    assert injected.description == (
        "Injected condition in 0% of images, now 0.2% (difference +0.2 points, "
        "95% CI +0.2 to +0.3)"
    )
