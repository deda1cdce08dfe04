"""Files under the data folder that are not carelake ciphertext, and why none holds patient data.

Everything else under DIR must start with the carelake preamble (``CLKE``) or, for DuckDB marts,
be a DuckDB database encrypted by DuckDB itself. ``tests/test_full_run.py`` checks every file
of a full run against this list, and ``../shared/tools/phi_scan.py`` scans them all.
"""

from __future__ import annotations

from fnmatch import fnmatch

ALLOWED: dict[str, str] = {
    "lake.json": "the lake id and format version",
    "catalog.db": "the SQLite Iceberg catalog: namespaces, table names, metadata file locations",
    "catalog.db-journal": "SQLite's rollback journal of the catalog",
    "run-summary.json": "counts per resource type and stage status; no ids, names or text",
    "audit/audit.log": "one line per entry: a sequence number and the AES-GCM ciphertext of the "
                       "entry (see infra/audit.py)",
    "zenml/*": "ZenML's local store and artifacts: lake references (table names, snapshot ids), "
               "run metadata and metrics, never patient data (ml_pipelines/zenml_env.py)",
}

DUCKDB_ENCRYPTED = ("marts/*.duckdb",)


def allowed(relative: str) -> str | None:
    """Why a path (relative to DIR, with '/') may be plaintext; None: it must be ciphertext."""
    for pattern, reason in ALLOWED.items():
        if fnmatch(relative, pattern):
            return reason
    return None
