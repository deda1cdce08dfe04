"""Build the dbt marts from the lake, in-process, into an encrypted DuckDB database.

``build`` binds the open lake to the carelake dbt plugin, runs ``dbt build`` with dbt's target and
log folders inside a private scratch folder (dbt's working files hold compiled SQL and run results,
never to be left in plaintext under the data folder), checks source freshness, computes the column
lineage, and optionally runs ``dbt docs generate`` and stores the static site encrypted under
``lake.fs`` at ``docs/site/``. The marts land in ``DIR/marts/marts.duckdb``, or for a build as of
a timestamp in ``DIR/marts/marts-asof-<timestamp>.duckdb``, both encrypted by DuckDB with the
lake's ``marts`` key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from infra import dbt_plugin, lineage
from infra.errors import CarelakeError, ConfigError, StageUnavailable
from infra.forget_registry import eraser
from infra.scratch import private_scratch

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1]
PROFILES_DIR = PROJECT_DIR / "dbt_project"
DOCS_PREFIX = "docs/site"
DOCS_FILES = ("index.html", "static_index.html", "manifest.json", "catalog.json")
MARTS_KEY_NAME = "marts"
LINEAGE_TABLE = "column_lineage"

# Marts tables that hold one row or more per patient, with the column that names the patient.
PATIENT_TABLES: dict[str, str] = {
    "patients": "patient_key",
    "encounters": "patient_key",
    "conditions": "patient_key",
    "vitals": "patient_key",
    "labs": "patient_key",
    "observations": "patient_key",
    "medications": "patient_key",
    "procedures": "patient_key",
    "immunizations": "patient_key",
    "patient_timelines": "patient_key",
    "diabetes_patients": "patient_key",
    "hypertension_patients": "patient_key",
}


class MartsBuildFailed(CarelakeError):
    """Raised when dbt reports a model, test or contract failure during a marts build."""


def normalize_as_of(as_of: dt.datetime | str | None) -> dt.datetime | None:
    if as_of is None or as_of == "":
        return None
    if isinstance(as_of, str):
        try:
            as_of = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise ConfigError(
                f"--as-of {as_of!r} is not an ISO timestamp: write it like 2026-01-31T12:00:00Z"
            ) from None
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=dt.UTC)
    return as_of.astimezone(dt.UTC)


def marts_database_path(data_dir: Path, as_of: dt.datetime | None) -> Path:
    if as_of is None:
        return data_dir / "marts" / "marts.duckdb"
    return data_dir / "marts" / f"marts-asof-{as_of.strftime('%Y%m%dT%H%M%SZ')}.duckdb"


def marts_key(lake: Any) -> str:
    return lake.keys.secret(MARTS_KEY_NAME)


def connect_marts(
    lake: Any, *, as_of: dt.datetime | None = None, read_only: bool = True
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the encrypted marts database attached as ``marts`` and in use."""
    path = marts_database_path(Path(lake.data_dir), as_of)
    if read_only and not path.exists():
        raise ConfigError(
            f"no marts database at {path}: run `carelake marts build` "
            + (f"--as-of {as_of.isoformat()} " if as_of else "")
            + "first"
        )
    connection = duckdb.connect()
    dbt_plugin.load_extensions(connection)
    connection.execute("set TimeZone = 'UTC'")
    mode = ", READ_ONLY" if read_only else ""
    quoted = str(path).replace("'", "''")
    connection.execute(f"ATTACH '{quoted}' AS marts (ENCRYPTION_KEY '{marts_key(lake)}'{mode})")
    connection.execute("USE marts")
    return connection


