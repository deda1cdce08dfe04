"""Concept tables, the built MedCAT model, and its k-fold accuracy on MedCAT's gold export."""

from __future__ import annotations

import pytest

from infra.errors import ConfigError
from ml_pipelines.nlp.concepts import ConceptTable, coded_resources_from_ndjson, synonyms
from ml_pipelines.nlp.eval_concepts import kfold_medcat_gold
from ml_pipelines.nlp.model import build_model, load_model_pack
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


def test_kfold_with_the_trained_context_linker(shared_data):
    figures = kfold_medcat_gold(shared_data, folds=5, linker="context")
    micro = figures["micro"]
    assert (micro["tp"], micro["fp"], micro["fn"]) == (239, 158, 164)
    assert (micro["precision"], micro["recall"]) == (0.602, 0.5931)


def test_a_saved_model_pack_loads_with_the_same_hash(tmp_path, shared_data):
    concepts = ConceptTable()
    concepts.add_resources(
        coded_resources_from_ndjson(shared_data / "synthea-bulk-ndjson-10-patients"))
    model = build_model(concepts)
    pack = model.cat.save_model_pack(str(tmp_path), pack_name="pack", add_hash_to_pack_name=False,
                                     only_archive=True)
    loaded = load_model_pack(pack)
    assert (loaded.model_id, loaded.model_hash, loaded.concept_count) == (
        "pack-pack", model.model_hash, 247)
    text = "Viral sinusitis (disorder) resolved."
    assert note_entities(loaded, text) == note_entities(model, text)


def test_a_missing_model_pack_says_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_pack(tmp_path / "absent.zip")
