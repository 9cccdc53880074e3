"""The async transport: one ``httpx.AsyncClient``, created and closed on the SDK loop, with retry, 429 pauses and
an auth circuit per endpoint.

Endpoint names are a small fixed set (they are metric labels): ``resolve``, ``traces``, ``tags``, ``tags_batch``,
``evals``. The Judgment credentials (``Authorization``, ``X-Organization-Id``) are added per request, to requests
for the Judgment API only (``judgment=True``, the default): a span export to a third-party ``otlp_endpoint`` never
carries them. They never appear in a log line, a repr, an exception message or a metric.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import gzip as gzip_module
import ipaddress
import json
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from ._config import LOOP_THREAD_NAME, Config
from ._http11 import Http11Transport, proxy_configured
from ._metrics import Metrics
from ._retry import Outcome, classify_status, parse_retry_after
from ._routes import traces_to_judgment
from ._span import random_key

__all__ = ["ENDPOINTS", "AsyncTransport", "SendResult", "SendStatus"]

logger = logging.getLogger(__name__)

ENDPOINTS = ("resolve", "traces", "tags", "tags_batch", "evals")
_USER_AGENT = "judgeval-async/0.1"
_URLS_KEPT = 64
_GZIP_MIN_BYTES = 1024  # below this, compression costs more CPU than it saves bytes
# An idle pooled connection lives this long. httpcore checks every pooled connection (a poll() on its socket and a
# walk of anyio's socket attributes) twice per request, so connections a burst opened (a flush, a drain after an
# outage) cost every later request until they expire; the ones in steady use are reused several times a second.
_KEEPALIVE_EXPIRY = 5.0


class _QuietOnOurThread(logging.Filter):
    """Drops httpx/httpcore records emitted on the SDK's own loop thread.

    httpx logs every request at INFO ("HTTP Request: POST ..."), httpcore every connection and request phase at
    DEBUG: for an exporter sending many batches a minute that is log spam in the application's logs, and it is the
    application's log volume we promised not to touch. Records from the application's own httpx use (any other
    thread) pass unchanged. Our failures are reported through the health metrics and our own rate-limited warnings
    instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != LOOP_THREAD_NAME


_quiet = _QuietOnOurThread()


# A logger's filters see only the records created on that logger, not those propagated up from its children, so
# every logger httpx and httpcore log through needs the filter: httpcore logs through "httpcore.http11",
# "httpcore.connection", ... and never through "httpcore" itself. The known names are created here (a module
# imported later, such as httpcore's HTTP/2 code, gets the same, already filtered, logger object); any other
# child that already exists is covered too.
_HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def _quiet_http_logs() -> None:
    existing = [n for n in list(logging.root.manager.loggerDict) if n.startswith(("httpx.", "httpcore."))]
    for name in (*_HTTP_LOGGERS, *existing):
        log = logging.getLogger(name)
        if _quiet not in log.filters:
            log.addFilter(_quiet)


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_warned_plain_http: set[str] = set()


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_plain_http(config: Config) -> None:
    """Warn once per host when the API key would travel unencrypted over the network."""
    if not config.api_key:
        return
    # A third-party otlp_endpoint never gets the key (send's ``judgment``): only Judgment's URLs matter here.
    for url in (config.api_url, config.traces_url) if traces_to_judgment(config) else (config.api_url,):
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "http" or _is_loopback(host) or host in _warned_plain_http:
            continue
        _warned_plain_http.add(host)
        logger.warning(
            "judgeval_async: the API key will be sent over plain http:// to %s, unencrypted; use https:// "
            "(plain http is meant for a loopback test server)",
            host,
        )


# A Retry-After above max_retry_after is capped: one "Retry-After: 3600" must not silence the tracer for an hour.
# The cap is logged per endpoint at most once per this many seconds.
_CAP_LOG_INTERVAL = 300.0


class SendStatus(enum.Enum):
    """The final fate of one request, after retries. Each maps to one ledger bucket."""

    DELIVERED = "delivered"
    REJECTED = "non_retryable_status"
    AUTH = "auth_error"
    TOO_LARGE = "payload_too_large"
    EXHAUSTED = "retries_exhausted"
    UNACKNOWLEDGED = "unacknowledged"  # the last attempt was fully sent, then timed out: maybe delivered
    SHUTDOWN = "shutdown_deadline"


@dataclass(frozen=True, slots=True)
class SendResult:
    status: SendStatus
    http_status: int | None = None
    body: bytes = b""
    retry_after: float | None = None  # seconds the server asked us to wait (429/503 Retry-After), capped

    @property
    def ok(self) -> bool:
        return self.status is SendStatus.DELIVERED

    def json(self) -> Any:
        return json.loads(self.body)


