"""The MedCAT model: built from a concept table, or loaded from a user's model pack.

A built model uses MedCAT's regex tokenizer and its dictionary NER (Aho-Corasick over every name,
the ``dict-ner`` extra). It links with the primary-name linker by default (a name shared by concepts
links only where it is one concept's primary name), or with MedCAT's context linker
(``linker="context"``): then a vocabulary of the corpus with MiniLM vectors is built and the linker
is trained unsupervised on the corpus. Nothing is downloaded.
Model packs that carelake builds are saved in a private scratch folder, then copied into the lake
encrypted (``ml/nlp/models/<model id>.zip``); a pack given in ``nlp.model_pack`` is read in place.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.errors import ConfigError, StageUnavailable
from infra.scratch import private_scratch
from ml_pipelines.nlp.concepts import ConceptTable

logger = logging.getLogger(__name__)

MODELS_FOLDER = "ml/nlp/models"
TRAINING_SEED = 20
# MedCAT logs matched names at DEBUG and progress at INFO; neither belongs in carelake's log.
for _name in ("medcat", "ahocorasick"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass
class NlpModel:
    """A ready MedCAT pipeline and what identifies it in every mention row."""

    cat: Any
    model_id: str
    model_hash: str
    cdb_version: str
    concept_count: int
    name_count: int
    systems: dict[str, str]
    has_meta_cat: bool = False


def _config() -> Any:
    from medcat.config import Config

    config = Config()
    config.general.nlp.provider = "regex"
    config.general.log_level = logging.WARNING
    config.general.usage_monitor.enabled = False
    config.general.map_to_other_ontologies = []
    config.components.ner.comp_name = "dict"
    config.components.linking.comp_name = "primary_name_only_linker"
    return config


LINKERS = {"primary_name": "primary_name_only_linker", "context": "default"}


def build_model(
    concepts: ConceptTable, *, model_id_prefix: str = "carelake-cdb", linker: str = "primary_name",
    training_texts: Callable[[], Iterable[str]] | None = None,
) -> NlpModel:
    """A MedCAT pipeline over the concept table's names; ``training_texts`` gives the corpus the
    context linker's vocabulary and training come from (read twice, never stored)."""
    import pandas as pd
    from medcat.cat import CAT
    from medcat.model_creation.cdb_maker import CDBMaker
    from medcat.vocab import Vocab

    if not len(concepts):
        raise ConfigError(
            "the concept table is empty: ingest Condition, Procedure, MedicationRequest or "
            "Observation resources first, or set nlp.model_pack to a MedCAT model pack"
        )
    if linker not in LINKERS:
        raise ConfigError(f"nlp.linker is {linker!r}: use one of {', '.join(LINKERS)}")
    if linker == "context" and training_texts is None:
        raise ConfigError("the context linker needs the corpus to train on: give training_texts")
    config = _config()
    frame = pd.DataFrame(list(concepts.rows()), dtype=str)
    cdb = CDBMaker(config).prepare_csvs([frame], full_build=False)
    version = concepts.version()
    if linker == "context":
        from ml_pipelines.nlp.vocabulary import build_vocab

        config.components.linking.comp_name = LINKERS[linker]
        cat = CAT(cdb, vocab=build_vocab(training_texts()), config=config)
        # MedCAT's training draws from Python's and NumPy's global generators: seed both so the
        # same corpus gives the same model.
        random.seed(TRAINING_SEED)
        np.random.seed(TRAINING_SEED)
        cat.trainer.train_unsupervised(training_texts(), progress_print=10**9)
        model_id_prefix = f"{model_id_prefix}-context"
    else:
        cat = CAT(cdb, vocab=Vocab(), config=config)
    model = NlpModel(
        cat=cat,
        model_id=f"{model_id_prefix}-{version}",
        model_hash=cat._get_hash(),
        cdb_version=version,
        concept_count=len(cdb.cui2info),
        name_count=len(cdb.name2info),
        systems=concepts.systems(),
    )
    logger.info(
        "built MedCAT model %s: %d concepts, %d names", model.model_id, model.concept_count,
        model.name_count,
    )
    return model


def load_model_pack(path: str | os.PathLike[str]) -> NlpModel:
    """A user's MedCAT model pack (for instance a SNOMED CT pack); MetaCAT addons are kept."""
    from medcat.cat import CAT

    pack = Path(path).expanduser()
    if not pack.exists():
        raise ConfigError(
            f"nlp.model_pack names {pack}, which does not exist: give the path of a MedCAT "
            "model pack (.zip or its unpacked folder), or leave it empty to build one from the lake"
        )
    try:
        cat = CAT.load_model_pack(str(pack))
    except ImportError as error:
        raise StageUnavailable(
            f"the model pack needs a MedCAT extra that is not installed here ({error}); install "
            "it (for MetaCAT: pip install 'medcat[meta-cat]') or leave nlp.model_pack empty"
        ) from None
    addons = [addon for addon in cat.get_addons() if "meta_cat" in type(addon).__module__]
    version = cat.config.meta.hash or cat._get_hash()
    model = NlpModel(
        cat=cat,
        model_id=f"pack-{pack.stem}",
        model_hash=cat._get_hash(),
        cdb_version=str(version),
        concept_count=len(cat.cdb.cui2info),
        name_count=len(cat.cdb.name2info),
        systems={},
        has_meta_cat=bool(addons),
    )
    logger.info(
        "loaded MedCAT model pack %s: %d concepts, %d MetaCAT addon(s)", model.model_id,
        model.concept_count, len(addons),
    )
    return model


def save_to_lake(model: NlpModel, fs: Any) -> str:
    """Save the model pack in a private scratch folder and copy it into the lake, encrypted."""
    target = f"{MODELS_FOLDER}/{model.model_id}.zip"
    with private_scratch("nlp-model") as scratch:
        packed = model.cat.save_model_pack(
            str(scratch), pack_name=model.model_id, add_hash_to_pack_name=False,
            only_archive=True,
        )
        fs.makedirs(MODELS_FOLDER, exist_ok=True)
        with open(packed, "rb") as source, fs.open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
    logger.info("saved model pack %s into the lake", model.model_id)
    return target
