"""carelake's own FHIR test server: a real HTTP server on loopback, written to the FHIR REST and
Bulk Data specifications, with faults on demand.

It serves resources loaded from real files (for example Bulk NDJSON), supports search by type with
``_count`` paging through ``Bundle.link`` next, ``_lastUpdated`` comparisons, ``total``, bearer,
basic and SMART Backend Services authorization (the token endpoint verifies the client's signed
JWT with its registered public key), and Bulk Data ``$export`` at system, Patient and Group level.

    with FhirTestServer(resources=read_ndjson(folder), rate_limited=2) as server:
        httpx.get(f"{server.base_url}/Patient")

It listens on 127.0.0.1 only, on a port the system picks, and serves until the block ends.
"""

from __future__ import annotations

import base64
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dlt_pipelines.fhir.testing import handlers
from dlt_pipelines.fhir.testing.handlers import RecordedRequest
from dlt_pipelines.fhir.testing.export_jobs import ExportJobs
from dlt_pipelines.fhir.testing.store import ResourceStore

logger = logging.getLogger(__name__)

BASE_PATH = "/fhir"
TOKEN_PATH = "/auth/token"
AUTH_MODES = {"none", "bearer", "basic", "smart"}
BROKEN_NEXT_LINKS = {"loop", "gone", "off_host"}


class FhirTestServer:
    """A threaded HTTP server with a FHIR API under ``/fhir`` and a token endpoint at ``/auth``.

    Faults, all off by default:
      rate_limited       the first N API requests get 429 with ``Retry-After: retry_after``
      unavailable        N API requests, from number ``unavailable_from`` on, get 503
      broken_next_link   "loop" (page 1 links to itself), "gone" (the next page answers 410) or
                         "off_host" (the next link names another host)
      total_excess       ``Bundle.total`` claims this many more resources than the pages hold
      export_fail_with   the export status answers 500 with an OperationOutcome of this text
      export_files_host  the manifest names output files on this host name instead (for example
                         "localhost": still this server, but not the base URL's host)
      export_cut_files   each output file's connection is closed halfway through its body
    """

    def __init__(
        self,
        *,
        resources: Iterable[bytes] = (),
        first_update: datetime | None = None,
        auth: str = "none",
        bearer_token: str = "",
        basic_user: str = "",
        basic_password: str = "",
        smart_clients: Mapping[str, Any] | None = None,
        token_lifetime_s: int = 300,
        tls: tuple[Path, Path] | None = None,
        rate_limited: int = 0,
        retry_after: str = "1",
        unavailable: int = 0,
        unavailable_from: int = 1,
        broken_next_link: str | None = None,
        total_excess: int = 0,
        groups: Mapping[str, Sequence[str]] | None = None,
        export_pending_polls: int = 1,
        export_retry_after: str = "1",
        export_file_lines: int = 1000,
        export_error_lines: int = 0,
        export_fail_with: str | None = None,
        export_files_host: str | None = None,
        export_cut_files: bool = False,
    ) -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {sorted(AUTH_MODES)}, not {auth!r}")
        if broken_next_link is not None and broken_next_link not in BROKEN_NEXT_LINKS:
            raise ValueError(f"broken_next_link must be one of {sorted(BROKEN_NEXT_LINKS)}")
        self.store = ResourceStore()
        self.store.add(resources, first_update=first_update)
        self.auth = auth
        self.bearer_token = bearer_token
        self.basic_credentials = (basic_user, basic_password)
        self.smart_clients = dict(smart_clients or {})
        self.token_lifetime_s = token_lifetime_s
        self.tls = tls
        self.rate_limited = rate_limited
        self.retry_after = retry_after
        self.unavailable = unavailable
        self.unavailable_from = unavailable_from
        self.broken_next_link = broken_next_link
        self.total_excess = total_excess
        self.groups = {name: set(members) for name, members in (groups or {}).items()}
        self.export_retry_after = export_retry_after
        self.export_files_host = export_files_host
        self.export_cut_files = export_cut_files
        self.exports = ExportJobs(
            self.store, pending_polls=export_pending_polls, file_lines=export_file_lines,
            error_lines=export_error_lines, fail_with=export_fail_with,
        )

        self.requests: list[RecordedRequest] = []
        self.tokens_issued = 0
        self.used_jtis: set[str] = set()
        self._tokens: dict[str, float] = {}
        self._api_requests = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FhirTestServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        owner = self

        class Handler(handlers.FhirRequestHandler):
            server_state = owner

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=str(self.tls[0]), keyfile=str(self.tls[1]))
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="fhir-test-server")
        self._thread.daemon = True
        self._thread.start()
        logger.info("FHIR test server listening at %s", self.base_url)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    @property
    def origin(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the FHIR test server is not running: use it in a with block")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.origin + BASE_PATH

    @property
    def token_url(self) -> str:
        return self.origin + TOKEN_PATH

    # -- what tests change while the server runs --------------------------------------------

    def add(self, resources: Iterable[bytes], *, first_update: datetime | None = None) -> int:
        """Store new versions, updated after everything already stored unless told otherwise."""
        return self.store.add(resources, first_update=first_update)

    def delete(self, resource_type: str, resource_id: str) -> bool:
        """Delete a resource; a later ``_since`` export lists it in its "deleted" files."""
        return self.store.delete(resource_type, resource_id)

    def revoke_tokens(self) -> None:
        """Forget every access token issued, as if each had expired on the server's side."""
        with self._lock:
            self._tokens.clear()

    def api_requests(self, path_suffix: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [
                recorded for recorded in self.requests
                if recorded.path.startswith(BASE_PATH) and recorded.path.endswith(path_suffix)
            ]

    # -- used by the handler ----------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def next_fault(self) -> int | None:
        """The status a fault imposes on the next API request, or None to serve it."""
        with self._lock:
            self._api_requests += 1
            number = self._api_requests
        if number <= self.rate_limited:
            return 429
        first_unavailable = max(self.unavailable_from, self.rate_limited + 1)
        if first_unavailable <= number < first_unavailable + self.unavailable:
            return 503
        return None

    def claim_jti(self, jti: str) -> bool:
        """True the first time an assertion id is seen; a replayed assertion gets False."""
        with self._lock:
            if jti in self.used_jtis:
                return False
            self.used_jtis.add(jti)
        return True

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.time() + self.token_lifetime_s
            self.tokens_issued += 1
        return token

    def authorized(self, header: str) -> bool:
        if self.auth == "none":
            return True
        scheme, _, credentials = header.partition(" ")
        if self.auth == "basic":
            if scheme.lower() != "basic":
                return False
            try:
                user, _, password = base64.b64decode(credentials).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return secrets.compare_digest(f"{user}:{password}", ":".join(self.basic_credentials))
        if scheme.lower() != "bearer" or not credentials:
            return False
        if self.auth == "bearer":
            return secrets.compare_digest(credentials, self.bearer_token)
        with self._lock:
            expires = self._tokens.get(credentials)
        return expires is not None and expires > time.time()
