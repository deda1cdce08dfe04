"""Synthetic person names for scaled copies, built from syllables so that no list of real people
is involved.

Each name part of the source (a given name, a family name) maps to a new one picked by a keyed hash
of the copy and the old part, so the same person gets the same new name everywhere in a copy (the
Patient, the display of a reference to them, the text of their notes) without any lookup table.
Synthea writes a number after each name part (``Sumiko254``); the new part keeps a number of the
same length, so scaled data keeps Synthea's shape.
"""

from __future__ import annotations

import itertools
import re

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "oa")
_CODAS = ("", "n", "l", "r", "s", "th", "x", "m")

_NAME_PART = re.compile(r"(.*?)(\d*)")


def _syllables(onsets: tuple[str, ...], codas: tuple[str, ...]) -> list[str]:
    combinations = itertools.product(onsets, _VOWELS, codas)
    return [onset + vowel + coda for onset, vowel, coda in combinations]


def _pool(first: list[str], second: list[str], *, size: int) -> tuple[str, ...]:
    """``size`` two-syllable names spread evenly over every combination, in a fixed order."""
    combined = sorted({(a + b).capitalize() for a, b in itertools.product(first, second)})
    step = len(combined) / size
    return tuple(combined[int(index * step)] for index in range(size))


GIVEN_NAMES: tuple[str, ...] = _pool(
    _syllables(_ONSETS[:9], ("", "n", "l")), _syllables(_ONSETS[9:], ("", "ne")), size=600
)
FAMILY_NAMES: tuple[str, ...] = _pool(
    _syllables(_ONSETS, ("", "r", "s")), _syllables(("b", "d", "k", "m", "v", "w"), _CODAS),
    size=900,
)


def new_name_part(old: str, *, kind: str, draw: int) -> str:
    """The new name part for ``old`` (``kind`` is "given" or "family"), chosen by ``draw``.

    ``draw`` is a 64-bit number from the caller's keyed hash of (copy, kind, old part). A number
    after the letters is replaced by a number of the same length; the new letters never equal the
    old ones, so a copy never carries the source's name.
    """
    letters, digits = _NAME_PART.fullmatch(old).groups()  # type: ignore[union-attr]
    pool = GIVEN_NAMES if kind == "given" else FAMILY_NAMES
    choice = pool[draw % len(pool)]
    if choice == letters:
        choice = pool[(draw + 1) % len(pool)]
    if not digits:
        return choice
    number = draw >> 20
    first = str(1 + number % 9)
    rest = "".join(str((number >> (4 * index)) % 10) for index in range(1, len(digits)))
    return choice + first + rest
