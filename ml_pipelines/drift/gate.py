"""The drift gate: warn or fail per configuration, always printing what it measured and the
thresholds it measured against."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from infra.errors import ConfigError
from ml_pipelines.drift.compare import Comparison
from ml_pipelines.drift.config import GATE_MODES

logger = logging.getLogger(__name__)

SHOWN_FEATURES = 10


@dataclass(frozen=True)
class GateOutcome:
    """What the gate found: whether drift was found, whether the run may pass, and why."""

    mode: str
    drift: bool
    passed: bool
    lines: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "drift": self.drift, "passed": self.passed, "lines": self.lines}


def evaluate_gate(
    comparison: Comparison, *, mode: str, model_drift: list[dict[str, Any]] | None = None
) -> GateOutcome:
    """Data drift or model drift fails the gate in "fail" mode and warns in "warn" mode."""
    if mode not in GATE_MODES:
        raise ConfigError(f"drift gate mode is {mode!r}: use 'warn' or 'fail'")
    config = comparison.config
    drifted = comparison.drifted
    model_rows = model_drift or []
    model_drifted = [row for row in model_rows if row["drifted"]]
    drift = bool(drifted or model_drifted)

    lines = [
        f"drift gate ({mode}): {comparison.feature_set} {comparison.current} "
        f"({comparison.current_units} {comparison.unit_noun}) against {comparison.reference} "
        f"({comparison.reference_units})",
        f"thresholds: adjusted p <= {config.alpha} ({config.correction}), "
        f"effect_h >= {config.min_effect_size}, model drop > {config.model_drop}",
        f"measured: {len(comparison.features)} features tested, {len(drifted)} drifted, "
        f"{len(model_drifted)} of {len(model_rows)} model metrics dropped",
    ]
    ranked = sorted(comparison.features, key=lambda item: (not item.drifted, -item.effect_h))
    for item in ranked[:SHOWN_FEATURES]:
        lines.append(
            f"{'DRIFT' if item.drifted else 'ok   '} {item.description}: effect_h "
            f"{item.effect_h:.3f}, adjusted p {item.adjusted_p:.3g} ({item.test})"
        )
    for row in model_rows:
        lines.append(
            f"{'DRIFT' if row['drifted'] else 'ok   '} model {row['model']} {row['metric']}: "
            f"{row['reference']:.3f} -> {row['current']:.3f}, drop {row['drop']:.3f} "
            f"(threshold {row['threshold']:.3f})"
        )
    passed = not (drift and mode == "fail")
    lines.append(
        f"verdict: {'drift' if drift else 'no drift'}; gate "
        f"{'passes' if passed else 'fails'} in {mode} mode"
    )
    level = logging.INFO if passed else logging.ERROR
    for line in lines:
        logger.log(level, "%s", line)
    return GateOutcome(mode=mode, drift=drift, passed=passed, lines=lines)
