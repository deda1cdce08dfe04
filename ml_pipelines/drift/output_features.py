"""Feature sets over the ML stages' outputs: the NLP stage's notes and the vision stage's images.

- notes (``ml.note_mentions``, ``ml.note_status``): one row per processed note, dated by its
  encounter, with the count of concept mentions, the share negated, their mean confidence, and
  one flag per concept found affirmed in at least ``min_count`` notes;
- images (``ml.imaging_findings``): one row per scored image, dated by when it was scored, with
  the model's probability of each pathology.

Each reader returns None while its stage has not written its tables.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ml_pipelines.drift.features import FeatureSet
from ml_pipelines.drift.model_drift import MENTIONS_TABLE, PROCESSED_STATUSES, STATUS_TABLE

logger = logging.getLogger(__name__)

FINDINGS_TABLE = "ml.imaging_findings"


def note_features(lake: Any, encounters: FeatureSet, *, min_count: int) -> FeatureSet | None:
    """One row per processed note of an encounter in ``encounters``; None before NLP has run."""
    if not (lake.has_table(MENTIONS_TABLE) and lake.has_table(STATUS_TABLE)):
        return None
    status = lake.read_arrow(
        STATUS_TABLE, columns=("document_id", "encounter_id", "patient_key", "status")
    ).to_pandas()
    mentions = lake.read_arrow(
        MENTIONS_TABLE,
        columns=("document_id", "concept_code", "concept_name", "context", "confidence"),
    ).to_pandas()
    return notes_frame(status, mentions, encounters, min_count=min_count)


def notes_frame(
    status: pd.DataFrame, mentions: pd.DataFrame, encounters: FeatureSet, *, min_count: int
) -> FeatureSet:
    """The notes feature set from the two NLP tables as frames."""
    notes = status.loc[status["status"].isin(PROCESSED_STATUSES)].drop_duplicates("document_id")
    dates = encounters.frame[["encounter_key", encounters.date_column]]
    notes = notes.merge(dates, left_on="encounter_id", right_on="encounter_key", how="inner")

    mentions = mentions.loc[mentions["document_id"].isin(notes["document_id"])]
    per_note = mentions.groupby("document_id").agg(
        mention_count=("concept_code", "size"),
        negation_rate=("context", lambda values: float((values == "negated").mean())),
        mean_confidence=("confidence", "mean"),
    )
    frame = notes[["document_id", "patient_key", encounters.date_column]].merge(
        per_note, left_on="document_id", right_index=True, how="left"
    )
    frame["mention_count"] = frame["mention_count"].fillna(0)

    affirmed = mentions.loc[mentions["context"] == "affirmed"].drop_duplicates(
        ["document_id", "concept_code"]
    )
    counts = affirmed["concept_code"].value_counts()
    concepts = sorted(counts.index[counts >= min_count])
    present = set(zip(affirmed["document_id"], affirmed["concept_code"], strict=True))
    documents = frame["document_id"].tolist()
    flags = pd.DataFrame(
        {
            f"concept:{code}": [int((document, code) in present) for document in documents]
            for code in concepts
        },
        index=frame.index,
        dtype="int8",
    )
    frame = pd.concat([frame, flags], axis=1).reset_index(drop=True)
    names = affirmed.drop_duplicates("concept_code").set_index("concept_code")["concept_name"]

    logger.info("built %d note rows with %d concept flags", len(frame), len(concepts))
    return FeatureSet(
        name="notes",
        frame=frame,
        date_column=encounters.date_column,
        numeric=("mention_count", "negation_rate", "mean_confidence"),
        flags=tuple(f"concept:{code}" for code in concepts),
        labels={
            "mention_count": "concept mentions per note",
            "negation_rate": "share of mentions negated",
            "mean_confidence": "mean NLP confidence",
            **{f"concept:{code}": f"{names[code]} (NLP)" for code in concepts},
        },
        unit_noun="notes",
        group_column="patient_key",
    )


def image_features(lake: Any) -> FeatureSet | None:
    """One row per scored image; None before the vision stage has run."""
    if not lake.has_table(FINDINGS_TABLE):
        return None
    findings = lake.read_arrow(
        FINDINGS_TABLE,
        columns=("image_id", "patient_key", "pathology", "probability", "scored_at"),
    ).to_pandas()
    return images_frame(findings)


def images_frame(findings: pd.DataFrame) -> FeatureSet:
    """The images feature set from the findings table as a frame (the latest score per image)."""
    scored = findings.loc[findings["probability"].notna()]
    latest = scored.sort_values("scored_at").drop_duplicates(["image_id", "pathology"], keep="last")
    wide = latest.pivot(index="image_id", columns="pathology", values="probability")
    pathologies = sorted(wide.columns)
    wide.columns = [f"probability:{name}" for name in wide.columns]
    about = latest.groupby("image_id").agg(
        patient_key=("patient_key", "first"), scored_at=("scored_at", "max")
    )
    frame = about.join(wide).reset_index()

    logger.info("built %d image rows with %d pathologies", len(frame), len(pathologies))
    return FeatureSet(
        name="images",
        frame=frame,
        date_column="scored_at",
        numeric=tuple(f"probability:{name}" for name in pathologies),
        labels={f"probability:{name}": f"{name} probability" for name in pathologies},
        unit_noun="images",
        group_column="patient_key",
    )
