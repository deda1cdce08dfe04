"""One period split at random shows no drift: the false-alarm rate stays at or under alpha."""

from ml_pipelines.drift import windows
from ml_pipelines.drift.compare import false_alarm_rate, split_at_random, compare
from ml_pipelines.drift.config import DriftConfig


def test_random_halves_of_2011_to_2019_stay_under_the_level(encounters):
    period = windows.select(encounters, "2011..2019")
    config = DriftConfig()

    result = false_alarm_rate(period, config=config, splits=100)

    assert (result.splits, result.alarms) == (100, 2)
    assert result.rate <= config.alpha
    assert result.as_json()["within_level"] is True


def test_random_halves_of_the_pa_images_stay_under_the_level(chestxray):
    posteroanterior = chestxray.subset(chestxray.frame["view_position"] == "PA")
    config = DriftConfig()

    result = false_alarm_rate(posteroanterior, config=config, splits=20)

    assert (result.splits, result.alarms) == (20, 0)


def test_one_split_reports_no_drift_and_a_p_value_spread(encounters):
    first, second = split_at_random(windows.select(encounters, "2011..2019"), seed=11)

    result = compare(first, second, config=DriftConfig())

    assert not result.has_drift
    assert min(item.adjusted_p for item in result.features) > 0.05
