"""HTTP request handling of the FHIR test server: routing, search bundles, tokens and $export.

Search bundles are assembled from the stored bytes of each resource, never re-serialized.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import msgspec

from dlt_pipelines.fhir.testing.store import format_instant, parse_instant

if TYPE_CHECKING:
    from dlt_pipelines.fhir.testing.server import FhirTestServer

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NDJSON_FORMATS = {FHIR_NDJSON, "application/ndjson", "ndjson"}
DEFAULT_COUNT = 50


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered, kept so tests can assert on what a client asked."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    authorization: str


def outcome(code: str, diagnostics: str, *, severity: str = "error") -> bytes:
    return msgspec.json.encode({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    })


class FhirRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FhirTestServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: tests assert on ``server.requests`` instead of reading a console."""

    # -- plumbing ---------------------------------------------------------------------------

    def _reply(
        self, status: int, body: bytes = b"", *, content_type: str = FHIR_JSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Recorded before the answer goes out, so a client that has its answer finds the record.
        self.server_state.record(_recorded(self, status))
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        split = urlsplit(self.path)
        self._path = split.path
        self._query = parse_qs(split.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        self._route(split.path)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    # -- routing ----------------------------------------------------------------------------

    def _route(self, path: str) -> None:
        state = self.server_state
        base = "/fhir"
        if path == "/auth/token" and self.command == "POST":
            return self._token()
        if path == f"{base}/.well-known/smart-configuration":
            return self._reply(200, msgspec.json.encode({
                "token_endpoint": state.token_url,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            }), content_type="application/json")
        if path == f"{base}/metadata":
            return self._reply(200, self._capability_statement())
        if not path.startswith(base + "/"):
            return self._reply(404, outcome("not-found", "no such endpoint"))

        fault = state.next_fault()
        if fault == 429:
            return self._reply(429, outcome("throttled", "too many requests"),
                               headers={"Retry-After": state.retry_after})
        if fault == 503:
            return self._reply(503, outcome("transient", "temporarily unavailable"))
        if not state.authorized(self.headers.get("Authorization", "")):
            return self._reply(401, outcome("login", "authorization required"),
                               headers={"WWW-Authenticate": 'Bearer realm="fhir"'})

        parts = path[len(base) + 1:].split("/")
        if parts[-1] == "$export" and self.command == "GET":
            return self._kick_off(parts[:-1])
        if parts[0] == "_export" and len(parts) == 2:
            return self._export_status(parts[1])
        if parts[0] == "_export" and len(parts) == 4 and parts[2] == "files":
            return self._export_file(parts[1], parts[3])
        if len(parts) == 1 and parts[0][:1].isupper() and self.command == "GET":
            return self._search(parts[0])
        return self._reply(404, outcome("not-supported", "the test server has no such operation"))

    def _capability_statement(self) -> bytes:
        state = self.server_state
        search = [{"name": "_lastUpdated", "type": "date"}]
        security: dict[str, object] = {"cors": False}
        if state.auth == "smart":
            security["service"] = [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
            }]}]
        return msgspec.json.encode({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": [FHIR_JSON],
            "software": {"name": "carelake FHIR test server"},
            "rest": [{
                "mode": "server",
                "security": security,
                "resource": [
                    {"type": name, "interaction": [{"code": "search-type"}], "searchParam": search}
                    for name in state.store.types()
                ],
                "operation": [{
                    "name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                }],
            }],
        })

    # -- search -----------------------------------------------------------------------------

    def _search(self, resource_type: str) -> None:
        state = self.server_state
        if "_getpages" in self._query:
            return self._reply(410, outcome("expired", "the paging context has expired"))
        try:
            count = int(self._query.get("_count", [DEFAULT_COUNT])[0])
            offset = int(self._query.get("_getpagesoffset", ["0"])[0])
            matches = state.store.search(
                resource_type, last_updated=self._query.get("_lastUpdated", [])
            )
        except ValueError:
            return self._reply(400, outcome("invalid", "a search parameter has a bad value"))
        if self._query.get("_summary") == ["count"]:
            return self._reply(200, msgspec.json.encode({
                "resourceType": "Bundle", "type": "searchset",
                "total": len(matches) + state.total_excess,
            }))
        count = max(1, min(count, 1000))
        page = matches[offset:offset + count]

        kept = {k: v for k, v in self._query.items() if k not in {"_getpagesoffset"}}
        self_url = _url(state.base_url, resource_type, kept, offset)
        links = [{"relation": "self", "url": self_url}]
        if offset + count < len(matches):
            links.append({"relation": "next", "url": self._next_url(resource_type, kept,
                                                                     offset, count)})
        entries = b",".join(
            b'{"fullUrl":' + msgspec.json.encode(f"{state.base_url}/{resource_type}/{stored.id}")
            + b',"resource":' + stored.body + b',"search":{"mode":"match"}}'
            for stored in page
        )
        head = msgspec.json.encode({
            "resourceType": "Bundle",
            "meta": {"lastUpdated": format_instant(_now())},
            "type": "searchset",
            "total": len(matches) + state.total_excess,
            "link": links,
        })
        self._reply(200, head[:-1] + b',"entry":[' + entries + b"]}")

    def _next_url(
        self, resource_type: str, kept: dict[str, list[str]], offset: int, count: int
    ) -> str:
        state = self.server_state
        fault = state.broken_next_link
        if fault == "loop" and offset == 0:
            return _url(state.base_url, resource_type, kept, 0)
        if fault == "gone" and offset == 0:
            return _url(state.base_url, resource_type, {**kept, "_getpages": ["expired"]}, count)
        if fault == "off_host" and offset == 0:
            other = state.base_url.replace("127.0.0.1", "localhost", 1)
            return _url(other, resource_type, kept, count)
        return _url(state.base_url, resource_type, kept, offset + count)

    # -- SMART Backend Services token endpoint ---------------------------------------------

    def _token(self) -> None:
        state = self.server_state
        form = {k: v[0] for k, v in parse_qs(self._body.decode("ascii", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type")
        if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
            return self._oauth_error(400, "invalid_request")
        assertion = form["client_assertion"]
        try:
            claimed = jwt.decode(assertion, options={"verify_signature": False})
            client_id = claimed.get("iss", "")
            key = state.smart_clients.get(client_id)
            if key is None:
                return self._oauth_error(401, "invalid_client")
            claims = jwt.decode(
                assertion, key, algorithms=["RS384", "ES384"], audience=state.token_url,
                issuer=client_id, options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
        except jwt.PyJWTError:
            return self._oauth_error(401, "invalid_client")
        if claims["sub"] != client_id or claims["exp"] > time.time() + 300:
            return self._oauth_error(401, "invalid_client")
        if not state.claim_jti(str(claims["jti"])):
            return self._oauth_error(401, "invalid_client")  # an assertion replayed
        self._reply(200, msgspec.json.encode({
            "access_token": state.issue_token(),
            "token_type": "bearer",
            "expires_in": state.token_lifetime_s,
            "scope": form.get("scope", ""),
        }), content_type="application/json", headers={"Cache-Control": "no-store"})

    def _oauth_error(self, status: int, error: str) -> None:
        self._reply(status, msgspec.json.encode({"error": error}), content_type="application/json")

    # -- Bulk Data $export ------------------------------------------------------------------

    def _kick_off(self, level: list[str]) -> None:
        state = self.server_state
        if self.headers.get("Prefer", "").strip() != "respond-async":
            return self._reply(400, outcome("invalid", "$export needs Prefer: respond-async"))
        if FHIR_JSON not in self.headers.get("Accept", ""):
            return self._reply(400, outcome("invalid", "$export needs Accept: " + FHIR_JSON))
        output_format = self._query.get("_outputFormat", [FHIR_NDJSON])[0]
        if output_format not in NDJSON_FORMATS:
            return self._reply(400, outcome("not-supported", "only NDJSON output is offered"))

        patient_ids: set[str] | None = None
        if len(level) == 2 and level[0] == "Group":
            if level[1] not in state.groups:
                return self._reply(404, outcome("not-found", "no such Group"))
            patient_ids = state.groups[level[1]]
        elif level not in ([], ["Patient"]):
            return self._reply(404, outcome("not-supported", "no such export level"))
        types = [t for value in self._query.get("_type", []) for t in value.split(",") if t]
        try:
            since = parse_instant(self._query["_since"][0]) if "_since" in self._query else None
        except ValueError:
            return self._reply(400, outcome("invalid", "_since is not a FHIR instant"))

        job = state.exports.start(
            request_url=state.origin + self.path, types=types or None, since=since,
            patient_ids=patient_ids, patient_level=bool(level),
        )
        self._reply(202, outcome("informational", "export accepted", severity="information"),
                    headers={"Content-Location": f"{state.base_url}/_export/{job.id}"})

    def _export_status(self, job_id: str) -> None:
        state = self.server_state
        job = state.exports.get(job_id)
        if job is None:
            return self._reply(404, outcome("not-found", "no such export job"))
        if self.command == "DELETE":
            job.closed = True
            return self._reply(202)
        job.polls += 1
        if job.polls <= job.pending_polls:
            return self._reply(202, headers={
                "Retry-After": state.export_retry_after,
                "X-Progress": f"in progress: poll {job.polls} of {job.pending_polls}",
            })
        if job.fail_with:
            return self._reply(500, outcome("exception", job.fail_with))
        files_base = state.base_url
        if state.export_files_host:
            files_base = files_base.replace("127.0.0.1", state.export_files_host, 1)
        manifest = state.exports.manifest(
            job, files_url=f"{files_base}/_export/{job.id}/files",
            requires_token=state.auth != "none",
        )
        self._reply(200, manifest, content_type="application/json",
                    headers={"Expires": "Thu, 01 Jan 2099 00:00:00 GMT"})

    def _export_file(self, job_id: str, name: str) -> None:
        state = self.server_state
        job = state.exports.get(job_id)
        lines = None if job is None else state.exports.file(job, name)
        if lines is None:
            return self._reply(404, outcome("not-found", "no such export file"))
        body = b"".join(line + b"\n" for line in lines)
        if state.export_cut_files and name[:1].isupper():
            # Promise the whole body, send half of it, and hang up.
            self.server_state.record(_recorded(self, 200))
            self.send_response(200)
            self.send_header("Content-Type", FHIR_NDJSON)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._reply(200, body, content_type=FHIR_NDJSON)


def _now() -> datetime:
    return datetime.now(UTC)


def _url(base_url: str, resource_type: str, query: dict[str, list[str]], offset: int) -> str:
    params = [(name, value) for name, values in query.items() for value in values]
    if offset:
        params.append(("_getpagesoffset", str(offset)))
    encoded = urlencode(params, safe=":,")
    return f"{base_url}/{resource_type}" + (f"?{encoded}" if encoded else "")


def _recorded(handler: FhirRequestHandler, status: int) -> RecordedRequest:
    return RecordedRequest(
        method=handler.command,
        path=handler._path,
        query={name: list(values) for name, values in handler._query.items()},
        status=status,
        authorization=handler.headers.get("Authorization", ""),
    )
