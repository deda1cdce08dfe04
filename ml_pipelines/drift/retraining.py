"""Retraining on drift: train on the current window, score on its held-out patients, promote.

A share of the current window's patients is held out by a stable hash of their key, with all their
encounters. The candidate is trained on the rest of the window, so it has never seen them, and
scored on them beside the production version; it is promoted only when its Brier score is lower.
Both sets of metrics are kept with the version, promoted or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ml_pipelines.drift import prevalence_model
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.features import FeatureSet
from ml_pipelines.drift.prevalence_model import PrevalenceModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    candidate: PrevalenceModel
    candidate_metrics: dict[str, Any]
    production_metrics: dict[str, Any] | None
    promote: bool
    training_rows: int
    holdout_rows: int

    def metadata(self) -> dict[str, Any]:
        """What the Model Control Plane keeps with the version: numbers only, no patient data."""
        record: dict[str, Any] = {
            "window": self.candidate.window,
            "training_rows": self.training_rows,
            "holdout_rows": self.holdout_rows,
            "conditions": len(self.candidate.conditions),
            "holdout_brier": self.candidate_metrics["brier"],
            "holdout_log_loss": self.candidate_metrics["log_loss"],
            "promoted": self.promote,
        }
        if self.production_metrics is not None:
            record["production_holdout_brier"] = self.production_metrics["brier"]
            record["production_holdout_log_loss"] = self.production_metrics["log_loss"]
        return record


def retrain(
    current: FeatureSet,
    *,
    window: str,
    production: PrevalenceModel | None,
    config: DriftConfig,
) -> RetrainOutcome:
    """Train a candidate on ``current`` minus its held-out patients; compare on the held-out."""
    held_out = prevalence_model.holdout_mask(current, share=config.holdout_share, seed=config.seed)
    training, holdout = current.subset(~held_out), current.subset(held_out)
    candidate = prevalence_model.train(training, window=window)

    conditions = prevalence_model.evaluation_conditions(holdout, candidate, production)
    candidate_metrics = prevalence_model.evaluate(candidate, holdout, conditions=conditions)
    production_metrics = (
        None
        if production is None
        else prevalence_model.evaluate(production, holdout, conditions=conditions)
    )
    promote = production_metrics is None or candidate_metrics["brier"] < production_metrics["brier"]

    logger.info(
        "retrained on %s: %d training and %d held-out %s; held-out Brier %.5f against "
        "production %s; %s",
        window,
        len(training.frame),
        len(holdout.frame),
        current.unit_noun,
        candidate_metrics["brier"],
        "none" if production_metrics is None else f"{production_metrics['brier']:.5f}",
        "promote" if promote else "keep production",
    )
    return RetrainOutcome(
        candidate=candidate,
        candidate_metrics=candidate_metrics,
        production_metrics=production_metrics,
        promote=promote,
        training_rows=len(training.frame),
        holdout_rows=len(holdout.frame),
    )
