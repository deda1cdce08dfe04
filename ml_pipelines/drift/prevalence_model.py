"""The model the retraining pipeline owns: condition (or finding) prevalence by age band and sex.

For each condition flag (``condition:...``, or ``finding:...`` of an image set) it estimates the
chance that an encounter records it, per stratum (age band and sex), shrunk toward the window's
overall prevalence so a small stratum is not trusted alone. It is the simplest predictive model that
drift breaks: trained before 2020 it gives COVID-19 the floor probability; retrained on the current
window it learns the new concept. Its quality is the mean Brier score over encounters and conditions
(lower is better).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml_pipelines.drift.features import FeatureSet

AGE_BANDS = (0, 18, 40, 65, 200)
AGE_BAND_NAMES = ("0-17", "18-39", "40-64", "65+")
SHRINKAGE = 2.0
TARGET_PREFIXES = ("condition:", "finding:")


def strata(frame: pd.DataFrame) -> pd.Series:
    bands = pd.cut(frame["age_years"], bins=list(AGE_BANDS), right=False, labels=AGE_BAND_NAMES)
    return bands.astype("string").fillna("unknown") + "|" + frame["sex"].astype("string")


def holdout_mask(features: FeatureSet, *, share: float, seed: int) -> pd.Series:
    """True for the units of the held-out patients: a stable hash of the patient key, so a
    patient's encounters all fall on one side and a rerun picks the same patients."""
    keys = features.frame[features.group_column or features.date_column].astype("string")

    def held_out(key: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < share

    return keys.map(held_out).astype(bool)


@dataclass(frozen=True)
class PrevalenceModel:
    """Per-stratum condition probabilities and the floor for conditions it never saw."""

    window: str
    rows: int
    floor: float
    overall: dict[str, float]
    by_stratum: dict[str, dict[str, float]]
    labels: dict[str, str]

    @property
    def conditions(self) -> list[str]:
        return sorted(self.overall)

    def predict(self, frame: pd.DataFrame, conditions: list[str]) -> np.ndarray:
        """Probabilities, one row per unit of ``frame`` and one column per condition."""
        keys = strata(frame).tolist()
        result = np.full((len(frame), len(conditions)), self.floor)
        for column_index, condition in enumerate(conditions):
            if condition not in self.overall:
                continue
            base = self.overall[condition]
            table = self.by_stratum.get(condition, {})
            result[:, column_index] = [table.get(key, base) for key in keys]
        return result

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> PrevalenceModel:
        return cls(**json.loads(data))


def train(features: FeatureSet, *, window: str) -> PrevalenceModel:
    """Fit on every unit of ``features`` (the caller has removed the held-out patients)."""
    frame = features.frame
    conditions = [column for column in features.flags if column.startswith(TARGET_PREFIXES)]
    rows = len(frame)
    floor = 0.5 / (rows + 1)
    keys = strata(frame)
    overall: dict[str, float] = {}
    by_stratum: dict[str, dict[str, float]] = {}
    for condition in conditions:
        hits = frame[condition].astype(int)
        if hits.sum() == 0:
            continue
        base = (hits.sum() + 0.5) / (rows + 1)
        grouped = hits.groupby(keys).agg(["sum", "size"])
        shrunk = (grouped["sum"] + SHRINKAGE * base) / (grouped["size"] + SHRINKAGE)
        overall[condition] = float(base)
        by_stratum[condition] = {str(key): float(value) for key, value in shrunk.items()}
    return PrevalenceModel(
        window=window,
        rows=rows,
        floor=floor,
        overall=overall,
        by_stratum=by_stratum,
        labels={condition: features.label(condition) for condition in overall},
    )


def evaluate(
    model: PrevalenceModel, features: FeatureSet, *, conditions: list[str]
) -> dict[str, Any]:
    """Mean Brier score and log loss of ``model`` on ``features`` over ``conditions``."""
    frame = features.frame
    truth = np.column_stack(
        [frame[c].to_numpy(dtype=float) if c in frame else np.zeros(len(frame)) for c in conditions]
    )
    predicted = np.clip(model.predict(frame, conditions), 1e-6, 1 - 1e-6)
    brier = float(np.mean((predicted - truth) ** 2))
    log_loss = float(-np.mean(truth * np.log(predicted) + (1 - truth) * np.log(1 - predicted)))
    return {"brier": brier, "log_loss": log_loss, "rows": len(frame), "conditions": len(conditions)}


def evaluation_conditions(features: FeatureSet, *models: PrevalenceModel | None) -> list[str]:
    """The conditions both versions are scored on: any the held-out part or a model knows."""
    seen = {c for c in features.flags if c.startswith(TARGET_PREFIXES) and features.frame[c].any()}
    for model in models:
        if model is not None:
            seen |= set(model.conditions)
    return sorted(seen)
