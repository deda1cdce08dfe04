"""The registry of erasers: one per stage that writes patient data.

A stage registers with ``@eraser("nlp_mentions")`` a function ``(lake, patient_key) -> int`` that
deletes the patient's rows from what that stage wrote and returns how many it deleted. The module
that defines it is listed in ``ERASER_MODULES`` so ``carelake forget`` finds every eraser even when
that stage has not run in this process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Eraser = Callable[[Any, str], int]

ERASERS: dict[str, Eraser] = {}

ERASER_MODULES: list[str] = [
    "dlt_pipelines.fhir.erase",
    "infra.marts",
    "ml_pipelines.nlp.erase",
    "ml_pipelines.vision.erase",
    "ml_pipelines.drift.erase",
]


def eraser(name: str) -> Callable[[Eraser], Eraser]:
    def register(function: Eraser) -> Eraser:
        ERASERS[name] = function
        return function

    return register


def load_erasers() -> dict[str, Eraser]:
    for module in ERASER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if not (error.name and module.startswith(error.name)):
                raise
    return dict(ERASERS)
