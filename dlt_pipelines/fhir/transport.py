"""Sending requests to FHIR servers: bounded retries with back-off, and URLs safe to log.

Retried: 429 and 5xx answers, and failures to connect or read. The wait is the server's
``Retry-After`` (seconds or an HTTP date) when it gives one, else exponential back-off with full
jitter; attempts are bounded by ``max_retries`` (``sources.fhir_rest.max_retries``). A TLS
certificate that fails verification is never retried.
"""

from __future__ import annotations

import email.utils
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from infra.errors import SourceError

logger = logging.getLogger(__name__)
# httpx logs every request's full URL at INFO, query values included; a next link or an export
# output URL may carry values that identify a patient. This module logs safe_url() forms instead.
logging.getLogger("httpx").setLevel(logging.WARNING)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Query parameters whose values never carry patient data, so they may appear in logs and errors.
SAFE_PARAMETERS = frozenset({
    "_count", "_lastUpdated", "_since", "_type", "_getpagesoffset", "_offset", "_page",
    "_outputFormat", "_sort", "_format", "_elements",
})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; ``sleep`` and ``jitter`` are replaceable for tests."""

    max_retries: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    # The longest Retry-After honoured as given; a longer one is cut to this.
    max_retry_after_s: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full jitter: a uniform wait in [0, min(max, base * 2**attempt))."""
        return self.jitter() * min(self.max_delay_s, self.base_delay_s * 2 ** attempt)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def safe_url(url: str | httpx.URL) -> str:
    """The URL with the values of every query parameter not known to be harmless masked."""
    parts = urlsplit(str(url))
    query = [
        (name, value if name in SAFE_PARAMETERS else "*")
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe=":,*"), ""))


def _tls_failure(error: httpx.HTTPError) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    headers: Mapping[str, str] | None = None,
    stream: bool = False,
    auth: httpx.Auth | None | object = httpx.USE_CLIENT_DEFAULT,
    setting: str = "sources.fhir_rest.max_retries",
    retry_status: frozenset[int] = RETRYABLE_STATUS,
) -> httpx.Response:
    """Send one request, retrying 429, 5xx and transport failures; return the final response.

    A non-retryable answer (2xx, 3xx, 4xx other than 429, any status not in ``retry_status``)
    is returned to the caller. Exhausted
    retries raise ``SourceError`` naming the method and the URL path, never the query values.
    With ``stream=True`` the body is not read; the caller must close the response.
    """
    where = f"{method} {urlsplit(url).path}"
    last = ""
    for attempt in range(policy.max_retries + 1):
        request = client.build_request(method, url, headers=headers)
        try:
            response = client.send(request, stream=stream, auth=auth)
        except httpx.TransportError as error:
            if _tls_failure(error):
                raise SourceError(
                    f"{where}: the server's TLS certificate failed verification: give its CA "
                    "as sources.<source>.ca_bundle (a PEM file) rather than turning verify_tls off"
                ) from None
            last = type(error).__name__
            wait = policy.backoff(attempt)
        else:
            if response.status_code not in retry_status:
                return response
            last = f"HTTP {response.status_code}"
            told = retry_after_seconds(response.headers.get("Retry-After"))
            wait = min(told, policy.max_retry_after_s) if told is not None else None
            if wait is None:
                wait = policy.backoff(attempt)
            response.close()
        if attempt == policy.max_retries:
            break
        logger.info("%s answered %s; retry %d of %d in %.2f s", where, last, attempt + 1,
                    policy.max_retries, wait)
        policy.sleep(wait)
    raise SourceError(
        f"{where} failed {policy.max_retries + 1} times (last: {last}): the server is overloaded "
        f"or down; try again later or raise {setting}"
    )
