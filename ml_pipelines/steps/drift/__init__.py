"""ZenML steps of the drift and retraining pipelines; they pass lake references and numbers."""
