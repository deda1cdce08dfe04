"""Measure ConText on the NegEx test kit: physician-annotated sentences, one target phrase each.

The kit (``negex/chapmanbe-negex/Annotations-1-120.txt``) labels each phrase Affirmed or Negated.
The rules were written from the trigger lexicon alone; no sentence of the kit was read to write or
tune them, so the kit is an evaluation set. Rows whose phrase cannot be found in the sentence are
counted and left out of the scores.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import InputError
from ml_pipelines.nlp.context import CONTEXTS, ContextAssessor
from ml_pipelines.nlp.scoring import per_class

logger = logging.getLogger(__name__)

NEGEX_KIT = Path("negex") / "chapmanbe-negex" / "Annotations-1-120.txt"
_LABELS = {"affirmed": "affirmed", "negated": "negated"}


@dataclass(frozen=True)
class KitRow:
    report: str
    phrase: str
    sentence: str
    label: str


def _unquote(field: str) -> str:
    if len(field) >= 2 and field.startswith('"') and field.endswith('"'):
        return field[1:-1].replace('""', '"')
    return field


def read_kit(path: Path) -> list[KitRow]:
    if not path.is_file():
        raise InputError(f"the NegEx test kit is not at {path}: point --data at the shared data")
    rows = []
    lines = path.read_text(encoding="ascii").splitlines()
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 4 or fields[3].strip().lower() not in _LABELS:
            raise InputError(f"{path.name} line {number}: expected 4 tab-separated fields")
        report, phrase, sentence, label = (_unquote(field.strip()) for field in fields)
        rows.append(KitRow(report, phrase, sentence, _LABELS[label.lower()]))
    return rows


def find_phrase(sentence: str, phrase: str) -> tuple[int, int] | None:
    """The span of the annotated phrase: its upper-cased occurrence first, as the kit marks it."""
    pattern = r"\s+".join(map(re.escape, phrase.split()))
    for flags in (0, re.IGNORECASE):
        target = pattern.upper() if flags == 0 else pattern
        match = re.search(target, sentence, flags)
        if match:
            return match.start(), match.end()
    return None


def evaluate_context(data_dir: Path, *, assessor: ContextAssessor | None = None) -> dict[str, Any]:
    """Per-class precision and recall of ConText on the kit under ``data_dir``."""
    assessor = assessor or ContextAssessor()
    rows = read_kit(data_dir / NEGEX_KIT)

    gold, predicted, missing = [], [], 0
    for row in rows:
        span = find_phrase(row.sentence, row.phrase)
        if span is None:
            missing += 1
            continue
        gold.append(row.label)
        predicted.append(assessor.assess(row.sentence, [span])[0])

    scores = per_class(gold, predicted, CONTEXTS)
    confusion = {
        label: {
            p: sum(1 for g, q in zip(gold, predicted) if g == label and q == p) for p in CONTEXTS
        }
        for label in _LABELS.values()
    }
    accuracy = round(sum(1 for g, p in zip(gold, predicted) if g == p) / len(gold), 4)
    logger.info(
        "ConText on the NegEx kit: %d sentences scored, %d phrases not found, accuracy %.4f",
        len(gold), missing, accuracy,
    )
    return {
        "evaluation_set": "NegEx test kit (Annotations-1-120.txt, rows present here)",
        "rows": len(rows),
        "scored": len(gold),
        "phrase_not_found": missing,
        "accuracy": accuracy,
        "per_class": {label: score.as_json() for label, score in scores.items()},
        "confusion": confusion,
    }


CTAKES_GOLD = Path(__file__).with_name("ctakes_context_gold.tsv")
CTAKES_CURATED = Path("ctakes-examples-notes") / "curated"


def read_ctakes_gold(path: Path = CTAKES_GOLD) -> list[tuple[str, str, int, str]]:
    """``(file, phrase, occurrence, label)`` rows: the n-th occurrence of the phrase in the note."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 4 or fields[3] not in CONTEXTS or not fields[2].isdigit():
            raise InputError(f"{path.name} line {number}: expected file, phrase, occurrence, label")
        rows.append((fields[0], fields[1], int(fields[2]), fields[3]))
    return rows


def evaluate_context_ctakes(
    data_dir: Path, *, assessor: ContextAssessor | None = None
) -> dict[str, Any]:
    """Per-class precision and recall on cTAKES sentences annotated by hand (before any tuning):
    the only set here with family-history and hypothetical labels. Each phrase is assessed in
    its whole note, as the stage would see it."""
    assessor = assessor or ContextAssessor()
    gold, predicted = [], []
    for name, phrase, occurrence, label in read_ctakes_gold():
        path = data_dir / CTAKES_CURATED / name
        if not path.is_file():
            raise InputError(f"a cTAKES note of the context gold is missing under {path.parent}")
        text = path.read_text(encoding="utf-8")
        pattern = r"\s+".join(map(re.escape, phrase.split()))
        matches = list(re.finditer(pattern, text))
        if len(matches) < occurrence:
            raise InputError(f"{CTAKES_GOLD.name}: a phrase has fewer occurrences than listed")
        match = matches[occurrence - 1]
        gold.append(label)
        predicted.append(assessor.assess(text, [(match.start(), match.end())])[0])

    scores = per_class(gold, predicted, CONTEXTS)
    accuracy = round(sum(1 for g, p in zip(gold, predicted) if g == p) / len(gold), 4)
    logger.info("ConText on the cTAKES gold: %d phrases, accuracy %.4f", len(gold), accuracy)
    return {
        "evaluation_set": "cTAKES curated notes, phrases labelled by hand before tuning",
        "scored": len(gold),
        "accuracy": accuracy,
        "per_class": {label: score.as_json() for label, score in scores.items()},
    }
