"""The one compiled part of carelake: the ingest's scan of FHIR JSON text (``_scan.c``).

Everything else is configured in pyproject.toml. The extension is optional: without a C compiler
the install goes on and the ingest uses the same scan written as regular expressions.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("dlt_pipelines.fhir._scan", ["dlt_pipelines/fhir/_scan.c"],
                             extra_compile_args=["-O2"], optional=True)])
