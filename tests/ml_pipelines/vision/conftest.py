"""Fixtures of the imaging tests: the real TorchXRayVision test images, a lake, test weights."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from vision_helpers import WEIGHTS_FILE, random_network  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def xray_images(shared_data: Path) -> Path:
    """TorchXRayVision's own test images (see its SOURCE.md in the shared data)."""
    return shared_data / "torchxrayvision-test-images"


@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    """A weights cache holding the random network's state dict under the release file's name."""
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(random_network().state_dict(), folder / WEIGHTS_FILE)
    return folder
