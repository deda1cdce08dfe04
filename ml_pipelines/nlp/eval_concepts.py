"""Measure concept extraction: k-fold on MedCAT's gold annotations, and Synthea's coding check.

Gold: ``medcat-toy-training-data/medcat-v2-tests-resources/medcat_trainer_export.json`` (27
MTSamples transcriptions, UMLS CUIs). Documents are dealt into ``k`` folds by their order in the
export; for each fold a concept database is built from the other folds' annotated names only and
scored on the held-out documents: a true positive is the same CUI at the same span.

Synthea check: per encounter, the SNOMED CT codes of the affirmed Condition mentions in its notes
against the Condition codes recorded for it. Synthea writes notes from its own coding, so this
only shows the pipeline is wired right; it is not an accuracy figure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from infra.errors import InputError
from ml_pipelines.nlp.concepts import ConceptTable
from ml_pipelines.nlp.context import AFFIRMED
from ml_pipelines.nlp.model import build_model
from ml_pipelines.nlp.runner import note_entities
from ml_pipelines.nlp.scoring import Score, set_score

logger = logging.getLogger(__name__)

MEDCAT_GOLD = Path("medcat-toy-training-data") / "medcat-v2-tests-resources" / (
    "medcat_trainer_export.json")
UMLS = "http://www.nlm.nih.gov/research/umls"
SNOMED = "http://snomed.info/sct"


def _gold_documents(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"MedCAT's gold export is not at {path}: point --data at the shared data")
    export = json.loads(path.read_text(encoding="utf-8"))
    documents = []
    for project in export["projects"]:
        for document in project["documents"]:
            annotations = [
                a for a in document["annotations"]
                if a.get("correct") and not a.get("deleted") and not a.get("killed")
            ]
            documents.append({"text": document["text"], "annotations": annotations})
    return documents


def kfold_medcat_gold(
    data_dir: Path, *, folds: int = 5, linker: str = "primary_name"
) -> dict[str, Any]:
    """Micro-averaged precision and recall over ``folds`` held-out folds, and per fold. With the
    context linker, the vocabulary and the training come from the training folds' texts only."""
    documents = _gold_documents(data_dir / MEDCAT_GOLD)
    total = Score(0, 0, 0)
    per_fold = []
    for fold in range(folds):
        train = [d for i, d in enumerate(documents) if i % folds != fold]
        test = [d for i, d in enumerate(documents) if i % folds == fold]

        concepts = ConceptTable()
        for document in train:
            for annotation in document["annotations"]:
                concepts.add(UMLS, annotation["cui"], annotation["value"].lower(), source="gold")
        model = build_model(
            concepts, model_id_prefix=f"kfold-{fold}", linker=linker,
            training_texts=lambda train=train: (d["text"] for d in train),
        )

        score = Score(0, 0, 0)
        for document in test:
            gold = {(a["cui"], a["start"], a["end"]) for a in document["annotations"]}
            predicted = {
                (entity["cui"].split(":", 1)[1], entity["start"], entity["end"])
                for entity in note_entities(model, document["text"])
            }
            score = score + set_score(gold, predicted)
        per_fold.append({"fold": fold, "documents": len(test), "concepts": len(concepts),
                         **score.as_json()})
        total = total + score

    logger.info(
        "MedCAT gold %d-fold (%s linker): precision %s, recall %s over %d documents", folds,
        linker, total.precision, total.recall, len(documents),
    )
    return {
        "evaluation_set": "medcat_trainer_export.json (MT Samples, UMLS), same CUI and span",
        "documents": len(documents),
        "gold_annotations": sum(len(d["annotations"]) for d in documents),
        "folds": folds,
        "linker": linker,
        "micro": total.as_json(),
        "per_fold": per_fold,
    }


def encounter_conditions(resources: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """``(encounter id, SNOMED CT code)`` of every Condition that names its encounter."""
    pairs = set()
    for resource in resources:
        if resource.get("resourceType") != "Condition":
            continue
        encounter = (resource.get("encounter") or {}).get("reference", "")
        for coding in (resource.get("code") or {}).get("coding") or []:
            if coding.get("system") == SNOMED and encounter:
                pairs.add((encounter.rsplit("/", 1)[-1], str(coding["code"])))
    return pairs


def synthea_coding_check(
    mentions: Iterable[dict[str, Any]], conditions: set[tuple[str, str]],
    *, condition_codes: set[str],
) -> dict[str, Any]:
    """Affirmed condition mentions per encounter against that encounter's coded conditions."""
    mentions = list(mentions)
    encounters = {m["encounter_id"] for m in mentions if m["encounter_id"]}
    predicted = {
        (m["encounter_id"], m["concept_code"])
        for m in mentions
        if m["context"] == AFFIRMED and m["concept_system"] == SNOMED
        and m["concept_code"] in condition_codes and m["encounter_id"]
    }
    gold = {pair for pair in conditions if pair[0] in encounters}
    score = set_score(gold, predicted)
    logger.info(
        "Synthea coding check: %d encounters, precision %s, recall %s", len(encounters),
        score.precision, score.recall,
    )
    return {
        "evaluation_set": "coded conditions of the notes' own encounters (sanity check only)",
        "encounters": len(encounters),
        **score.as_json(),
    }
