"""Point ZenML at a local store inside the lake's data folder, before ZenML is imported.

ZenML keeps its SQLite store, its local artifact store and its Model Control Plane under
``ZENML_CONFIG_PATH``. carelake puts that at ``DIR/zenml``: its steps pass lake references (table
names, snapshot ids) and metrics, never patient data, so the folder is on the at-rest allow-list
(``infra/allowlist.py``) and the plaintext scan covers it. Analytics stay off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ZENML_FOLDER = "zenml"


def use_local_zenml(data_dir: Path) -> Path:
    """Set ZenML's config path to ``data_dir/zenml``; call before the first ``import zenml``."""
    target = (Path(data_dir) / ZENML_FOLDER).resolve()
    current = os.environ.get("ZENML_CONFIG_PATH")
    if "zenml" in sys.modules and current and Path(current).resolve() != target:
        raise RuntimeError(
            f"ZenML was already loaded with its store at {current}; start a new process to use "
            f"the store of {data_dir}"
        )
    target.mkdir(parents=True, exist_ok=True)
    os.environ["ZENML_CONFIG_PATH"] = str(target)
    os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
    os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "WARN")
    os.environ.setdefault("ZENML_ENABLE_RICH_TRACEBACK", "false")
    # Steps are resolved as modules of this repository, whatever script started the process.
    os.environ.setdefault("ZENML_CUSTOM_SOURCE_ROOT", str(Path(__file__).resolve().parents[1]))
    return target