@contextlib.contextmanager
def dbt_environment(lake: Any, *, as_of: dt.datetime | None) -> Iterator[None]:
    """The lake bound to the plugin and the variables the profile reads, for one dbt session.

    Anything that runs dbt in-process on the lake (a build, docs, sqlfluff's dbt templater) runs
    inside it; dbt's target and log folders belong in a private scratch folder next to it.
    """
    marts_path = marts_database_path(Path(lake.data_dir), as_of)
    marts_path.parent.mkdir(parents=True, exist_ok=True)
    values = {
        "CARELAKE_MARTS_DB": str(marts_path),
        "DBT_ENV_SECRET_CARELAKE_MARTS_KEY": marts_key(lake),
    }
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    dbt_plugin.bind(lake, as_of=as_of)
    try:
        yield
    finally:
        dbt_plugin.unbind()
        _close_dbt_duckdb()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _close_dbt_duckdb() -> None:
    """dbt-duckdb keeps its in-memory connection open across runs in one process: close it."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None


def _invoke(command: list[str], *, scratch: Path, variables: dict[str, str]) -> Any:
    from dbt.cli.main import dbtRunner

    arguments = [
        *command,
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROFILES_DIR),
        "--target-path", str(scratch / "target"),
        "--log-path", str(scratch / "logs"),
        "--vars", json.dumps(variables),
        "--quiet",
    ]
    return dbtRunner().invoke(arguments)


def _statuses(result: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node_result in getattr(result.result, "results", None) or []:
        resource = node_result.node.resource_type
        kind = str(getattr(resource, "value", resource))
        status = str(getattr(node_result.status, "value", node_result.status))
        key = f"{kind}_{status}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _failures(result: Any) -> list[str]:
    failed = []
    for node_result in getattr(result.result, "results", None) or []:
        status = str(getattr(node_result.status, "value", node_result.status))
        if status in {"error", "fail", "runtime error"}:
            failed.append(f"{node_result.node.unique_id} ({status})")
    return failed


def with_ancestors(select: str) -> str:
    """Each selected node with all it reads: ``vitals`` -> ``+vitals``; a node with its
    descendants, ``x+``, -> ``@x`` (the descendants' other parents come along too)."""
    parts = []
    for part in select.split():
        name = part.lstrip("+@")
        parts.append("@" + name.rstrip("+") if name.endswith("+") else "+" + name)
    return " ".join(parts)


def _add_compiled_code(manifest: dict[str, Any], result: Any) -> None:
    """dbt writes manifest.json before it compiles: take each model's SQL from the run results."""
    for node_result in getattr(result.result, "results", None) or []:
        node = node_result.node
        compiled = getattr(node, "compiled_code", None)
        if compiled and node.unique_id in manifest["nodes"]:
            manifest["nodes"][node.unique_id]["compiled_code"] = compiled


def build(
    lake: Any,
    *,
    as_of: dt.datetime | str | None = None,
    select: str | None = None,
    full_refresh: bool = False,
    docs: bool = False,
    privacy_policy: str = "limited",
) -> dict[str, Any]:
    """Run ``dbt build`` (and ``docs generate`` when asked) on the lake; returns counts.

    Raises ``MartsBuildFailed`` naming the failed nodes when a model, test or contract fails.
    """
    as_of = normalize_as_of(as_of)
    variables = {"as_of": as_of.isoformat() if as_of else "", "privacy_policy": privacy_policy}
    summary: dict[str, Any] = {"as_of": variables["as_of"] or None}

    with private_scratch("dbt") as scratch, dbt_environment(lake, as_of=as_of):
        command = ["build"]
        if select:
            # Staging views and seeds live in memory for one build: a selection takes along
            # everything upstream of it, and runs a test only when all it reads was selected.
            command += ["--select", with_ancestors(select), "--indirect-selection", "cautious"]
        if full_refresh:
            command.append("--full-refresh")
        result = _invoke(command, scratch=scratch, variables=variables)
        summary["build"] = _statuses(result)
        failed = _failures(result)
        if not result.success:
            detail = ", ".join(failed) or str(result.exception)
            raise MartsBuildFailed(
                f"dbt build failed: {detail}. Run `carelake marts build` again after fixing "
                "the model or the data; dbt's log of this run was in a scratch folder, removed"
            )

        freshness = _invoke(["source", "freshness"], scratch=scratch, variables=variables)
        summary["freshness"] = _statuses(freshness)

        if docs:
            generated = _invoke(
                ["docs", "generate", "--static"], scratch=scratch, variables=variables
            )
            if not generated.success:
                raise MartsBuildFailed(
                    f"dbt docs generate failed: {generated.exception}. The marts were built; "
                    "run `carelake docs generate` to retry the docs alone"
                )
        _close_dbt_duckdb()

        # The lineage needs every model's compiled SQL: a partial build leaves it as it was.
        if not select:
            manifest = json.loads((scratch / "target" / "manifest.json").read_text())
            _add_compiled_code(manifest, result)
            edges = lineage.column_lineage(manifest)
            summary["lineage_rows"] = lineage.store(
                edges, connect=lambda: connect_marts(lake, as_of=as_of, read_only=False),
                table=LINEAGE_TABLE,
            )
            if docs:
                summary["docs_files"] = store_docs_site(lake, scratch / "target", edges)

    logger.info(
        "built marts%s%s: %s; freshness %s; %s lineage rows",
        f" as of {variables['as_of']}" if as_of else "", f" ({select})" if select else "",
        summary["build"], summary["freshness"], summary.get("lineage_rows", "no new"),
    )
    return summary


def generate_docs(lake: Any, *, privacy_policy: str = "limited") -> dict[str, Any]:
    """Run ``dbt docs generate`` alone (the marts built before) and store the site encrypted."""
    variables = {"as_of": "", "privacy_policy": privacy_policy}
    with private_scratch("dbt") as scratch, dbt_environment(lake, as_of=None):
        generated = _invoke(["docs", "generate", "--static"], scratch=scratch, variables=variables)
        if not generated.success:
            raise MartsBuildFailed(
                f"dbt docs generate failed: {generated.exception}. Run `carelake marts build` "
                "first when the marts database does not exist yet"
            )
        _close_dbt_duckdb()
        manifest = json.loads((scratch / "target" / "manifest.json").read_text())
        edges = lineage.column_lineage(manifest)
        stored = store_docs_site(lake, scratch / "target", edges)
    logger.info("generated the docs site: %d files, %d lineage rows", stored, len(edges))
    return {"docs_files": stored, "lineage_rows": len(edges)}


def store_docs_site(lake: Any, target: Path, edges: list[dict[str, Any]]) -> int:
    """Copy dbt's docs site and the lineage table to ``docs/site/`` under ``lake.fs``."""
    stored = 0
    lake.fs.makedirs(DOCS_PREFIX, exist_ok=True)
    for name in DOCS_FILES:
        path = target / name
        if path.exists():
            with lake.fs.open(f"{DOCS_PREFIX}/{name}", "wb") as handle:
                handle.write(path.read_bytes())
            stored += 1
    with lake.fs.open(f"{DOCS_PREFIX}/column_lineage.json", "wb") as handle:
        handle.write(json.dumps(edges, indent=1).encode())
    return stored + 1


def run_stage(context: Any) -> Any:
    """The marts stage of ``carelake run``: build the marts and the docs site."""
    from infra.stages import StageResult

    lake = context.lake
    if not lake.tables(context.settings.get("lake.bronze_namespace", "bronze")):
        raise StageUnavailable("the lake has no bronze tables yet: run the ingest stage first")
    summary = build(
        lake, docs=True, privacy_policy=context.settings.get("privacy.policy", "limited")
    )
    return StageResult(status="ok", details=summary)


@eraser("marts")
def erase_patient(lake: Any, patient_key: str) -> int:
    """Delete a patient's rows from every marts database (current and as-of builds)."""
    deleted = 0
    marts_dir = Path(lake.data_dir) / "marts"
    for path in sorted(marts_dir.glob("marts*.duckdb")):
        as_of = _as_of_from_name(path.name)
        connection = connect_marts(lake, as_of=as_of, read_only=False)
        try:
            existing = {
                row[0] for row in connection.execute(
                    "select table_name from information_schema.tables "
                    "where table_catalog = 'marts'"
                ).fetchall()
            }
            for table, column in PATIENT_TABLES.items():
                if table in existing:
                    deleted += connection.execute(
                        f'delete from marts.main."{table}" where "{column}" = ?', [patient_key]
                    ).fetchone()[0]
            connection.execute("checkpoint")
        finally:
            connection.close()
    logger.info("erased %d marts row(s) of one patient across %d database(s)",
                deleted, len(list(marts_dir.glob("marts*.duckdb"))))
    return deleted


def _as_of_from_name(name: str) -> dt.datetime | None:
    if not name.startswith("marts-asof-"):
        return None
    stamp = name[len("marts-asof-"):-len(".duckdb")]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
