"""Batched inference: stacks prepared images, runs the network, returns probabilities.

The GPU is used when PyTorch sees one, the CPU otherwise. Gradients are off and each batch is moved
to the device only for its forward pass, so memory stays at one batch of inputs plus the network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from infra.errors import StageUnavailable
from ml_pipelines.vision.weights import LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8


def choose_device(preference: str = "auto") -> str:
    """``"cuda"`` when asked for or when ``"auto"`` finds a GPU, else ``"cpu"``."""
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise StageUnavailable(
            f"vision.device is {preference} but PyTorch sees no GPU here: set it to auto or cpu"
        )
    return preference


def score(
    model: LoadedModel, inputs: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Probabilities of shape (len(inputs), labels), float32, in the model's label order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    labels = len(model.spec.labels)
    if not inputs:
        return np.zeros((0, labels), dtype=np.float32)

    device = next(model.network.parameters()).device
    outputs: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.stack(inputs[start:start + batch_size])).to(device)
            outputs.append(model.network(batch).float().cpu().numpy())
    probabilities = np.concatenate(outputs, axis=0)
    if probabilities.shape != (len(inputs), labels):
        raise RuntimeError(
            f"{model.spec.model_id} returned shape {probabilities.shape}, expected "
            f"({len(inputs)}, {labels}): the weights do not match the label list"
        )
    return probabilities
