"""carelake's foundation: settings, keys, encrypted storage, the lake, the command line."""

# Telemetry off before any library loads.
from infra import privacy_env as _privacy_env  # noqa: F401
