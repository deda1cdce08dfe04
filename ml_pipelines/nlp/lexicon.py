"""The ConText trigger lexicon: which phrases modify a mention, in which direction.

The terms are the published NegEx triggers (Chapman et al., ``negex_triggers.txt``) and medspaCy's
English ConText rules (``context_rules.json``), mapped onto carelake's four mention contexts. The
packaged ``context_lexicon.tsv`` is derived from those two files by ``derive_lexicon`` and checked
against them by the tests; at run time only the packaged file is read, so a stage never needs the
shared data folder.

Categories: ``negated``, ``hypothetical``, ``family`` (they set a mention's context), ``pseudo``
(a phrase that looks like a trigger but is not one: "no change"), and ``terminate`` (ends the scope
of the category named in ``scope``, or of every category when ``scope`` is ``all``).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from infra.errors import InputError

logger = logging.getLogger(__name__)

LEXICON_FILE = Path(__file__).with_name("context_lexicon.tsv")
HEADER = "phrase\tcategory\tdirection\tscope\torigin"

CATEGORIES = ("negated", "hypothetical", "family", "pseudo", "terminate")
DIRECTIONS = ("forward", "backward", "both", "none")

# NegEx tags: [PREN] pre-negation, [POST] post-negation, [PREP]/[POSP] pre/post possible negation
# (carelake reports a "possible" finding as hypothetical: it is not asserted), [PSEU] pseudo
# triggers, [CONJ] scope terminators.
_NEGEX_TAGS: dict[str, tuple[str, str, str]] = {
    "[PREN]": ("negated", "forward", "negated"),
    "[POST]": ("negated", "backward", "negated"),
    "[PREP]": ("hypothetical", "forward", "hypothetical"),
    "[POSP]": ("hypothetical", "backward", "hypothetical"),
    "[PSEU]": ("pseudo", "none", "all"),
    "[CONJ]": ("terminate", "none", "all"),
}

_MEDSPACY_CATEGORIES = {
    "NEGATED_EXISTENCE": "negated",
    "POSSIBLE_EXISTENCE": "hypothetical",
    "HYPOTHETICAL": "hypothetical",
    "FAMILY": "family",
}
_MEDSPACY_DIRECTIONS = {"FORWARD": "forward", "BACKWARD": "backward", "BIDIRECTIONAL": "both"}


@dataclass(frozen=True)
class Trigger:
    phrase: str
    category: str
    direction: str
    scope: str
    origin: str


def _expand_pattern(pattern: list[dict]) -> list[str]:
    """All phrases a medspaCy token pattern of LOWER strings, LOWER IN lists and OP '?' matches."""
    choices: list[list[str]] = []
    for token in pattern:
        lower = token.get("LOWER")
        options = [lower] if isinstance(lower, str) else list(lower["IN"])
        if token.get("OP") == "?":
            options.append("")
        choices.append(options)
    phrases = set()
    for combination in itertools.product(*choices):
        words = [word for word in combination if word]
        phrase = " ".join(words).replace(" '", "'")
        if phrase:
            phrases.add(phrase)
    return sorted(phrases)


def derive_lexicon(*, negex_triggers: Path, medspacy_rules: Path) -> list[Trigger]:
    """Map the NegEx triggers and medspaCy's rules onto carelake's categories, deduplicated."""
    triggers: dict[tuple[str, str], Trigger] = {}

    for line in negex_triggers.read_text(encoding="ascii").splitlines():
        fields = [field.strip() for field in line.split("\t") if field.strip()]
        if len(fields) != 2 or fields[1] not in _NEGEX_TAGS:
            continue
        category, direction, scope = _NEGEX_TAGS[fields[1]]
        phrase = " ".join(fields[0].lower().split())
        trigger = Trigger(phrase, category, direction, scope, "negex")
        triggers.setdefault((phrase, direction), trigger)

    rules = json.loads(medspacy_rules.read_text(encoding="utf-8"))["context_rules"]
    for rule in rules:
        category = _MEDSPACY_CATEGORIES.get(rule["category"])
        if category is None:
            continue
        if rule["direction"] == "TERMINATE":
            category, direction, scope = "terminate", "none", _MEDSPACY_CATEGORIES[rule["category"]]
        else:
            direction, scope = _MEDSPACY_DIRECTIONS[rule["direction"]], category
        phrases = _expand_pattern(rule["pattern"]) if rule["pattern"] else [rule["literal"].lower()]
        for phrase in phrases:
            key = (" ".join(phrase.split()), direction)
            triggers.setdefault(key, Trigger(key[0], category, direction, scope, "medspacy"))

    return sorted(triggers.values(), key=lambda trigger: (trigger.phrase, trigger.direction))


def format_lexicon(triggers: list[Trigger]) -> str:
    lines = [HEADER]
    lines += [
        f"{t.phrase}\t{t.category}\t{t.direction}\t{t.scope}\t{t.origin}" for t in triggers
    ]
    return "\n".join(lines) + "\n"


def load_lexicon(path: Path = LEXICON_FILE) -> list[Trigger]:
    """Read a lexicon TSV (the packaged one by default); raises InputError naming the bad line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != HEADER:
        raise InputError(f"{path}: the first line must be the header {HEADER!r}")
    triggers = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if (
            len(fields) != 5
            or not fields[0]
            or fields[1] not in CATEGORIES
            or fields[2] not in DIRECTIONS
        ):
            raise InputError(
                f"{path} line {number}: expected phrase, category ({', '.join(CATEGORIES)}), "
                f"direction ({', '.join(DIRECTIONS)}), scope and origin separated by tabs"
            )
        triggers.append(Trigger(*fields))
    logger.debug("loaded %d context triggers from %s", len(triggers), path.name)
    return triggers
