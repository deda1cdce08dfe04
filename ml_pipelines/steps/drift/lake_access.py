"""How a step reaches the lake: from the data folder it was given, with the run's settings."""

from __future__ import annotations

from typing import Any

from infra.lake import Lake
from infra.settings import load_settings
from ml_pipelines.drift.config import DriftConfig


def open_lake(data_dir: str) -> Any:
    return Lake.open(load_settings(data_dir=data_dir), create=False)


def drift_config(lake: Any, overrides: dict[str, Any]) -> DriftConfig:
    return DriftConfig.from_settings(lake.settings, **overrides)
