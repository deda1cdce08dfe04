"""FHIR sources and the load into the encrypted Iceberg lake."""
