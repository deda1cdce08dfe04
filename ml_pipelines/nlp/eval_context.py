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
