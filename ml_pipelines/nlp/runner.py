"""Run MedCAT and ConText over notes: one mention row per linked concept, one status row per note.

Rows carry references, codes, offsets and labels; never the note's text nor the matched words.
A note MedCAT fails on is recorded ``failed`` with the error's type and the run goes on. A mention
whose context could not be assessed is recorded ``not_assessed``, never ``affirmed``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ml_pipelines.nlp.concepts import split_concept_id
from ml_pipelines.nlp.context import NOT_ASSESSED, ContextAssessor
from ml_pipelines.nlp.model import NlpModel
from ml_pipelines.nlp.notes import Note

logger = logging.getLogger(__name__)


@dataclass
class Extraction:
    mentions: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    notes_by_status: Counter[str] = field(default_factory=Counter)
    contexts: Counter[str] = field(default_factory=Counter)
    characters: int = 0

    def counts(self) -> dict[str, Any]:
        return {
            "notes": sum(self.notes_by_status.values()),
            "notes_by_status": dict(sorted(self.notes_by_status.items())),
            "mentions": len(self.mentions),
            "mentions_by_context": dict(sorted(self.contexts.items())),
            "characters": self.characters,
        }


def note_entities(model: NlpModel, text: str) -> list[dict[str, Any]]:
    """MedCAT's linked entities of one text, in text order."""
    entities = model.cat.get_entities(text).get("entities", {})
    return sorted(entities.values(), key=lambda entity: (entity["start"], entity["end"]))


def _status_row(note: Note, *, status: str, reason: str, mentions: int, run_id: str,
                model: NlpModel, at: datetime) -> dict[str, Any]:
    return {
        "document_id": note.document_id,
        "resource_type": note.resource_type,
        "attachment_index": note.attachment_index,
        "patient_key": note.patient_key,
        "encounter_id": note.encounter_id,
        "content_type": note.content_type,
        "status": status,
        "reason": reason,
        "characters": len(note.text or ""),
        "mention_count": mentions,
        "model_id": model.model_id,
        "pipeline_run_id": run_id,
        "processed_at": at,
    }


def extract(
    notes: Iterable[Note], model: NlpModel, *, run_id: str,
    assessor: ContextAssessor | None = None,
) -> Extraction:
    """Mentions with context for every processed note, and a status row for every note."""
    at = datetime.now(UTC)
    result = Extraction()
    for note in notes:
        if not note.processed:
            result.notes_by_status[note.status] += 1
            result.statuses.append(_status_row(
                note, status=note.status, reason=note.reason, mentions=0, run_id=run_id,
                model=model, at=at))
            continue

        text = note.text or ""
        try:
            entities = note_entities(model, text)
        except Exception as error:  # one bad note must not stop the run
            logger.warning("MedCAT failed on a note (%s): recorded as failed", type(error).__name__)
            result.notes_by_status["failed"] += 1
            result.statuses.append(_status_row(
                note, status="failed", reason=f"MedCAT raised {type(error).__name__}",
                mentions=0, run_id=run_id, model=model, at=at))
            continue

        spans = [(entity["start"], entity["end"]) for entity in entities]
        try:
            contexts = assessor.assess(text, spans) if assessor else [NOT_ASSESSED] * len(spans)
            method = "context" if assessor else "none"
        except Exception as error:
            logger.warning("ConText failed on a note (%s): mentions not assessed",
                           type(error).__name__)
            contexts, method = [NOT_ASSESSED] * len(spans), "none"

        for entity, context in zip(entities, contexts, strict=True):
            system, code = split_concept_id(entity["cui"], model.systems)
            result.mentions.append({
                "document_id": note.document_id,
                "resource_type": note.resource_type,
                "attachment_index": note.attachment_index,
                "patient_key": note.patient_key,
                "encounter_id": note.encounter_id,
                "concept_system": system,
                "concept_code": code,
                "concept_name": entity["pretty_name"],
                "span_start": int(entity["start"]),
                "span_end": int(entity["end"]),
                "context": context,
                "context_method": method,
                "confidence": float(entity["acc"]),
                "model_id": model.model_id,
                "model_hash": model.model_hash,
                "cdb_version": model.cdb_version,
                "pipeline_run_id": run_id,
                "extracted_at": at,
            })
            result.contexts[context] += 1
        result.characters += len(text)
        result.notes_by_status[note.status] += 1
        result.statuses.append(_status_row(
            note, status=note.status, reason=note.reason, mentions=len(entities), run_id=run_id,
            model=model, at=at))

    logger.info(
        "NLP run %s: %d notes, %d mentions (%s)", run_id, sum(result.notes_by_status.values()),
        len(result.mentions), ", ".join(f"{k} {v}" for k, v in sorted(result.contexts.items())),
    )
    return result
