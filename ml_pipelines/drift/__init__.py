"""Clinical drift: windows, whylogs profiles, exact comparison statistics, the gate and reports.

The core works on ``FeatureSet`` frames from any source (FHIR files, the marts, NLP or vision
outputs); ``stage.py`` runs it over the lake and ``ml_pipelines/pipelines/drift.py`` in ZenML.
"""
