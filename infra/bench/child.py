"""The child process of one measurement: ``python -m infra.bench.child SPEC.json``.

The spec names a function (``module:function``), its keyword arguments and the file to write the
outcome to. Only the call itself is timed, not the interpreter's start or the imports before it.
The outcome records counts, a status and, for a failure, the exception's type and (for carelake's
own errors, whose messages carry no patient data) its message.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import infra  # noqa: F401  (telemetry off before any library loads)
from infra.errors import CarelakeError, StageUnavailable

logger = logging.getLogger(__name__)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    module_name, _, function_name = spec["function"].partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except ModuleNotFoundError as error:
        return {"status": "not available", "reason": f"{module_name} is not part of this build "
                                                      f"({error.name})"}

    started = time.perf_counter()
    try:
        counts = function(**spec.get("arguments", {}))
        outcome: dict[str, Any] = {"status": "ok", "counts": counts}
    except StageUnavailable as reason:
        outcome = {"status": "not available", "reason": str(reason)}
    except CarelakeError as error:
        outcome = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
    except Exception as error:  # noqa: BLE001 - a failed stage is a result, not a crash
        traceback.print_exc(file=sys.stderr)
        outcome = {"status": "failed", "reason": f"{type(error).__name__} (traceback on stderr)"}
    outcome["seconds"] = time.perf_counter() - started
    return outcome


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("dlt", "pyiceberg", "urllib3", "httpx", "zenml", "numexpr", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    spec = json.loads(Path(argv[0]).read_text())
    outcome = run(spec)
    Path(spec["result"]).write_text(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
