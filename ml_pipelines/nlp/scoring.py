"""Precision, recall and F1 from counts, per class and micro-averaged over sets of items."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float | None:
        predicted = self.true_positives + self.false_positives
        return round(self.true_positives / predicted, 4) if predicted else None

    @property
    def recall(self) -> float | None:
        actual = self.true_positives + self.false_negatives
        return round(self.true_positives / actual, 4) if actual else None

    @property
    def f1(self) -> float | None:
        precision, recall = self.precision, self.recall
        if not precision or not recall:
            return None if precision is None or recall is None else 0.0
        return round(2 * precision * recall / (precision + recall), 4)

    def __add__(self, other: Score) -> Score:
        return Score(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )

    def as_json(self) -> dict[str, float | int | None]:
        return {
            "tp": self.true_positives,
            "fp": self.false_positives,
            "fn": self.false_negatives,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def per_class(
    gold: Sequence[str], predicted: Sequence[str], classes: Iterable[str]
) -> dict[str, Score]:
    """One-vs-rest counts of each class over paired gold and predicted labels."""
    scores = {}
    for label in classes:
        pairs = list(zip(gold, predicted, strict=True))
        scores[label] = Score(
            sum(1 for g, p in pairs if g == label and p == label),
            sum(1 for g, p in pairs if g != label and p == label),
            sum(1 for g, p in pairs if g == label and p != label),
        )
    return scores


def set_score(gold: set[Hashable], predicted: set[Hashable]) -> Score:
    """Counts of one set of predicted items against one set of gold items."""
    return Score(len(gold & predicted), len(predicted - gold), len(gold - predicted))
