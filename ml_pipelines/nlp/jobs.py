"""The NLP stage's units of work against the lake; each takes and returns lake references only.

The ZenML steps call these, so what passes between steps is a table name, a snapshot id, a model
reference (id, hash, concept-database version, where the pack lies) and counts: never note text.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from infra.errors import ConfigError
from infra.scratch import private_scratch
from ml_pipelines.nlp import tables
from ml_pipelines.nlp.concepts import SYNTHEA_CONCEPTS, ConceptTable, coded_resources_from_lake
from ml_pipelines.nlp.context import ContextAssessor
from ml_pipelines.nlp.model import NlpModel, build_model, load_model_pack, save_to_lake
from ml_pipelines.nlp.runner import extract
from ml_pipelines.nlp.sources import BRONZE_TABLES, bronze_snapshot, notes_from_lake

logger = logging.getLogger(__name__)


def open_lake(data_dir: str) -> Any:
    from infra.lake import Lake
    from infra.settings import load_settings

    return Lake.open(load_settings(data_dir=data_dir), create=False)


def note_snapshots(lake: Any) -> dict[str, int | None]:
    """The current snapshot of each bronze notes table (None where the table does not exist)."""
    return {identifier: bronze_snapshot(lake, identifier) for identifier in BRONZE_TABLES.values()}


def prepare_model(
    lake: Any, *, model_pack: str = "", concepts_dir: str = "", linker: str = "primary_name"
) -> dict[str, Any]:
    """Load the configured model pack, or build one from the lake's codings and keep it in the
    lake; ``concepts_dir`` names a shared data folder whose Synthea concept list is added. The
    context linker is trained on the lake's notes, read in memory only."""
    if model_pack:
        model = load_model_pack(model_pack)
        return _reference(model, source="pack", pack=str(Path(model_pack).expanduser()))

    concepts = ConceptTable()
    codings = concepts.add_resources(coded_resources_from_lake(lake))
    if concepts_dir:
        path = Path(concepts_dir) / SYNTHEA_CONCEPTS
        if not path.is_file():
            raise ConfigError(
                f"nlp.synthea_concepts_dir has no {SYNTHEA_CONCEPTS} in {concepts_dir}: point it "
                "at the shared data folder, or leave it empty"
            )
        concepts.add_synthea_concepts(path)
    logger.info("concept table: %d concepts from %d codings", len(concepts), codings)
    model = build_model(
        concepts, linker=linker,
        training_texts=lambda: (note.text for note in notes_from_lake(lake) if note.processed),
    )
    target = save_to_lake(model, lake.fs)
    # The concept ids' systems go into the lake next to the pack, not into ZenML's store: which
    # codes a lake holds says something about its patients.
    with lake.fs.open(_systems_path(target), "wb") as handle:
        handle.write(json.dumps(model.systems, sort_keys=True).encode())
    return _reference(model, source="built", pack=target)


def _systems_path(pack: str) -> str:
    return pack.removesuffix(".zip") + ".systems.json"


def _reference(model: NlpModel, *, source: str, pack: str) -> dict[str, Any]:
    return {
        "model_id": model.model_id,
        "model_hash": model.model_hash,
        "cdb_version": model.cdb_version,
        "concepts": model.concept_count,
        "names": model.name_count,
        "source": source,
        "pack": pack,
        "has_meta_cat": model.has_meta_cat,
    }


def load_model(lake: Any, reference: dict[str, Any]) -> NlpModel:
    """The model a reference names: a user's pack in place, or a built pack out of the lake."""
    if reference["source"] == "pack":
        return load_model_pack(reference["pack"])
    with private_scratch("nlp-model") as scratch:
        local = scratch / Path(reference["pack"]).name
        with lake.fs.open(reference["pack"], "rb") as source, local.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        model = load_model_pack(local)
    if model.model_hash != reference["model_hash"]:
        raise ConfigError(
            f"the model pack {reference['pack']} has hash {model.model_hash}, not the "
            f"{reference['model_hash']} it was saved with: run the NLP stage again to rebuild it"
        )
    model.model_id = reference["model_id"]
    model.cdb_version = reference["cdb_version"]
    with lake.fs.open(_systems_path(reference["pack"]), "rb") as handle:
        model.systems = json.loads(handle.read())
    return model


def extract_to_lake(
    lake: Any, reference: dict[str, Any], snapshots: dict[str, int | None], *, run_id: str
) -> dict[str, Any]:
    """Mentions and note statuses of the notes at ``snapshots``, appended to the lake."""
    model = load_model(lake, reference)
    result = extract(notes_from_lake(lake, snapshots=snapshots), model, run_id=run_id,
                     assessor=ContextAssessor())
    mentions = tables.append(lake, tables.MENTIONS,
                             tables.to_arrow(result.mentions, tables.MENTION_SCHEMA))
    statuses = tables.append(lake, tables.STATUS,
                             tables.to_arrow(result.statuses, tables.STATUS_SCHEMA))
    return {**result.counts(), "mentions_snapshot": mentions, "status_snapshot": statuses}


def embed_to_lake(lake: Any, snapshots: dict[str, int | None], *, run_id: str) -> dict[str, Any]:
    """Sentence-transformers embeddings of the processed notes, appended to the lake."""
    from ml_pipelines.nlp.embeddings import embed_notes

    rows = embed_notes(notes_from_lake(lake, snapshots=snapshots), run_id=run_id)
    if not rows:
        return {"embeddings": 0, "embeddings_snapshot": None}
    schema = tables.embedding_schema(len(rows[0]["embedding"]))
    snapshot = tables.append(lake, tables.EMBEDDINGS, tables.to_arrow(rows, schema))
    return {"embeddings": len(rows), "embeddings_snapshot": snapshot}


def coding_check(lake: Any, reference: dict[str, Any], *, run_id: str) -> dict[str, Any]:
    """The Synthea sanity check over this run's mentions and the lake's Condition codings."""
    from ml_pipelines.nlp.eval_concepts import encounter_conditions, synthea_coding_check

    mentions = lake.read_arrow(
        tables.MENTIONS, where=f"pipeline_run_id == '{run_id}'",
        columns=("encounter_id", "concept_system", "concept_code", "context"),
    ).to_pylist() if lake.has_table(tables.MENTIONS) else []
    conditions = encounter_conditions(
        r for r in coded_resources_from_lake(lake, types=("Condition",)))
    condition_codes = {code for _, code in conditions}
    return synthea_coding_check(mentions, conditions, condition_codes=condition_codes)
