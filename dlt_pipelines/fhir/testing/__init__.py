"""carelake's own FHIR REST and Bulk Data test server, shipped for tests and benchmarks to start."""

from dlt_pipelines.fhir.testing.server import FhirTestServer
from dlt_pipelines.fhir.testing.store import read_ndjson

__all__ = ["FhirTestServer", "read_ndjson"]
