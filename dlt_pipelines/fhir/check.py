"""``carelake check-fhir``: can carelake reach the configured FHIR server, and what does it hold?

It reads the server's CapabilityStatement (``[base]/metadata``) and asks each configured type
for its count with ``_summary=count``, through the same auth, TLS and retry settings a load uses.
Nothing it prints comes from a patient's record: the server's software, its FHIR version, whether
it offers ``$export``, and a number per resource type.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import msgspec

from dlt_pipelines.fhir.auth import auth_from_config, open_client
from dlt_pipelines.fhir.rest import DEFAULT_RESOURCE_TYPES, type_list
from dlt_pipelines.fhir.transport import RetryPolicy, send
from infra.errors import CarelakeError, ConfigError
from infra.settings import load_settings

logger = logging.getLogger(__name__)

SECTIONS = {"rest": "fhir_rest", "bulk": "fhir_bulk"}


class _Software(msgspec.Struct):
    name: str = ""
    version: str = ""


class _Operation(msgspec.Struct):
    name: str = ""


class _Rest(msgspec.Struct):
    operation: list[_Operation] = []


class _Capabilities(msgspec.Struct):
    resourceType: str = ""  # noqa: N815 - FHIR's names
    fhirVersion: str = ""  # noqa: N815
    software: _Software | None = None
    rest: list[_Rest] = []


class _Count(msgspec.Struct):
    total: int | None = None


@dataclass
class ServerCheck:
    software: str = ""
    fhir_version: str = ""
    offers_export: bool = False
    totals: dict[str, int | None] = field(default_factory=dict)


def check_server(
    client: httpx.Client, base_url: str, resource_types: list[str], *, policy: RetryPolicy
) -> ServerCheck:
    """Read the CapabilityStatement and each type's count.

    Raises ``ConfigError`` when the base URL is not a FHIR root or the credentials are refused,
    ``SourceError`` when the server cannot be reached or keeps failing.
    """
    base = base_url.rstrip("/")
    response = send(client, "GET", f"{base}/metadata", policy=policy)
    if response.status_code != 200:
        raise ConfigError(
            f"GET /metadata answered HTTP {response.status_code}: check that "
            "base_url is the FHIR API root"
        )
    try:
        capabilities = msgspec.json.decode(response.content, type=_Capabilities)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ConfigError("GET /metadata answered without a CapabilityStatement: check that "
                          "base_url is the FHIR API root") from None
    software = capabilities.software or _Software()
    check = ServerCheck(
        software=" ".join(part for part in (software.name, software.version) if part),
        fhir_version=capabilities.fhirVersion,
        offers_export=any(op.name == "export" for rest in capabilities.rest
                          for op in rest.operation),
    )

    for resource_type in resource_types:
        response = send(client, "GET", f"{base}/{resource_type}?_summary=count", policy=policy)
        if response.status_code in (401, 403):
            raise ConfigError(
                f"GET /{resource_type} answered HTTP {response.status_code}: the server refused "
                "our credentials; check the auth setting and its secrets"
            )
        total = None
        if response.status_code == 200:
            try:
                total = msgspec.json.decode(response.content, type=_Count).total
            except (msgspec.DecodeError, msgspec.ValidationError):
                total = None
        check.totals[resource_type] = total
    logger.info("checked the FHIR server: %d type(s) counted", len(check.totals))
    return check


def run_check(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """The handler of ``carelake check-fhir``; returns the exit status."""
    out = out or sys.stdout
    section = SECTIONS[args.source]
    try:
        settings = load_settings(data_dir=getattr(args, "data_dir", None))
        options = settings.section(f"sources.{section}")
        base_url = str(options.get("base_url") or "")
        if not base_url:
            raise ConfigError(f"sources.{section}.base_url is empty: set it to the FHIR API "
                              f"root (CARELAKE_SOURCES__{section.upper()}__BASE_URL)")
        setting = "resource_types" if section == "fhir_rest" else "types"
        types = type_list(options.get(setting), setting=f"sources.{section}.{setting}")
        with open_client(
            auth=auth_from_config(options, section=section, base_url=base_url),
            verify_tls=bool(options.get("verify_tls", True)),
            ca_bundle=str(options.get("ca_bundle") or "") or None,
            timeout_s=float(options.get("timeout_s", 60)),
        ) as client:
            check = check_server(client, base_url, types or list(DEFAULT_RESOURCE_TYPES),
                                 policy=RetryPolicy(max_retries=int(options.get("max_retries", 5))))
    except CarelakeError as error:
        print(f"check-fhir: {error}", file=out)
        return 1

    print(f"server: {check.software or 'unnamed'}, FHIR {check.fhir_version or 'version unknown'}"
          f", $export {'offered' if check.offers_export else 'not offered'}", file=out)
    for resource_type, total in check.totals.items():
        print(f"  {resource_type}: {'no count' if total is None else total}", file=out)
    return 0


def register(subparsers: Any) -> None:
    """Add ``check-fhir`` to carelake's command line."""
    parser = subparsers.add_parser(
        "check-fhir",
        help="check the connection, auth and TLS to the configured FHIR server and count types",
    )
    parser.add_argument("--source", choices=sorted(SECTIONS), default="rest",
                        help="which server to check: sources.fhir_rest or sources.fhir_bulk")
    parser.set_defaults(handler=run_check)
