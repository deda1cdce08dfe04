"""ZenML pipelines of the ML sidecar: clinical NLP, imaging and drift."""

from infra import privacy_env as _privacy_env  # noqa: F401  (telemetry off before ZenML loads)
