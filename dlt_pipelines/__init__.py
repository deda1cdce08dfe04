"""FHIR sources and the load into the encrypted Iceberg lake."""

from infra import privacy_env as _privacy_env  # noqa: F401  (telemetry off before dlt loads)