class AsyncTransport:
    """Sends bytes to the Judgment API with bounded retry. Every ``async`` method runs on the SDK loop."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        shutting_down: threading.Event | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._policy = config.retry_policy
        self._shutting_down = shutting_down or threading.Event()
        self._transport = transport  # a test seam (httpx.MockTransport in unit tests); None = real network
        self._rng = rng or random.Random()
        self._client: httpx.AsyncClient | None = None
        # With our own transport under the client: (it, the client's default headers, its timeouts), so _attempt
        # hands requests to it directly (see there). None with a test seam's transport or httpx's own (a proxy).
        self._direct: tuple[Http11Transport, dict[str, str], dict[str, float | None]] | None = None
        # Parsed URLs by text, for the direct path: httpx parses a URL given as text on every Request (~7 µs of its
        # ~22 here, a character-by-character check in Python); an httpx.URL is immutable and reused as it is.
        # Bounded: the per-trace tag fallback makes one URL per trace.
        self._urls: dict[str, httpx.URL] = {}
        # The TLS context is built here, on the constructing thread, not by the client on the loop thread: building
        # it loads the CA bundle inside OpenSSL, and a fork landing meanwhile (gunicorn pre-fork, a fork pool right
        # after the Tracer was made) left the child OpenSSL locks no thread there releases: the child's first send
        # hung for good (tests/adversarial/test_fork_storm.py caught it, children 0 and 1).
        self._ssl_context = httpx.create_ssl_context(verify=config.verify_tls)
        _quiet_http_logs()
        _warn_plain_http(config)
        self._cap_logged_at: dict[str, float] = {}
        self._auth_logged: set[str] = set()
        self._probe_at: dict[str, float] = {}
        # Judgment's credentials: sent only with requests to the Judgment API (see send's ``judgment``).
        self._judgment_headers: dict[str, str] = {}
        if config.api_key:
            self._judgment_headers["Authorization"] = f"Bearer {config.api_key}"
        if config.organization_id:
            self._judgment_headers["X-Organization-Id"] = config.organization_id

    def __repr__(self) -> str:
        return f"AsyncTransport(api_url={self._config.api_url!r})"

    # ------------------------------------------------------------------ lifecycle (on the loop)
    def _ensure_client(self) -> httpx.AsyncClient:
        client = self._client
        if client is None:
            c = self._config
            transport = self._transport or self.default_transport()
            client = httpx.AsyncClient(
                headers={"User-Agent": _USER_AGENT},
                timeout=httpx.Timeout(
                    connect=c.connect_timeout,
                    read=c.read_timeout,
                    write=c.write_timeout,
                    pool=c.pool_timeout,
                ),
                limits=httpx.Limits(
                    # Room for every endpoint at its largest adaptive limit: a request waiting for a pooled
                    # connection would otherwise time out (pool_timeout) and count against a healthy endpoint.
                    max_connections=max(c.max_concurrent_exports, c.max_concurrent_requests) * len(ENDPOINTS),
                    max_keepalive_connections=max(c.max_concurrent_exports, c.max_concurrent_requests) * 2,
                    keepalive_expiry=_KEEPALIVE_EXPIRY,
                ),
                verify=self._ssl_context,
                http1=True,
                http2=False,
                transport=transport,
                follow_redirects=False,
            )
            self._client = client
            if isinstance(transport, Http11Transport):
                self._direct = (transport, dict(client.headers), client.timeout.as_dict())
        return client

    def default_transport(self) -> httpx.AsyncBaseTransport | None:
        """Ours (``_http11``: under half the loop thread's CPU per request of httpcore's), or None for httpx's own
        where it is needed: to speak to a proxy named in the environment."""
        if proxy_configured():
            return None
        c = self._config
        return Http11Transport(
            self._ssl_context,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
            max_keepalive=max(c.max_concurrent_exports, c.max_concurrent_requests) * 2,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._direct = None
        if client is not None:
            await client.aclose()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's client without closing it (its sockets belong to the parent)."""
        self._client = None
        self._direct = None

    # ------------------------------------------------------------------ sending
    def paused_for(self, endpoint: str) -> float:
        """Seconds the endpoint remains paused by a 429 (0 when not paused)."""
        return max(0.0, self._metrics.endpoint(endpoint).paused_until - time.monotonic())

    async def send(
        self,
        endpoint: str,
        url: str,
        content: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        compress: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - a deadline for the whole retry loop, not one await
        retry: bool = True,
        idempotency_key: str | None = None,
        judgment: bool = True,
    ) -> SendResult:
        """POST ``content`` to ``url`` with retries; never raises (except CancelledError, at shutdown).

        ``idempotency_key``: the payload's own key (the delivery pipeline's ``Envelope`` carries it across retries,
        spills and replays); None mints one for this send, reused by its retries.
        ``judgment``: the request goes to the Judgment API and carries its credentials; False (a third-party OTLP
        endpoint): it does not, whatever ``headers`` holds is all it carries.
        """
        state = self._metrics.endpoint(endpoint)
        started = time.monotonic()
        policy = self._policy if timeout is None else dataclasses.replace(self._policy, timeout=timeout)
        deadline = started + policy.timeout
        if state.circuit_open:
            if time.monotonic() < self._probe_at.get(endpoint, 0.0):
                return SendResult(SendStatus.AUTH)
            # Cool-down over: this request is the one probe; others keep failing fast until it answers.
            self._probe_at[endpoint] = time.monotonic() + self._config.circuit_cooldown
        # One key per logical send, reused by its retries, so a backend can drop a redelivery of the same batch.
        request_headers = {"Content-Type": content_type, "Idempotency-Key": idempotency_key or random_key()}
        body = content
        if compress and len(content) >= _GZIP_MIN_BYTES:
            # Level 1: within a few percent of level 6 on OTLP batches, at ~40 % of the CPU (docs/performance.md).
            body = gzip_module.compress(content, compresslevel=1)
            request_headers["Content-Encoding"] = "gzip"
        if headers:
            request_headers.update(headers)
        if judgment:
            request_headers.update(self._judgment_headers)
        attempt = 0
        # The last attempt was fully sent and then timed out: the backend may have recorded it. Giving up after
        # such an attempt is counted "unacknowledged", not "retries_exhausted" (docs/reliability.md).
        unacknowledged = False
        gave_up = SendStatus.EXHAUSTED
        while True:
            # A 429 pauses this endpoint (and only this one) until its Retry-After has passed.
            pause = state.paused_until - time.monotonic()
            if pause > 0:
                if time.monotonic() + pause >= deadline:
                    return SendResult(gave_up)
                if await self._sleep(pause):
                    return SendResult(SendStatus.SHUTDOWN)
            attempt += 1
            status_code, retry_after_header, resp_body, unacknowledged = await self._attempt(
                endpoint, url, body, request_headers, deadline
            )
            gave_up = SendStatus.UNACKNOWLEDGED if unacknowledged else SendStatus.EXHAUSTED
            if status_code is not None and 200 <= status_code < 300:
                if state.circuit_open:
                    state.circuit_open = False
                    self._auth_logged.discard(endpoint)
                    logger.warning("judgeval_async: %s endpoint accepts our credentials again", endpoint)
                return SendResult(SendStatus.DELIVERED, status_code, resp_body)
            if status_code is None:
                outcome = Outcome.RETRY
            else:
                outcome = classify_status(status_code)
            if outcome is Outcome.AUTH:
                self._open_circuit(endpoint, status_code)
                return SendResult(SendStatus.AUTH, status_code, resp_body)
            if outcome is Outcome.TOO_LARGE:
                return SendResult(SendStatus.TOO_LARGE, status_code, resp_body)
            if outcome is Outcome.REJECTED:
                return SendResult(SendStatus.REJECTED, status_code, resp_body)
            retry_after = self._capped(endpoint, parse_retry_after(retry_after_header, now=time.time()))
            if not retry:
                if status_code == 429 and retry_after is None:
                    retry_after = 1.0
                return SendResult(gave_up, status_code, resp_body, retry_after)
            if status_code == 429:
                # Default to a short pause when the server asks us to slow down without saying for how long.
                pause_for = retry_after if retry_after is not None else 1.0
                state.paused_until = max(state.paused_until, time.monotonic() + pause_for)
                retry_after = pause_for
            wait = policy.next_wait(
                attempt=attempt,
                elapsed=time.monotonic() - started,
                retry_after=retry_after,
                rng=self._rng,
                after_timeout=unacknowledged,
            )
            if wait is None:
                return SendResult(gave_up, status_code, resp_body)
            self._metrics.retries.inc(endpoint)
            # Shutdown cuts a backoff short, including a zero one (testing mode): no new attempt starts after it.
            if (await self._sleep(wait)) if wait > 0 else self._shutting_down.is_set():
                return SendResult(SendStatus.SHUTDOWN, status_code, resp_body)

    def _capped(self, endpoint: str, retry_after: float | None) -> float | None:
        """``retry_after`` bounded by ``max_retry_after``; the cap is logged per endpoint, rate-limited."""
        cap = self._config.max_retry_after
        if retry_after is None or retry_after <= cap:
            return retry_after
        now = time.monotonic()
        last = self._cap_logged_at.get(endpoint)
        if last is None or now - last >= _CAP_LOG_INTERVAL:
            self._cap_logged_at[endpoint] = now
            logger.warning(
                "judgeval_async: the Judgment API asked the %s endpoint to wait %.0fs (Retry-After); "
                "waiting max_retry_after=%.0fs instead",
                endpoint,
                retry_after,
                cap,
            )
        return cap

    async def _attempt(
        self, endpoint: str, url: str, body: bytes, headers: dict[str, str], deadline: float
    ) -> tuple[int | None, str | None, bytes, bool]:
        """One request. Returns (status or None for a transport failure, Retry-After header, body, unacknowledged).

        ``unacknowledged``: the request was sent completely and then timed out waiting for the answer, so the
        backend may have processed it (an ambiguous delivery, unlike a failed connect or a reset mid-upload).
        """
        client = self._ensure_client()
        state = self._metrics.endpoint(endpoint)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, None, b"", False  # no time left for a request: none is sent, none is counted
        sent = False

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            # httpcore's request trace extension: the one reliable signal that the whole body left this process.
            nonlocal sent
            if event.endswith("send_request_body.complete"):
                sent = True

        state.in_flight += 1
        state.bytes_sent += len(body)
        t0 = time.perf_counter()
        try:
            # The hard deadline covers what httpx's per-phase timeouts cannot: a server trickling its body.
            with anyio.fail_after(remaining):
                direct = self._direct
                if direct is None:
                    response = await client.post(url, content=body, headers=headers, extensions={"trace": trace})
                    resp_body = response.content
                else:
                    # Straight to our transport, with what the client would have added (its default headers, our
                    # header names winning case-insensitively, its timeouts): AsyncClient.send's layers (cookies,
                    # auth and redirect flows, hooks) cost the loop ~0.15 ms per request here and do nothing for
                    # these POSTs (no cookies kept: the API's answers are not session-bound).
                    transport, defaults, timeouts = direct
                    merged = defaults.copy()
                    merged.update({name.lower(): value for name, value in headers.items()})
                    parsed = self._urls.get(url)
                    if parsed is None:
                        if len(self._urls) >= _URLS_KEPT:
                            self._urls.clear()
                        parsed = self._urls[url] = httpx.URL(url)
                    request = httpx.Request(
                        "POST", parsed, content=body, headers=merged, extensions={"timeout": timeouts, "trace": trace}
                    )
                    response = await transport.handle_async_request(request)
                    resp_body = await response.aread()
        except (TimeoutError, httpx.TimeoutException) as exc:
            self._record_error(endpoint, "timeout", type(exc).__name__)
            # httpx raises ReadTimeout only while waiting for the answer, i.e. after the request was written.
            return None, None, b"", sent or isinstance(exc, httpx.ReadTimeout)
        except httpx.HTTPError as exc:
            self._record_error(endpoint, "network", type(exc).__name__)
            return None, None, b"", False
        finally:
            state.in_flight -= 1
            self._metrics.request_duration(endpoint).observe(time.perf_counter() - t0)
        status = response.status_code
        if not 200 <= status < 300:
            self._record_error(endpoint, str(status), f"HTTP {status}")
        return status, response.headers.get("Retry-After"), resp_body, False

    def _record_error(self, endpoint: str, label: str, detail: str) -> None:
        # ``detail`` is an exception *type* name or a status: never a message, which could carry a URL or header.
        self._metrics.api_errors.inc(endpoint, label)
        state = self._metrics.endpoint(endpoint)
        state.last_error = detail
        state.last_error_unix = time.time()
        logger.debug("judgeval_async %s request failed: %s", endpoint, detail)

    def _open_circuit(self, endpoint: str, status: int | None) -> None:
        state = self._metrics.endpoint(endpoint)
        state.circuit_open = True
        self._probe_at[endpoint] = time.monotonic() + self._config.circuit_cooldown
        if endpoint not in self._auth_logged:
            self._auth_logged.add(endpoint)
            logger.error(
                "judgeval_async: the Judgment API refused our credentials (HTTP %s) on the %s endpoint%s. "
                "Check JUDGMENT_API_KEY and JUDGMENT_ORG_ID. Items for this endpoint are dropped and counted "
                "(reason auth_error); retrying in %.0fs.",
                status,
                endpoint,
                "" if self._config.api_key else " (no API key is configured)",
                self._config.circuit_cooldown,
            )

    async def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if shutdown began (shutdown cuts backoff short)."""
        end = time.monotonic() + seconds
        while True:
            if self._shutting_down.is_set():
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            # Poll the thread-safe event at a coarse step: a backoff sleep is seconds long, shutdown needs
            # only to notice within a fraction of its own deadline.
            await asyncio.sleep(min(left, 0.05))
