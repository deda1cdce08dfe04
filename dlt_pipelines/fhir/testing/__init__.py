"""carelake's own FHIR REST and Bulk Data test server, shipped so tests and benchmarks can start it."""

from dlt_pipelines.fhir.testing.server import FhirTestServer
from dlt_pipelines.fhir.testing.store import read_ndjson

__all__ = ["FhirTestServer", "read_ndjson"]
