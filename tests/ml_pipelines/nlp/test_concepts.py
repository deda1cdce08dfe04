"""Concept tables, the built MedCAT model, and its k-fold accuracy on MedCAT's gold export."""

from __future__ import annotations

from ml_pipelines.nlp.concepts import ConceptTable, coded_resources_from_ndjson, synonyms
from ml_pipelines.nlp.eval_concepts import kfold_medcat_gold
from ml_pipelines.nlp.model import build_model
from ml_pipelines.nlp.runner import note_entities


def test_semantic_tags_give_a_synonym():
    assert synonyms("Hypertension (disorder)") == {"Hypertension (disorder)", "Hypertension"}
    assert synonyms("Body  Height") == {"Body Height"}


def test_concept_table_of_the_bulk_sample_and_its_model(shared_data):
    concepts = ConceptTable()
    codings = concepts.add_resources(
        coded_resources_from_ndjson(shared_data / "synthea-bulk-ndjson-10-patients"))
    assert (codings, len(concepts), concepts.version()) == (4356, 247, "48b024d0073b19a6")
    model = build_model(concepts)
    assert (model.model_id, model.concept_count, model.name_count) == (
        "carelake-cdb-48b024d0073b19a6", 247, 387)
    found = note_entities(model, "Acute bronchitis (disorder) and viral sinusitis.")
    assert [(e["cui"], e["start"], e["end"]) for e in found] == [
        ("SNOMED:10509002", 0, 16), ("SNOMED:444814009", 32, 47)]


def test_kfold_on_medcat_gold(shared_data):
    figures = kfold_medcat_gold(shared_data, folds=5)
    assert (figures["documents"], figures["gold_annotations"]) == (27, 403)
    micro = figures["micro"]
    assert (micro["tp"], micro["fp"], micro["fn"]) == (232, 136, 171)
    assert (micro["precision"], micro["recall"]) == (0.6304, 0.5757)
