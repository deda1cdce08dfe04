"""The one compiled part of carelake: the ingest's pass over FHIR JSON text (``_scan.c``), which
validates a resource, checks its dates and builds its bronze row. It hashes with OpenSSL's
SHA-256 (``libcrypto``, the library Python's own ``hashlib`` uses).

Everything else is configured in pyproject.toml. The extension is optional: without a C compiler
or OpenSSL's headers the install goes on and the ingest does the same work in Python, slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("dlt_pipelines.fhir._scan", ["dlt_pipelines/fhir/_scan.c"],
                             libraries=["crypto"], extra_compile_args=["-O2"], optional=True)])
