"""carelake's foundation: settings, keys, the encrypted storage layer, the lake and the command line."""

from infra import privacy_env as _privacy_env  # noqa: F401  (telemetry off before any library loads)
