"""How carelake proves who it is to a FHIR server, and how it checks who the server is.

Three ways to authorize, each an ``httpx.Auth``:

- a static bearer token (``BearerToken``),
- HTTP basic (``httpx.BasicAuth``),
- SMART Backend Services (``SmartBackendServices``): the client-credentials grant with a JWT
  assertion signed by the client's private key (RS384 or ES384). The access token is cached until
  shortly before it expires and fetched again once when the server answers 401.

Secrets come from dlt's secrets (``.dlt/secrets.toml`` or the environment, for example
``SOURCES__FHIR_REST__TOKEN``), never from carelake's settings file. TLS is verified against the
system's trust store unless a CA bundle is named; turning verification off is allowed only by an
explicit setting and logs a warning each time a client is built.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dlt
import httpx
import jwt
import msgspec

from infra.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SIGNING_ALGORITHMS = {"RS384", "ES384"}
AUTH_MODES = {"none", "bearer", "basic", "smart"}
# A token is fetched again this many seconds before the server says it expires.
EXPIRY_MARGIN_S = 30.0


class BearerToken(httpx.Auth):
    """A fixed bearer token; a 401 means the token is wrong or expired, and is not retried."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigError("the bearer token is empty: set SOURCES__<SOURCE>__TOKEN")
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class _TokenResponse(msgspec.Struct):
    access_token: str
    expires_in: int | None = None
    token_type: str = "bearer"


