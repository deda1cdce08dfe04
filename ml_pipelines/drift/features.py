"""A feature set: one row per unit (encounter, image, note) with typed columns and clinical names.

Drift code never guesses what a column means. A ``FeatureSet`` says which columns are numeric
(age, a lab value, a probability), which are categories (sex, encounter class), and which are
flags (a condition coded in the encounter, a finding on the image), and how to name each one in
clinical words. Any source (FHIR files, the marts, the NLP or vision outputs) builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from infra.errors import InputError

KINDS = ("numeric", "categorical", "flag")


@dataclass(frozen=True)
class FeatureSet:
    """A frame of units and the meaning of its columns.

    ``date_column`` holds each unit's date (what windows are cut on); ``group_column``, when set,
    holds the pseudonymous patient key so held-out splits keep a patient on one side. ``labels``
    names a column for people ("age", "COVID-19"); ``units`` gives a numeric column's unit.
    """

    name: str
    frame: pd.DataFrame
    date_column: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    unit_noun: str = "rows"
    group_column: str | None = None

    def __post_init__(self) -> None:
        missing = [
            column
            for column in (self.date_column, *self.numeric, *self.categorical, *self.flags)
            if column not in self.frame.columns
        ]
        if missing:
            raise InputError(
                f"feature set {self.name!r} lacks columns {missing[:5]}: build the frame with "
                "every column its schema names"
            )

    def kind(self, column: str) -> str:
        if column in self.numeric:
            return "numeric"
        if column in self.categorical:
            return "categorical"
        if column in self.flags:
            return "flag"
        raise InputError(f"feature set {self.name!r} has no feature {column!r}")

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical, *self.flags)

    def label(self, column: str) -> str:
        return self.labels.get(column, column.replace("_", " "))

    def with_frame(self, frame: pd.DataFrame) -> FeatureSet:
        """The same schema over another frame (a window, a split, a modified copy)."""
        return replace(self, frame=frame)

    def subset(self, mask: pd.Series) -> FeatureSet:
        return self.with_frame(self.frame.loc[mask].reset_index(drop=True))

    def aligned_with(self, other: FeatureSet) -> FeatureSet:
        """This set with the union of both sets' flag columns (a flag absent here is all zero)."""
        flags = tuple(dict.fromkeys((*self.flags, *other.flags)))
        frame = self.frame.copy()
        for column in flags:
            if column not in frame.columns:
                frame[column] = 0
        labels = {**other.labels, **self.labels}
        return replace(self, frame=frame, flags=flags, labels=labels)
