"""Private scratch folders for the plaintext that must exist for a moment (dlt's working files).

They live on memory-backed storage where the machine has it (/dev/shm), are created mode 0700,
removed after use, and a crashed run's leftovers are wiped at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "carelake-scratch-"


def scratch_root() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def wipe_leftovers(root: Path | None = None) -> int:
    """Remove scratch folders of runs that are no longer alive; returns how many were removed."""
    root = root or scratch_root()
    removed = 0
    for folder in root.glob(SCRATCH_PREFIX + "*"):
        pid_text = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    if removed:
        logger.info("wiped %d scratch folder(s) left by crashed runs", removed)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def private_scratch(purpose: str) -> Iterator[Path]:
    root = scratch_root()
    wipe_leftovers(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-{purpose}-", dir=root))
    os.chmod(folder, 0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
