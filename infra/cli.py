"""The ``carelake`` command: ``run`` and every other stage and task as a subcommand.

Subcommands are contributed by modules listed in ``COMMAND_MODULES``; each exposes
``register(subparsers)`` and sets ``handler`` on its parsers (a function of the parsed args that
returns an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import infra  # noqa: F401  (telemetry off before any library loads)
from infra.errors import CarelakeError

COMMAND_MODULES = [
    "infra.commands",
    "dlt_pipelines.fhir.commands",
    "dlt_pipelines.fhir.check",
    "infra.keys.pkcs11",
    "dlt_pipelines.fhir.scaler_commands",
    "infra.marts_commands",
    "ml_pipelines.nlp.commands",
    "ml_pipelines.vision.commands",
    "ml_pipelines.drift.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carelake",
        description="FHIR R4 into a private, encrypted lakehouse with marts and an ML sidecar.",
    )
    parser.add_argument("--data-dir", help="the lake's data folder (default: lake.data_dir)")
    parser.add_argument("--role", default="loader",
                        help="the key role this process runs as: loader (default), analyst, "
                             "reidentifier, auditor or admin")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # that part is not in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("dlt", "pyiceberg", "urllib3", "httpx", "zenml", "numexpr", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except CarelakeError as error:
        print(f"carelake: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
