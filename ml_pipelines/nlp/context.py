"""ConText: mark each concept mention affirmed, negated, hypothetical or family history.

The algorithm follows Harkema et al.'s ConText (a generalisation of Chapman's NegEx): a trigger
phrase opens a scope that runs forward to the end of its sentence, backward to its start, or both,
and a termination phrase ("but", "aside from", ...) closes a scope early. Pseudo triggers ("no
change") are matched so that the shorter trigger inside them ("no") does not fire. A trigger that
overlaps a mention is part of the concept's name, not a modifier, and is ignored.

When several scopes cover a mention, the strongest reading wins: family history (the finding is not
the patient's), then hypothetical (it is not asserted), then negated. A mention no scope covers is
affirmed. Only ``assess`` says "affirmed": a caller that could not run it must record
``NOT_ASSESSED`` instead.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ml_pipelines.nlp.lexicon import Trigger, load_lexicon

AFFIRMED = "affirmed"
NEGATED = "negated"
HYPOTHETICAL = "hypothetical"
FAMILY = "family"
NOT_ASSESSED = "not_assessed"
CONTEXTS = (AFFIRMED, NEGATED, HYPOTHETICAL, FAMILY)
_PRECEDENCE = (FAMILY, HYPOTHETICAL, NEGATED)

# A sentence ends at . ! ? followed by white space, at a blank line, before a list bullet or a
# markdown heading on a new line, and before an upper-case "SECTION:" heading on a new line.
_SENTENCE_END = re.compile(
    r"(?<=[.!?])\s+|\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*\u2022#]|\d+[.)]\s))|\n(?=[A-Z][A-Z /&]{2,}:)"
)


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    triggers: tuple[Trigger, ...]


def sentence_bounds(text: str) -> list[tuple[int, int]]:
    """Character ranges of the sentences of ``text``, covering it without gaps."""
    bounds, start = [], 0
    for boundary in _SENTENCE_END.finditer(text):
        if boundary.start() > start:
            bounds.append((start, boundary.start()))
        start = boundary.end()
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds


class ContextAssessor:
    """Compiled trigger lexicon; ``assess`` gives one context per mention span."""

    def __init__(self, triggers: Sequence[Trigger] | None = None) -> None:
        triggers = list(load_lexicon() if triggers is None else triggers)
        self._by_phrase: dict[str, tuple[Trigger, ...]] = {}
        for trigger in triggers:
            self._by_phrase[trigger.phrase] = self._by_phrase.get(trigger.phrase, ()) + (trigger,)
        phrases = sorted(self._by_phrase, key=len, reverse=True)
        alternation = "|".join(r"\s+".join(map(re.escape, p.split())) for p in phrases)
        self._pattern = re.compile(rf"(?<![\w/])(?:{alternation})(?![\w/])", re.IGNORECASE)
        self.trigger_count = len(triggers)

    def _matches(self, text: str) -> list[_Match]:
        found = []
        for match in self._pattern.finditer(text):
            phrase = " ".join(match.group(0).lower().split())
            found.append(_Match(match.start(), match.end(), self._by_phrase[phrase]))
        return found

    def assess(self, text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
        """The context of each ``(start, end)`` mention span of ``text``, in the order given."""
        if not spans:
            return []
        sentences = sentence_bounds(text)
        starts = [start for start, _ in sentences]
        matches = [
            match
            for match in self._matches(text)
            if not any(match.start < end and start < match.end for start, end in spans)
        ]
        by_sentence: dict[int, list[_Match]] = {}
        for match in matches:
            by_sentence.setdefault(bisect.bisect_right(starts, match.start) - 1, []).append(match)

        contexts = []
        for start, end in spans:
            index = bisect.bisect_right(starts, start) - 1
            found = self._covering(by_sentence.get(index, []), start, end)
            contexts.append(next((c for c in _PRECEDENCE if c in found), AFFIRMED))
        return contexts

    @staticmethod
    def _covering(matches: list[_Match], start: int, end: int) -> set[str]:
        """Categories whose scope, opened by a trigger of this sentence, covers the mention."""
        covering: set[str] = set()
        for position, match in enumerate(matches):
            for trigger in match.triggers:
                if trigger.category not in _PRECEDENCE:
                    continue
                ahead = trigger.direction in {"forward", "both"} and match.end <= start
                behind = trigger.direction in {"backward", "both"} and end <= match.start
                if ahead:
                    between = matches[position + 1:]
                    between = [m for m in between if m.start < start]
                elif behind:
                    between = [m for m in matches[:position] if m.end > end]
                else:
                    continue
                if not any(_terminates(other, trigger.category) for other in between):
                    covering.add(trigger.category)
        return covering


def _terminates(match: _Match, category: str) -> bool:
    return any(
        trigger.category == "terminate" and trigger.scope in {"all", category}
        for trigger in match.triggers
    )
