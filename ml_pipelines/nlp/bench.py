"""Benchmark concept extraction: notes per second and characters per second.

``run(source)`` takes a folder of public notes (Bulk NDJSON with its coded resources, bundles or
``.txt`` files) or an open lake. It times MedCAT's multi-process batch API
(``CAT.get_entities_multi_texts``) and the one-note-at-a-time path the stage uses, and prints and
returns the figures. Where the batch API cannot run in this environment it says so and why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ml_pipelines.nlp.concepts import (
    ConceptTable,
    coded_resources_from_lake,
    coded_resources_from_ndjson,
)
from ml_pipelines.nlp.model import build_model
from ml_pipelines.nlp.runner import note_entities
from ml_pipelines.nlp.sources import notes_from_lake, notes_from_path

logger = logging.getLogger(__name__)


def _texts_and_model(source: Any) -> tuple[list[str], Any]:
    concepts = ConceptTable()
    if isinstance(source, (str, Path)):
        folder = Path(source)
        notes = list(notes_from_path(folder))
        codings_folder = folder if folder.is_dir() else folder.parent
        concepts.add_resources(coded_resources_from_ndjson(codings_folder))
    else:
        notes = list(notes_from_lake(source))
        concepts.add_resources(coded_resources_from_lake(source))
    return [note.text for note in notes if note.processed and note.text], build_model(concepts)


def run(source: Any, *, n_process: int = 2, batch_size_chars: int = 200_000,
        limit: int | None = None) -> dict[str, Any]:
    texts, model = _texts_and_model(source)
    texts = texts[:limit] if limit else texts
    characters = sum(len(text) for text in texts)
    figures: dict[str, Any] = {"notes": len(texts), "characters": characters,
                               "concepts": model.concept_count}

    started = time.perf_counter()
    mentions = sum(len(note_entities(model, text)) for text in texts)
    seconds = time.perf_counter() - started
    figures["in_process"] = {"seconds": round(seconds, 3), "mentions": mentions,
                             "notes_per_s": round(len(texts) / seconds, 1),
                             "characters_per_s": round(characters / seconds)}

    started = time.perf_counter()
    try:
        results = list(model.cat.get_entities_multi_texts(
            texts, n_process=n_process, batch_size_chars=batch_size_chars))
    except ImportError as error:
        figures["batch_api"] = {
            "status": "unavailable",
            "reason": f"MedCAT's batch worker imports its relation-extraction addon, which fails "
                      f"here: {type(error).__name__}: {error}",
        }
    else:
        seconds = time.perf_counter() - started
        figures["batch_api"] = {
            "status": "ok", "n_process": n_process, "seconds": round(seconds, 3),
            "mentions": sum(len(result["entities"]) for _, result in results),
            "notes_per_s": round(len(texts) / seconds, 1),
            "characters_per_s": round(characters / seconds),
        }
    logger.info("NLP benchmark: %d notes, %d characters: %s", len(texts), characters, figures)
    print(figures)
    return figures
