"""ZenML pipelines of the ML sidecar: clinical NLP, imaging and drift."""
