"""Every accuracy figure the NLP stage reports, computed from the public evaluation data.

``evaluate_all(shared_data)`` gives: ConText's per-class precision and recall on the NegEx test kit
and on hand-labelled cTAKES phrases (the only set with family and hypothetical labels), k-fold
concept precision and recall on MedCAT's gold export, and the Synthea coding sanity check on the
Bulk NDJSON sample (a model built from that sample's own codings). The cTAKES notes carry no
gold codes, so for them it reports coverage (mentions per note, contexts), not accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ml_pipelines.nlp.concepts import ConceptTable, coded_resources_from_ndjson
from ml_pipelines.nlp.context import ContextAssessor
from ml_pipelines.nlp.eval_concepts import (
    encounter_conditions,
    kfold_medcat_gold,
    synthea_coding_check,
)
from ml_pipelines.nlp.eval_context import evaluate_context, evaluate_context_ctakes
from ml_pipelines.nlp.model import build_model
from ml_pipelines.nlp.runner import extract
from ml_pipelines.nlp.sources import notes_from_path, notes_from_text_folder

logger = logging.getLogger(__name__)

SYNTHEA_BULK = Path("synthea-bulk-ndjson-10-patients")
CTAKES_NOTES = Path("ctakes-examples-notes")


def synthea_sample_check(data_dir: Path) -> dict[str, Any]:
    folder = data_dir / SYNTHEA_BULK
    concepts = ConceptTable()
    resources = list(coded_resources_from_ndjson(folder))
    concepts.add_resources(resources)
    model = build_model(concepts)
    result = extract(notes_from_path(folder), model, run_id="evaluation",
                     assessor=ContextAssessor())
    condition_codes = {c.code for c in concepts.concepts.values() if "Condition" in c.sources}
    check = synthea_coding_check(result.mentions, encounter_conditions(resources),
                                 condition_codes=condition_codes)
    return {**check, "notes": sum(result.notes_by_status.values()),
            "mentions": len(result.mentions), "mentions_by_context": dict(result.contexts)}


def ctakes_coverage(data_dir: Path) -> dict[str, Any]:
    """Mentions of the Synthea-sample model in the cTAKES notes (no gold: coverage only)."""
    concepts = ConceptTable()
    concepts.add_resources(coded_resources_from_ndjson(data_dir / SYNTHEA_BULK))
    model = build_model(concepts)
    notes = [note for sub in ("curated", "synthetic")
             for note in notes_from_text_folder(data_dir / CTAKES_NOTES / sub)]
    result = extract(notes, model, run_id="evaluation", assessor=ContextAssessor())
    return {"notes": len(notes), "mentions": len(result.mentions),
            "mentions_by_context": dict(sorted(result.contexts.items())),
            "notes_with_mentions": sum(1 for row in result.statuses if row["mention_count"])}


def evaluate_all(data_dir: str | Path) -> dict[str, Any]:
    data_dir = Path(data_dir)
    figures = {
        "context_negex": evaluate_context(data_dir),
        "context_ctakes": evaluate_context_ctakes(data_dir),
        "medcat_gold_kfold": kfold_medcat_gold(data_dir),
        "medcat_gold_kfold_context_linker": kfold_medcat_gold(data_dir, linker="context"),
        "synthea_coding_check_sample": synthea_sample_check(data_dir),
        "ctakes_coverage": ctakes_coverage(data_dir),
    }
    logger.info("evaluation: %d figure groups from %s", len(figures), data_dir.name)
    return figures
