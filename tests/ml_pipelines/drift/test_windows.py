import pandas as pd
import pytest

from infra.errors import ConfigError
from ml_pipelines.drift import windows


def test_labels_by_year_quarter_and_month_in_utc():
    dates = pd.Series(["2021-03-31T23:30:00-05:00", "2019-11-02", None])
    assert windows.window_labels(dates, window="year").tolist()[:2] == ["2021", "2019"]
    assert windows.window_labels(dates, window="quarter").tolist()[:2] == ["2021-Q2", "2019-Q4"]
    assert windows.window_labels(dates, window="month").tolist()[:2] == ["2021-04", "2019-11"]
    assert windows.window_labels(dates, window="year").isna().tolist() == [False, False, True]
    with pytest.raises(ConfigError, match="drift.window"):
        windows.window_labels(dates, window="week")


def test_select_single_windows_and_ranges(encounters):
    assert len(windows.select(encounters, "2019").frame) == 61
    assert len(windows.select(encounters, "2011..2019").frame) == 704
    assert len(windows.select(encounters, "2021..").frame) == 90
    assert len(windows.select(encounters, "..1950").frame) == 18
    with pytest.raises(ConfigError, match="holds no encounters"):
        windows.select(encounters, "2030")
