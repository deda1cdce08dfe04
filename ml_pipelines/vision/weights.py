"""Find, verify and load TorchXRayVision weights without ever reaching the network.

TorchXRayVision keeps each model's weights in a cache folder (``~/.torchxrayvision/models_data/``
unless told otherwise) under the basename of its release URL, and downloads the file when it is
missing. carelake cannot download, so it looks for the file itself first and, when it is absent,
says which file to put in which folder. It never builds a model that has no trained weights.

The sha256 of the file loaded is the provenance every finding carries; when the settings pin a hash
(``vision.weights_sha256``) a different file is refused.

Loading does not run code from the file. A plain state dict loads with ``torch.load(...,
weights_only=True)``. TorchXRayVision's release files are whole pickled modules, some in PyTorch's
pre-1.6 format; they load once every global they name is a ``torch.nn`` or TorchXRayVision module
class or one of the tensor-rebuilding functions ``weights_only`` allows (``weights_only`` for the
zip format, a restricted unpickler for the old one). A file that names anything else is only
unpickled in full when its sha256 matches the pinned one.
"""

from __future__ import annotations

import _compat_pickle
import functools
import hashlib
import logging
import math
import os
import pickle
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchxrayvision as xrv
from torch.serialization import safe_globals

from infra.errors import ConfigError, StageUnavailable

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """What TorchXRayVision publishes about one set of weights."""

    model_id: str
    file_name: str
    labels: tuple[str, ...]
    thresholds: tuple[float | None, ...]
    resolution: int


@dataclass
class LoadedModel:
    """A trained network with its provenance."""

    spec: ModelSpec
    network: torch.nn.Module
    weights_path: Path
    weights_sha256: str


def model_spec(model_id: str) -> ModelSpec:
    """The published facts about ``model_id``; only DenseNet-121 weights are supported."""
    entry = xrv.models.model_urls.get(model_id)
    supported = sorted(name for name in xrv.models.model_urls if name.startswith("densenet"))
    if entry is None or not model_id.startswith("densenet"):
        raise ConfigError(
            f"vision.model is {model_id!r}, which carelake does not support: use one of "
            f"{', '.join(supported)}"
        )
    thresholds = tuple(
        None if value is None or math.isnan(float(value)) else float(value)
        for value in entry.get("op_threshs") or [None] * len(entry["labels"])
    )
    return ModelSpec(
        model_id=model_id,
        file_name=os.path.basename(entry["weights_url"]),
        labels=tuple(entry["labels"]),
        thresholds=thresholds,
        resolution=int(entry.get("input_resolution", 224)),
    )


def cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The weights folder: ``vision.cache_dir`` when set, else TorchXRayVision's default."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(xrv.utils.get_cache_dir()).expanduser()


