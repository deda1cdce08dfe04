"""Retraining: held-out patients never trained on; promotion only when better there."""

import pytest

from ml_pipelines.drift import prevalence_model, retraining, windows
from ml_pipelines.drift.config import DriftConfig


@pytest.fixture(scope="module")
def views(chestxray):
    frame = chestxray.frame
    return (
        chestxray.subset(frame["view_position"] == "PA"),
        chestxray.subset(frame["view_position"] == "AP"),
    )


def test_held_out_patients_are_never_in_the_training_part(encounters):
    current = windows.select(encounters, "2021..")
    held_out = prevalence_model.holdout_mask(current, share=0.3, seed=7)

    training_patients = set(current.frame.loc[~held_out, "patient_key"])
    holdout_patients = set(current.frame.loc[held_out, "patient_key"])

    assert training_patients.isdisjoint(holdout_patients)
    assert (len(training_patients), len(holdout_patients), int(held_out.sum())) == (15, 4, 22)


def test_a_model_retrained_on_ap_images_beats_the_pa_model_and_is_promoted(views):
    posteroanterior, anteroposterior = views
    production = prevalence_model.train(posteroanterior, window="PA")

    outcome = retraining.retrain(anteroposterior, window="AP", production=production,
                                 config=DriftConfig())

    assert outcome.promote
    assert (outcome.training_rows, outcome.holdout_rows) == (31681, 13129)
    assert round(outcome.candidate_metrics["brier"], 6) == 0.067603
    assert round(outcome.production_metrics["brier"], 6) == 0.069664


def test_a_candidate_that_does_not_beat_production_is_kept_out(encounters):
    production = prevalence_model.train(windows.select(encounters, "2011..2019"),
                                        window="2011..2019")

    outcome = retraining.retrain(windows.select(encounters, "2021.."), window="2021..",
                                 production=production, config=DriftConfig())

    assert not outcome.promote
    assert round(outcome.candidate_metrics["brier"], 6) == 0.007634
    assert round(outcome.production_metrics["brier"], 6) == 0.007284
    metadata = outcome.metadata()
    assert metadata["promoted"] is False and metadata["holdout_rows"] == 22


def test_the_model_round_trips_and_knows_covid_only_after_2020(encounters):
    before = prevalence_model.train(windows.select(encounters, "2011..2019"), window="before")
    after = prevalence_model.train(windows.select(encounters, "2020.."), window="after")

    assert "condition:840539006" not in before.conditions
    assert "condition:840539006" in after.conditions
    assert prevalence_model.PrevalenceModel.from_json(after.to_json()) == after
