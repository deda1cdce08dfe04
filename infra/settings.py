"""Load carelake's settings: the packaged defaults, then a user's file, then the environment.

The defaults and their documentation live in ``infra/carelake.toml``. A user's file named by
``CARELAKE_SETTINGS`` overrides them key by key, and ``CARELAKE_<TABLE>__<KEY>`` environment
variables override both (``CARELAKE_SOURCES__FHIR_REST__PAGE_SIZE=100`` reaches a nested table).
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.errors import ConfigError

DEFAULTS_FILE = Path(__file__).with_name("carelake.toml")
ENV_PREFIX = "CARELAKE_"


def _merge(base: dict[str, Any], override: dict[str, Any], *, origin: str) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin=origin)
        elif key in base and isinstance(base[key], dict):
            raise ConfigError(f"{origin}: '{key}' must be a table of settings, not a value")
        else:
            base[key] = value


def _coerce(raw: str, like: Any, *, name: str) -> Any:
    if isinstance(like, bool):
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"environment variable {name} must be true or false, not {raw!r}")
    if isinstance(like, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name} must be a whole number") from None
    if isinstance(like, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name} must be a number") from None
    return raw


def _environment_overrides(values: dict[str, Any], environ: dict[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        table = values
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"environment variable {name} names a value, not a table")
        table[path[-1]] = _coerce(raw, table.get(path[-1], ""), name=name)


@dataclass(frozen=True)
class Settings:
    """Resolved settings. ``values`` holds every table; the properties are the common paths."""

    values: dict[str, Any] = field(repr=False)

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.get(name, {}) or {})

    @property
    def data_dir(self) -> Path:
        return Path(self.get("lake.data_dir")).expanduser().resolve()

    @property
    def key_dir(self) -> Path:
        configured = self.get("keys.key_dir") or ""
        if configured:
            return Path(configured).expanduser().resolve()
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return (Path(base) / "carelake" / "keys").resolve()

    def with_overrides(self, **dotted: Any) -> Settings:
        values = copy.deepcopy(self.values)
        for key, value in dotted.items():
            table = values
            parts = key.split(".")
            for part in parts[:-1]:
                table = table.setdefault(part, {})
            table[parts[-1]] = value
        return Settings(values)


def load_settings(
    *, data_dir: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Defaults, then ``CARELAKE_SETTINGS``'s file, then ``CARELAKE_*`` variables, then args."""
    environ = dict(os.environ if environ is None else environ)
    with DEFAULTS_FILE.open("rb") as handle:
        values = tomllib.load(handle)

    user_file = environ.get("CARELAKE_SETTINGS")
    if user_file:
        path = Path(user_file).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"CARELAKE_SETTINGS names {path}, which is not a file: create it or unset "
                "the variable"
            )
        try:
            with path.open("rb") as handle:
                _merge(values, tomllib.load(handle), origin=str(path))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML: {error}") from None

    _environment_overrides(values, environ)

    settings = Settings(values)
    if data_dir is not None:
        settings = settings.with_overrides(**{"lake.data_dir": str(data_dir)})
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    policy = settings.get("privacy.policy")
    if policy not in {"limited", "safe_harbor"}:
        raise ConfigError(
            f"privacy.policy is {policy!r}: use 'limited' (a limited data set) or 'safe_harbor'"
        )
    if settings.get("keys.provider") not in {"file", "pkcs11"}:
        raise ConfigError("keys.provider must be 'file' or 'pkcs11'")
    segment = settings.get("crypto.segment_size")
    if not isinstance(segment, int) or not 4096 <= segment <= 1 << 24:
        raise ConfigError("crypto.segment_size must be a whole number of bytes in [4096, 16 MiB]")
    key_dir, data_dir = settings.key_dir, settings.data_dir
    if key_dir == data_dir or data_dir in key_dir.parents:
        raise ConfigError(
            f"keys.key_dir ({key_dir}) lies inside lake.data_dir ({data_dir}): keys must live "
            "outside the data folder, or a copy of the lake carries its own keys"
        )
