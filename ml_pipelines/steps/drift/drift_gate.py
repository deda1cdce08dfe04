"""Step: the gate's verdict from the run summary (the measured lines are in the report)."""

from __future__ import annotations

from typing import Any

from zenml import step


@step(enable_cache=False)
def drift_gate(summary: dict[str, Any]) -> bool:
    """True when drift was found; a "fail" gate has already marked ``passed`` false."""
    return bool(summary.get("has_drift"))
