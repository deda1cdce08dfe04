"""ZenML steps of the clinical NLP pipeline; they pass lake references, never note text."""