class SmartBackendServices(httpx.Auth):
    """SMART Backend Services: client credentials with a signed JWT assertion.

    The assertion carries ``iss`` and ``sub`` (the client id), ``aud`` (the token endpoint),
    ``exp`` (at most five minutes ahead) and a fresh ``jti``; its header names the key id.
    """

    # False so that a streamed download's body is not read whole before it reaches the caller;
    # the token endpoint's answer is read explicitly instead.
    requires_response_body = False

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        private_key: str | bytes | Any,
        algorithm: str = "RS384",
        key_id: str | None = None,
        scope: str = "system/*.read",
        assertion_lifetime_s: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in SIGNING_ALGORITHMS:
            raise ConfigError(
                f"SMART signing algorithm {algorithm!r} is not allowed: use RS384 or ES384"
            )
        if not token_url or not client_id:
            raise ConfigError("SMART Backend Services needs a token_url and a client_id")
        self.token_url = token_url
        self._client_id = client_id
        self._private_key = private_key
        self._algorithm = algorithm
        self._key_id = key_id
        self._scope = scope
        self._lifetime = min(assertion_lifetime_s, 300)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_fetched = 0

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self.token_url,
            "iat": now,
            "exp": now + self._lifetime,
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "JWT"}
        if self._key_id:
            headers["kid"] = self._key_id
        return jwt.encode(claims, self._private_key, algorithm=self._algorithm, headers=headers)

    def _token_request(self) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "scope": self._scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self.assertion(),
        }
        return httpx.Request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json"}
        )

    def _accept(self, response: httpx.Response) -> str:
        response.read()
        path = urlsplit(self.token_url).path
        if response.status_code != 200:
            reason = _oauth_error(response.content)
            raise SourceError(
                f"SMART token endpoint {path} refused the client credentials (HTTP "
                f"{response.status_code} {reason}): check the client id, that the server holds "
                "the public key of the signing key, and the clocks of both machines"
            )
        try:
            answer = msgspec.json.decode(response.content, type=_TokenResponse)
        except msgspec.DecodeError:
            raise SourceError(
                f"SMART token endpoint {path} answered without an access_token: check token_url"
            ) from None
        lifetime = float(answer.expires_in if answer.expires_in is not None else 300)
        with self._lock:
            self._token = answer.access_token
            self._expires_at = self._clock() + lifetime - EXPIRY_MARGIN_S
            self.tokens_fetched += 1
        logger.info("SMART access token fetched, valid for %d s", int(lifetime))
        return answer.access_token

    def _cached(self) -> str | None:
        with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._cached()
        if token is None:
            token = self._accept((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return

        logger.info("server answered 401 to a cached SMART token; fetching a new one once")
        with self._lock:
            self._token = None
        token = self._accept((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _oauth_error(body: bytes) -> str:
    try:
        answer = msgspec.json.decode(body, type=dict)
    except msgspec.DecodeError:
        return "without an OAuth error code"
    error = answer.get("error") if isinstance(answer, dict) else None
    return str(error) if isinstance(error, str) and error.isascii() and len(error) < 64 else "?"


def tls_verification(*, verify_tls: bool = True, ca_bundle: str | None = None) -> ssl.SSLContext:
    """The TLS context for a source: the system's trust store, or a named CA bundle.

    ``verify_tls=False`` disables certificate and host checks; it is logged as a warning.
    """
    if not verify_tls:
        logger.warning(
            "TLS verification is OFF for this source (verify_tls = false): anyone on the path "
            "can read and alter what it sends; use ca_bundle for a private CA instead"
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_bundle:
        path = Path(ca_bundle).expanduser()
        if not path.is_file():
            raise ConfigError(f"ca_bundle names {path}, which is not a file: give a PEM bundle")
        return ssl.create_default_context(cafile=str(path))
    return ssl.create_default_context()


def open_client(
    *,
    auth: httpx.Auth | None,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    timeout_s: float = 60.0,
    trust_env: bool = True,
) -> httpx.Client:
    """An ``httpx.Client`` for one source: its auth, verified TLS, a timeout, no redirects.

    Redirects are not followed so that a token is never carried to a host it was not meant for.
    """
    return httpx.Client(
        auth=auth,
        verify=tls_verification(verify_tls=verify_tls, ca_bundle=ca_bundle),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=trust_env,
        headers={"Accept": "application/fhir+json", "User-Agent": "carelake"},
    )


def _secret(section: str, name: str) -> str | None:
    value = dlt.secrets.get(f"sources.{section}.{name}", str)
    return None if value is None else str(value)


def auth_from_config(
    options: Mapping[str, Any], *, section: str = "fhir_rest", base_url: str = ""
) -> httpx.Auth | None:
    """Build the auth of a source from its settings table and dlt's secrets.

    Settings (``[sources.<section>]``): ``auth`` (none, bearer, basic, smart), ``token_url``,
    ``client_id``, ``scope``, ``key_id``, ``algorithm``. Secrets (``sources.<section>.*``):
    ``token`` for bearer, ``username`` and ``password`` for basic, ``private_key`` (PEM) for smart.
    """
    mode = str(options.get("auth", "none"))
    env = f"SOURCES__{section.upper()}__"
    if mode not in AUTH_MODES:
        raise ConfigError(
            f"sources.{section}.auth is {mode!r}: use one of {', '.join(sorted(AUTH_MODES))}"
        )
    if mode == "none":
        return None
    if mode == "bearer":
        token = _secret(section, "token")
        if not token:
            raise ConfigError(f"bearer auth needs a token: set {env}TOKEN or .dlt/secrets.toml")
        return BearerToken(token)
    if mode == "basic":
        username, password = _secret(section, "username"), _secret(section, "password")
        if not username or password is None:
            raise ConfigError(f"basic auth needs {env}USERNAME and {env}PASSWORD")
        return httpx.BasicAuth(username, password)

    private_key = _secret(section, "private_key")
    client_id = str(options.get("client_id") or _secret(section, "client_id") or "")
    if not private_key or not client_id:
        raise ConfigError(
            f"smart auth needs sources.{section}.client_id and the PEM key in {env}PRIVATE_KEY"
        )
    token_url = str(options.get("token_url") or "")
    if not token_url:
        token_url = discover_token_url(base_url, options=options)
    return SmartBackendServices(
        token_url=token_url,
        client_id=client_id,
        private_key=private_key,
        algorithm=str(options.get("algorithm", "RS384")),
        key_id=options.get("key_id") or None,
        scope=str(options.get("scope", "system/*.read")),
    )


def discover_token_url(base_url: str, *, options: Mapping[str, Any]) -> str:
    """The token endpoint named by the server's ``.well-known/smart-configuration``."""
    if not base_url:
        raise ConfigError("smart auth needs token_url or a base_url to discover it from")
    url = base_url.rstrip("/") + "/.well-known/smart-configuration"
    with open_client(
        auth=None, verify_tls=bool(options.get("verify_tls", True)),
        ca_bundle=options.get("ca_bundle") or None,
        timeout_s=float(options.get("timeout_s", 60)),
    ) as client:
        try:
            response = client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise SourceError(
                f"could not read {urlsplit(url).path} ({type(error).__name__}): set token_url"
            ) from None
    endpoint = None
    if response.status_code == 200:
        try:
            endpoint = msgspec.json.decode(response.content, type=dict).get("token_endpoint")
        except (msgspec.DecodeError, AttributeError):
            endpoint = None
    if not isinstance(endpoint, str) or not endpoint:
        raise SourceError(
            f"{urlsplit(url).path} names no token_endpoint (HTTP {response.status_code}): "
            "set token_url"
        )
    return endpoint
