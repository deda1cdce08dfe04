"""The marts' commands: ``carelake marts build|connect-sql``, ``carelake sql``, ``carelake docs``.

``marts build`` runs dbt on the lake (optionally as of a timestamp). ``sql`` opens an SQL shell on
the encrypted marts database, read-only. ``docs generate`` rebuilds the lineage site, ``docs serve``
serves it decrypted on 127.0.0.1 only, and ``docs export`` writes it to a folder the user names.
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from infra import marts
from infra.errors import ConfigError

logger = logging.getLogger(__name__)

DOCS_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``marts``, ``sql`` and ``docs`` commands to carelake's command line."""
    marts_parser = subparsers.add_parser("marts", help="build and connect to the dbt marts")
    marts_commands = marts_parser.add_subparsers(dest="marts_command", required=True)
    build = marts_commands.add_parser("build", help="run dbt build on the lake")
    build.add_argument("--as-of", dest="as_of", default=None,
                       help="ISO timestamp: build from the snapshots current then, into "
                            "marts/marts-asof-<timestamp>.duckdb")
    build.add_argument("--select", default=None, help="a dbt selection, for example +vitals")
    build.add_argument("--full-refresh", action="store_true",
                       help="rebuild incremental marts from scratch")
    build.add_argument("--no-docs", dest="docs", action="store_false",
                       help="skip dbt docs generate")
    build.set_defaults(handler=build_command)
    connect = marts_commands.add_parser(
        "connect-sql", help="print the DuckDB statements a BI tool runs to attach the marts"
    )
    connect.add_argument("--as-of", dest="as_of", default=None)
    connect.set_defaults(handler=connect_sql_command)

    sql = subparsers.add_parser("sql", help="an SQL shell on the encrypted marts (read-only)")
    sql.add_argument("--as-of", dest="as_of", default=None,
                     help="open the marts built as of this timestamp")
    sql.add_argument("-c", "--command", dest="sql", default=None,
                     help="run this SQL and exit instead of opening the shell")
    sql.set_defaults(handler=sql_command)

    docs = subparsers.add_parser("docs", help="the lineage and column docs site")
    docs_commands = docs.add_subparsers(dest="docs_command", required=True)
    docs_commands.add_parser("generate", help="run dbt docs generate").set_defaults(
        handler=docs_generate_command
    )
    serve = docs_commands.add_parser("serve", help="serve the site on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8580)
    serve.set_defaults(handler=docs_serve_command)
    export = docs_commands.add_parser("export", help="write the site to a folder, decrypted")
    export.add_argument("--out", required=True, type=Path)
    export.set_defaults(handler=docs_export_command)


def _lake(args: argparse.Namespace, *, role: str) -> Any:
    """The lake named by ``--data-dir``, opened as ``--role`` (or ``role`` when none is given)."""
    from infra.lake import Lake
    from infra.settings import load_settings

    settings = load_settings(data_dir=getattr(args, "data_dir", None))
    return Lake.open(settings, role=getattr(args, "role", None) or role, create=False)


def build_command(args: argparse.Namespace) -> int:
    lake = _lake(args, role="loader")
    summary = marts.build(
        lake, as_of=args.as_of, select=args.select, full_refresh=args.full_refresh,
        docs=args.docs and args.as_of is None and not args.select,
        privacy_policy=lake.settings.get("privacy.policy", "limited"),
    )
    print(json.dumps(summary, indent=2))
    return 0


def connect_sql_command(args: argparse.Namespace) -> int:
    lake = _lake(args, role="analyst")
    path = marts.marts_database_path(Path(lake.data_dir), marts.normalize_as_of(args.as_of))
    print("-- DuckDB statements that open the carelake marts read-only. They hold the marts key:")
    print("-- keep them in your BI tool's secret store, never in a shared file.")
    print("LOAD httpfs;")
    print(f"ATTACH '{path}' AS marts (ENCRYPTION_KEY '{marts.marts_key(lake)}', READ_ONLY);")
    print("USE marts;")
    return 0


def run_sql(connection: Any, text: str, *, out: TextIO) -> None:
    relation = connection.sql(text)
    if relation is None:
        print("ok", file=out)
        return
    columns = relation.columns
    rows = relation.fetchall()
    print(" | ".join(columns), file=out)
    for row in rows:
        print(" | ".join("" if value is None else str(value) for value in row), file=out)
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=out)


def sql_command(args: argparse.Namespace, *, stdin: TextIO | None = None,
                out: TextIO | None = None) -> int:
    stdin, out = stdin or sys.stdin, out or sys.stdout
    lake = _lake(args, role="analyst")
    connection = marts.connect_marts(lake, as_of=marts.normalize_as_of(args.as_of))
    try:
        if args.sql:
            run_sql(connection, args.sql, out=out)
            return 0
        print("carelake marts (read-only). End a statement with ';'; Ctrl-D quits. "
              "Try: show tables;", file=out)
        pending: list[str] = []
        for line in stdin:
            pending.append(line)
            if line.rstrip().endswith(";"):
                statement = "".join(pending).strip()
                pending = []
                try:
                    run_sql(connection, statement, out=out)
                except Exception as error:  # a bad statement ends it, not the shell
                    first_line = (str(error).splitlines() or [""])[0]
                    print(f"error: {type(error).__name__}: {first_line}", file=out)
        return 0
    finally:
        connection.close()


def docs_generate_command(args: argparse.Namespace) -> int:
    lake = _lake(args, role="loader")
    print(json.dumps(marts.generate_docs(lake), indent=2))
    return 0


def read_docs_file(lake: Any, name: str) -> bytes:
    if "/" in name or name.startswith("."):
        raise ConfigError(f"the docs site holds no file {name!r}")
    path = f"{marts.DOCS_PREFIX}/{name}"
    if not lake.fs.exists(path):
        raise ConfigError(
            f"the docs site has no {name}: run `carelake docs generate` (or `carelake run`) first"
        )
    return lake.fs.cat_file(path)


def export_docs(lake: Any, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(lake.fs.ls(marts.DOCS_PREFIX, detail=False)):
        name = str(path).rstrip("/").split("/")[-1]
        (out / name).write_bytes(read_docs_file(lake, name))
        written += 1
    logger.info("exported the docs site: %d files", written)
    return written


def docs_export_command(args: argparse.Namespace) -> int:
    lake = _lake(args, role="analyst")
    written = export_docs(lake, args.out)
    print(f"wrote {written} files to {args.out}; open {args.out / 'static_index.html'}")
    return 0


def docs_handler(lake: Any) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler that serves the docs site from the encrypted filesystem."""

    class DocsHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            name = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/") or "index.html"
            try:
                body = read_docs_file(lake, name)
            except ConfigError:
                self.send_error(404, "not part of the docs site")
                return
            self.send_response(200)
            self.send_header("Content-Type", DOCS_TYPES.get(Path(name).suffix, "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("docs server: " + format, *args)

    return DocsHandler


def docs_server(lake: Any, *, port: int) -> http.server.ThreadingHTTPServer:
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), docs_handler(lake))


def docs_serve_command(args: argparse.Namespace) -> int:
    lake = _lake(args, role="analyst")
    server = docs_server(lake, port=args.port)
    print(f"serving the docs site on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
