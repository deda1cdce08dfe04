"""The imaging stage's settings, read once from ``[vision]`` in carelake's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from infra.errors import ConfigError
from ml_pipelines.vision.inference import DEFAULT_BATCH_SIZE

DEFAULT_MODEL = "densenet121-res224-all"


@dataclass(frozen=True)
class VisionOptions:
    model: str = DEFAULT_MODEL
    cache_dir: str = ""
    weights_sha256: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "auto"

    @classmethod
    def from_settings(cls, settings: Any) -> VisionOptions:
        section = settings.section("vision")
        batch_size = section.get("batch_size", DEFAULT_BATCH_SIZE)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"vision.batch_size is {batch_size!r}: use a whole number >= 1")
        device = str(section.get("device", "auto") or "auto")
        if device not in {"auto", "cpu", "cuda"} and not device.startswith("cuda:"):
            raise ConfigError(f"vision.device is {device!r}: use auto, cpu, cuda or cuda:<n>")
        return cls(
            model=str(section.get("model") or DEFAULT_MODEL),
            cache_dir=str(section.get("cache_dir") or ""),
            weights_sha256=str(section.get("weights_sha256") or ""),
            batch_size=batch_size,
            device=device,
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
