"""Windows by encounter year over the 2023-2025 bulk NDJSON and the 2019 bundles together."""

from ml_pipelines.drift import windows
from ml_pipelines.drift.compare import compare, split_at_random
from ml_pipelines.drift.config import DriftConfig


def test_encounter_features_carry_what_both_generations_share(encounters):
    assert len(encounters.frame) == 2057
    assert encounters.frame["patient_key"].nunique() == 53
    assert len(encounters.flags) == 391
    assert sorted(encounters.frame["encounter_class"].unique()) == [
        "AMB", "EMER", "HH", "IMP", "VR"
    ]
    assert encounters.label("condition:840539006") == "COVID-19"


def test_after_2020_against_before_shows_drift_with_covid_named(encounters):
    before = windows.select(encounters, "2011..2019")
    after = windows.select(encounters, "2021..")

    result = compare(before, after, config=DriftConfig(), reference_name="2011..2019",
                     current_name="2021..")

    assert result.has_drift
    assert (result.reference_units, result.current_units) == (704, 90)
    assert len(result.features) == 98 and len(result.drifted) == 13
    named = [item.description for item in result.drifted]
    assert (
        "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL "
        "dose in 0% of encounters, now 8.9% (difference +8.9 points, 95% CI +4.5 to +16.6)"
    ) in named
    assert "median age down 4.2 years (from 40.5 to 36.3)" in named
    assert (
        "COVID-19 appeared: in none of 704 encounters before, now in 1 of 90 (1.1%)"
        in result.appeared
    )


def test_an_injected_shift_in_a_copy_of_2011_to_2019_is_detected(encounters, inject_shift):
    first, second = split_at_random(windows.select(encounters, "2011..2019"), seed=5)
    shifted = inject_shift(second, age_years=10, new_share=0.10, seed=5)

    result = compare(first, shifted, config=DriftConfig())

    drifted = {item.feature: item.description for item in result.drifted}
    assert drifted["condition:injected"] == (
        "Injected condition in 0% of encounters, now 9.9% "
        "(difference +9.9 points, 95% CI +7.0 to +13.5)"
    )
    # The two random halves differ by about 1.5 years before the shift adds 10.
    assert drifted["age_years"] == "median age up 11.5 years (from 39.8 to 51.2)"
