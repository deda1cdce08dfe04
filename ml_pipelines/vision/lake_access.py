"""How a ZenML step gets the lake: by its data folder, a reference that carries no patient data.

The stage registers the lake it already holds open; a step running in the same process (ZenML's
local orchestrator) uses that one, and a step in another process opens the lake of that folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_OPEN: dict[str, Any] = {}


def register(lake: Any) -> str:
    """Remember ``lake`` for steps of this process; returns the reference to pass to them."""
    reference = str(Path(lake.data_dir).resolve())
    _OPEN[reference] = lake
    return reference


def lake_for(reference: str) -> Any:
    if reference in _OPEN:
        return _OPEN[reference]
    from infra.lake import Lake
    from infra.settings import load_settings

    lake = Lake.open(load_settings(data_dir=reference), create=False)
    _OPEN[reference] = lake
    return lake