def weights_path(spec: ModelSpec, *, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where the weights must be; raises ``StageUnavailable`` naming the file when it is absent."""
    folder = cache_folder(cache_dir)
    path = folder / spec.file_name
    if not path.is_file():
        raise StageUnavailable(f"weights not available: put {spec.file_name} in {folder}")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(
    spec: ModelSpec, *, cache_dir: str | os.PathLike[str] | None, pinned_sha256: str = ""
) -> tuple[Path, str]:
    """The weights file and its sha256; ``StageUnavailable`` when absent or not the pinned file."""
    path = weights_path(spec, cache_dir=cache_dir)
    sha256 = file_sha256(path)
    pinned = pinned_sha256.strip().lower()
    if pinned and pinned != sha256:
        raise StageUnavailable(
            f"weights file {spec.file_name} in {path.parent} has sha256 {sha256}, but "
            f"vision.weights_sha256 pins {pinned}: put the pinned file there or change the pin"
        )
    return path, sha256


def load_model(
    model_id: str,
    *,
    cache_dir: str | os.PathLike[str] | None,
    pinned_sha256: str = "",
    device: str = "cpu",
) -> LoadedModel:
    """Load trained weights into TorchXRayVision's DenseNet; never downloads, never guesses."""
    spec = model_spec(model_id)
    path, sha256 = verify_weights(spec, cache_dir=cache_dir, pinned_sha256=pinned_sha256)
    pinned = pinned_sha256.strip().lower()

    state = _state_dict(_read_checkpoint(path, sha256=sha256, pinned=pinned))
    network = xrv.models.DenseNet(num_classes=len(spec.labels))
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise StageUnavailable(
            f"weights file {spec.file_name} in {path.parent} does not fit {model_id}'s "
            f"DenseNet-121 ({str(error).splitlines()[0]}): put the release file of this model "
            "there"
        ) from None

    # raw sigmoid probabilities; the operating-point thresholds are recorded beside them
    network.targets = list(spec.labels)
    network.op_threshs = None
    network.apply_sigmoid = True
    network.input_resolution = spec.resolution
    network.eval().to(device)
    logger.info("loaded %s weights (%d labels) sha256 %s on %s",
                model_id, len(spec.labels), sha256[:12], device)
    return LoadedModel(spec=spec, network=network, weights_path=path, weights_sha256=sha256)


def _read_checkpoint(path: Path, *, sha256: str, pinned: str) -> object:
    try:
        with safe_globals(_module_classes()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        # PyTorch's pre-1.6 format, which weights_only cannot read: the same allow-list, enforced
        # by an unpickler that refuses every other global
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_RESTRICTED_PICKLE)
    except pickle.UnpicklingError as error:
        blocked = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error)))) or ["unknown content"]
    if pinned and pinned == sha256:
        # the operator vouched for exactly this file by pinning its hash
        return torch.load(path, map_location="cpu", weights_only=False)
    raise StageUnavailable(
        f"weights file {path.name} in {path.parent} names classes outside torch.nn and "
        f"TorchXRayVision ({', '.join(blocked)}); loading it would run its code: if you trust "
        f"it, set vision.weights_sha256 = \"{sha256}\""
    )


def _module_classes() -> list[type]:
    # the module classes a pickled TorchXRayVision model is made of, and nothing else
    namespaces = (vars(torch.nn), vars(xrv.models))
    return [value for namespace in namespaces for value in namespace.values()
            if isinstance(value, type) and issubclass(value, torch.nn.Module)]


@functools.cache
def _allowed_globals() -> frozenset[str]:
    from torch import _weights_only_unpickler

    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in _module_classes()}
    return frozenset(names | set(_weights_only_unpickler._get_allowed_globals()))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 streams name Python 2 modules (__builtin__.set); judge the Python 3 name
        python3 = _compat_pickle.NAME_MAPPING.get((module, name))
        target = ".".join(python3) if python3 else (
            f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")
        if target not in _allowed_globals() and target not in _BUILTINS:
            raise pickle.UnpicklingError(f"GLOBAL {target} is not on the allow-list")
        return super().find_class(module, name)


def _restricted_load(file: Any, **options: Any) -> Any:
    return _RestrictedUnpickler(file, **options).load()


_BUILTINS = frozenset({"builtins.set", "builtins.frozenset", "builtins.dict", "builtins.list",
                       "builtins.tuple", "builtins.int", "builtins.float", "builtins.bool",
                       "builtins.str", "builtins.bytes"})

_RESTRICTED_PICKLE = types.ModuleType("carelake_restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_RESTRICTED_PICKLE.load = _restricted_load  # type: ignore[attr-defined]
_RESTRICTED_PICKLE.__version__ = pickle.format_version  # type: ignore[attr-defined]


def _state_dict(checkpoint: object) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, torch.nn.Module):
        for module in checkpoint.modules():
            # modules pickled by PyTorch before 1.6 lack this attribute, which state_dict reads
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        state = checkpoint.state_dict()
    elif isinstance(checkpoint, Mapping):
        state = checkpoint
        for key in ("state_dict", "model_state_dict"):
            if isinstance(checkpoint.get(key), Mapping):
                state = checkpoint[key]
    else:
        raise StageUnavailable(
            f"weights file holds a {type(checkpoint).__name__}, not a model or a state dict: put "
            "the TorchXRayVision release file there"
        )
    # thresholds come from TorchXRayVision's published table, not from a buffer in the file
    return {name: tensor for name, tensor in state.items() if name != "op_threshs"}
