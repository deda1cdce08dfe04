"""Note embeddings as drift features: how far each note sits from the reference window's notes.

One row per embedded note of ``ml.note_embeddings`` (written by the NLP stage), dated by its
``note_date``, with:

- ``centroid_distance``: the cosine distance (x100) of the note's embedding to the centroid (mean)
  of the reference window's embeddings, a reference note's to the centroid of the others; notes
  about other things than the reference's sit further;
- ``principal_1`` .. ``principal_3``: the note's coordinates along the reference's first three
  principal directions (of the embeddings centred on that centroid), so a shift along the
  directions the reference varies most in shows as a moved median.

The reference is the window the run compares against (``drift.reference``, or the one
``run.choose_windows`` picks), so the features are built for that comparison.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ml_pipelines.drift import windows
from ml_pipelines.drift.config import DriftConfig
from ml_pipelines.drift.features import FeatureSet

logger = logging.getLogger(__name__)

EMBEDDINGS_TABLE = "ml.note_embeddings"
PRINCIPAL_DIRECTIONS = 3
#: features are reported in hundredths (a cosine distance of 0.25 reads as 25)
SCALE = 100.0
COLUMNS = ("document_id", "patient_key", "note_date", "embedding")


def embeddings_frame(table: pd.DataFrame, *, config: DriftConfig) -> FeatureSet:
    """The embeddings feature set from a frame shaped like ``ml.note_embeddings``."""
    from ml_pipelines.drift.run import choose_windows

    notes = table.loc[table["note_date"].notna(), list(COLUMNS)].drop_duplicates("document_id")
    notes = notes.assign(
        note_date=pd.to_datetime(notes["note_date"], utc=True, errors="coerce", format="mixed")
    )
    undated = len(table) - int(notes["note_date"].notna().sum())
    notes = notes.loc[notes["note_date"].notna()].reset_index(drop=True)
    dated = windows.with_windows(
        FeatureSet(name="embeddings", frame=notes, date_column="note_date", unit_noun="notes"),
        window=config.window,
    )
    reference_spec, _ = choose_windows(dated, config=config)
    reference_mask = windows.select(
        dated.with_frame(dated.frame.assign(row=np.arange(len(dated.frame)))), reference_spec
    ).frame["row"].to_numpy()

    vectors = np.vstack(dated.frame["embedding"].map(np.asarray).to_list()).astype(np.float64)
    reference = vectors[reference_mask]
    centroid = reference.mean(axis=0)
    # A reference note is measured against the centroid of the other reference notes: its own
    # share of the mean would pull it closer than any other window's notes (in-sample bias).
    centroids = np.repeat(centroid[None, :], len(vectors), axis=0)
    if len(reference) > 1:
        centroids[reference_mask] = (len(reference) * centroid - reference) / (len(reference) - 1)
    similarity = np.einsum("ij,ij->i", vectors, centroids) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(centroids, axis=1)
    )
    distance = SCALE * (1.0 - similarity)
    _, _, directions = np.linalg.svd(reference - centroid, full_matrices=False)
    directions = directions[:PRINCIPAL_DIRECTIONS]
    # An SVD direction's sign is arbitrary: point each where its largest coordinate is positive.
    signs = np.sign(directions[np.arange(len(directions)), np.abs(directions).argmax(axis=1)])
    projections = SCALE * (vectors - centroid) @ (directions * signs[:, None]).T

    frame = dated.frame[["document_id", "patient_key", "note_date"]].copy()
    frame["centroid_distance"] = distance
    principal = [f"principal_{index + 1}" for index in range(projections.shape[1])]
    for index, column in enumerate(principal):
        frame[column] = projections[:, index]

    logger.info(
        "built %d note embedding rows (%d dimensions, %d in reference %s, %d undated)",
        len(frame),
        vectors.shape[1],
        len(reference),
        reference_spec,
        undated,
    )
    return FeatureSet(
        name="embeddings",
        frame=frame,
        date_column="note_date",
        numeric=("centroid_distance", *principal),
        labels={
            "centroid_distance": "note distance to the reference centroid (cosine, x100)",
            **{
                column: f"note position on reference principal direction {index + 1} (x100)"
                for index, column in enumerate(principal)
            },
        },
        unit_noun="notes",
        group_column="patient_key",
    )


def lake_embedding_features(lake: Any, *, config: DriftConfig) -> FeatureSet | None:
    """The embeddings feature set of ``ml.note_embeddings``; None before the NLP stage has run."""
    if not lake.has_table(EMBEDDINGS_TABLE):
        return None
    table = lake.read_arrow(EMBEDDINGS_TABLE, columns=COLUMNS).to_pandas()
    return embeddings_frame(table, config=config)
