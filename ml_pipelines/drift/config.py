"""The drift settings, read once from carelake's settings with the defaults documented here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.errors import ConfigError

GATE_MODES = ("warn", "fail")


@dataclass(frozen=True)
class DriftConfig:
    """How drift is measured and acted on.

    - ``window``: "month", "quarter" or "year".
    - ``alpha``: the false-alarm level of one comparison (after the correction below).
    - ``min_effect_size``: the smallest ``effect_h`` (Cohen's h scale) that counts as drift.
    - ``correction``: multiple-testing correction across features, "bh" or "holm".
    - ``bins``: pooled-quantile bins for numeric features.
    - ``min_count``: a flag is tested only when both windows together hold this many units with
      it; rarer ones are listed as appeared or disappeared instead.
    - ``gate``: "warn" prints and records; "fail" also makes the command exit non-zero.
    - ``model_drop``: the drop in a model metric (recall, AUROC) that counts as model drift.
    - ``holdout_share``: share of the current window's patients kept out of retraining.
    - ``false_alarm_splits``: random splits used to measure the false-alarm rate.
    - ``reference``, ``current``: window specs ("2019", "2011..2019", "2021.."); empty picks
      the latest window with ``min_window_units`` units as current and all before it as
      reference.
    - ``retrain``: run the retraining pipeline when drift is found.
    - ``seed``: seed of the random splits and of the held-out patient hash.
    """

    window: str = "year"
    alpha: float = 0.05
    min_effect_size: float = 0.1
    correction: str = "bh"
    bins: int = 10
    min_count: int = 5
    gate: str = "warn"
    model_drop: float = 0.05
    holdout_share: float = 0.3
    false_alarm_splits: int = 200
    reference: str = ""
    current: str = ""
    min_window_units: int = 50
    retrain: bool = True
    seed: int = 7

    def __post_init__(self) -> None:
        if self.gate not in GATE_MODES:
            raise ConfigError(f"drift.gate is {self.gate!r}: use 'warn' or 'fail'")
        if not 0 < self.alpha < 1:
            raise ConfigError(
                f"drift.alpha is {self.alpha}: use a level between 0 and 1, e.g. 0.05"
            )
        if self.min_effect_size < 0:
            raise ConfigError("drift.min_effect_size must be zero or more (0.1 is a small effect)")
        if not 0 < self.holdout_share < 1:
            raise ConfigError("drift.holdout_share must lie between 0 and 1, e.g. 0.3")
        if self.bins < 2:
            raise ConfigError("drift.bins must be 2 or more")

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> DriftConfig:
        """Values of the ``[drift]`` table, then ``overrides``; unknown keys are refused."""
        values = {**settings.section("drift"), **overrides}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"[drift] has unknown settings {unknown}: known ones are {sorted(known)}"
            )
        return cls(**{name: _typed(name, value) for name, value in values.items()})

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _typed(name: str, value: Any) -> Any:
    """A value of the default's type: environment variables arrive as text."""
    default = getattr(DriftConfig, name)
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return value.lower() in {"true", "1", "yes", "on"}
        return type(default)(value)
    except ValueError:
        raise ConfigError(
            f"drift.{name} is {value!r}: use a {type(default).__name__} like {default!r}"
        ) from None
