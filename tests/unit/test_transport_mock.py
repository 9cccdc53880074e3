"""Unit tests for judgeval_async._transport against httpx.MockTransport: headers, gzip, retry, 429 pauses,
the auth circuit, transport errors, shutdown and secret hygiene."""

from __future__ import annotations

import asyncio
import gzip
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from judgeval_async import Config
from judgeval_async._metrics import Metrics
from judgeval_async._transport import AsyncTransport, SendResult, SendStatus

KEY = "sk-SECRET"
BASE = "http://127.0.0.1:9"
TRACES = BASE + "/otel/v1/traces"
TAGS = BASE + "/tags"
WAIT = 10.0


def config(**overrides: Any) -> Config:
    options: dict[str, Any] = {"retry_testing": True, "api_key": KEY, "organization_id": "org1", "api_url": BASE}
    options.update(overrides)
    return Config(**options)


class Server:
    """A scripted MockTransport handler: replies from a per-path script (the last reply repeats), records calls."""

    def __init__(self, *replies: Any, by_path: dict[str, list[Any]] | None = None) -> None:
        self.default = list(replies) or [200]
        self.by_path = by_path or {}
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.calls: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        path = request.url.path
        self.calls[path] += 1
        script = self.by_path.get(path, self.default)
        reply = script[min(self.calls[path], len(script)) - 1]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        if isinstance(reply, tuple):
            status, headers = reply
            return httpx.Response(status, headers=headers)
        return httpx.Response(reply, json={"ok": reply < 300})

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@asynccontextmanager
async def transport(
    handler: Callable[[httpx.Request], Any],
    cfg: Config | None = None,
    shutting_down: threading.Event | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[tuple[AsyncTransport, Metrics]]:
    metrics = Metrics()
    t = AsyncTransport(
        cfg or config(),
        metrics,
        shutting_down=shutting_down or threading.Event(),
        transport=httpx.MockTransport(handler),
        rng=rng,
    )
    try:
        yield t, metrics
    finally:
        await t.aclose()


class MaxRandom(random.Random):
    """An rng seam that always picks the top of the jitter range, so backoff waits are exactly the cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


# ------------------------------------------------------------------ headers and body
@pytest.mark.asyncio
async def test_auth_org_and_per_call_headers() -> None:
    """Requests carry Bearer auth, the org id, the content type and per-call extra headers."""
    server = Server(200)
    async with transport(server) as (t, _):
        result = await t.send(
            "traces", TRACES, b"payload", content_type="application/x-protobuf", headers={"x-project-id": "p-1"}
        )
    assert result.status is SendStatus.DELIVERED
    assert result.ok
    assert result.http_status == 200
    assert result.json() == {"ok": True}
    req = server.requests[0]
    assert req.method == "POST"
    assert str(req.url) == TRACES
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["X-Organization-Id"] == "org1"
    assert req.headers["x-project-id"] == "p-1"
    assert req.headers["Content-Type"] == "application/x-protobuf"
    assert req.headers["User-Agent"].startswith("judgeval-async/")
    assert "Content-Encoding" not in req.headers
    assert server.bodies == [b"payload"]


@pytest.mark.asyncio
async def test_no_auth_headers_without_credentials() -> None:
    """With no key or org configured, no Authorization or X-Organization-Id header is sent."""
    server = Server(200)
    async with transport(server, config(api_key="", organization_id="")) as (t, _):
        await t.send("tags", TAGS, b"{}")
    assert "Authorization" not in server.requests[0].headers
    assert "X-Organization-Id" not in server.requests[0].headers
    assert server.requests[0].headers["Content-Type"] == "application/json"


@pytest.mark.asyncio
async def test_gzip_for_large_bodies() -> None:
    """compress=True with a body of at least 1 KB sends gzip that decompresses to the original."""
    body = b'{"spans": "' + b"abcdefgh" * 512 + b'"}'
    server = Server(200)
    async with transport(server) as (t, _):
        assert (await t.send("traces", TRACES, body, compress=True)).ok
    req = server.requests[0]
    assert req.headers["Content-Encoding"] == "gzip"
    assert len(server.bodies[0]) < len(body)
    assert gzip.decompress(server.bodies[0]) == body


@pytest.mark.asyncio
@pytest.mark.parametrize(("size", "compress"), [(1023, True), (10, True), (4096, False)])
async def test_no_gzip_for_small_bodies_or_when_disabled(size: int, compress: bool) -> None:
    """Bodies under 1 KB, or compress=False, go out uncompressed."""
    body = b"z" * size
    server = Server(200)
    async with transport(server) as (t, _):
        await t.send("traces", TRACES, body, compress=compress)
    assert "Content-Encoding" not in server.requests[0].headers
    assert server.bodies == [body]


# ------------------------------------------------------------------ retry
@pytest.mark.asyncio
async def test_503_twice_then_200_is_delivered_once() -> None:
    """503, 503, 200 delivers on the third try with 2 retries and 2 api_errors counted for 503."""
    server = Server(503, 503, 200)
    async with transport(server) as (t, m):
        result = await t.send("traces", TRACES, b"x")
    assert result.status is SendStatus.DELIVERED
    assert server.total == 3
    assert dict(m.retries.items()) == {("traces",): 2}
    assert dict(m.api_errors.items()) == {("traces", "503"): 2}
    assert m.request_duration("traces").count == 3
    assert m.endpoint("traces").in_flight == 0


@pytest.mark.asyncio
async def test_persistent_503_exhausts_attempts() -> None:
    """A server that always fails is tried retry_attempts times, then the result is retries_exhausted."""
    server = Server(503)
    async with transport(server, config(retry_attempts=4)) as (t, m):
        result = await t.send("evals", BASE + "/evals", b"x")
    assert result.status is SendStatus.EXHAUSTED
    assert result.status.value == "retries_exhausted"
    assert result.http_status == 503
    assert server.total == 4
    assert m.retries.total() == 3


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 404, 422, 501])
async def test_non_retryable_status_is_not_retried(status: int) -> None:
    """A 4xx (other than auth/413/408/429) or 501 is reported once, without retry."""
    server = Server(status)
    async with transport(server) as (t, m):
        result = await t.send("traces", TRACES, b"x")
    assert result.status is SendStatus.REJECTED
    assert result.status.value == "non_retryable_status"
    assert result.http_status == status
    assert server.total == 1
    assert m.retries.total() == 0
    assert dict(m.api_errors.items()) == {("traces", str(status)): 1}


@pytest.mark.asyncio
async def test_413_is_payload_too_large() -> None:
    """413 is reported as payload_too_large, without retry, for the caller to split."""
    server = Server(413)
    async with transport(server) as (t, m):
        result = await t.send("traces", TRACES, b"x" * 10)
    assert result.status is SendStatus.TOO_LARGE
    assert result.status.value == "payload_too_large"
    assert server.total == 1
    assert m.retries.total() == 0


@pytest.mark.asyncio
async def test_retry_false_sends_once() -> None:
    """retry=False gives up after the first retryable failure."""
    server = Server(503)
    async with transport(server) as (t, m):
        result = await t.send("traces", TRACES, b"x", retry=False)
    assert result.status is SendStatus.EXHAUSTED
    assert server.total == 1
    assert m.retries.total() == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("exc", "label", "final"),
    [
        (httpx.ConnectError("connection refused"), "network", SendStatus.EXHAUSTED),
        (httpx.RemoteProtocolError("peer closed"), "network", SendStatus.EXHAUSTED),
        # A read timeout happens after the request was sent: the backend may have it, so it is "unacknowledged".
        (httpx.ReadTimeout("read timed out"), "timeout", SendStatus.UNACKNOWLEDGED),
        (httpx.ConnectTimeout("connect timed out"), "timeout", SendStatus.EXHAUSTED),
    ],
)
async def test_transport_exceptions_are_retried_then_exhausted(exc: Exception, label: str, final: SendStatus) -> None:
    """Network errors and timeouts are retried up to the attempt limit and counted by kind, never raised."""
    server = Server(exc)
    async with transport(server, config(retry_attempts=3)) as (t, m):
        result = await t.send("tags", TAGS, b"x")
    assert result.status is final
    assert result.http_status is None
    assert server.total == 3
    assert dict(m.api_errors.items()) == {("tags", label): 3}
    assert dict(m.retries.items()) == {("tags",): 2}
    assert m.endpoint("tags").in_flight == 0


@pytest.mark.asyncio
async def test_transport_error_then_success() -> None:
    """A connection error followed by a 200 is delivered."""
    server = Server(httpx.ConnectError("refused"), 200)
    async with transport(server) as (t, m):
        assert (await t.send("tags", TAGS, b"x")).ok
    assert dict(m.api_errors.items()) == {("tags", "network"): 1}


@pytest.mark.asyncio
async def test_other_httpx_errors_are_contained() -> None:
    """An httpx error that is not a transport error (here a decoding error) is retried and counted, not raised."""
    server = Server(httpx.DecodingError("bad gzip"))
    async with transport(server, config(retry_attempts=2)) as (t, m):
        result = await t.send("tags", TAGS, b"x")
    assert result.status is SendStatus.EXHAUSTED
    assert dict(m.api_errors.items()) == {("tags", "network"): 2}


# ------------------------------------------------------------------ auth circuit
@pytest.mark.asyncio
@pytest.mark.parametrize("status", [401, 403])
async def test_auth_error_opens_circuit_and_skips_requests(status: int, caplog: pytest.LogCaptureFixture) -> None:
    """401/403 opens the endpoint's circuit: later sends fail fast without a request; one error log, no key."""
    server = Server(by_path={"/otel/v1/traces": [status], "/tags": [200]})
    with caplog.at_level(logging.DEBUG):
        async with transport(server, config(circuit_cooldown=3600.0)) as (t, m):
            first = await t.send("traces", TRACES, b"x")
            assert first.status is SendStatus.AUTH
            assert first.status.value == "auth_error"
            assert m.endpoint("traces").circuit_open
            for _ in range(5):
                assert (await t.send("traces", TRACES, b"x")).status is SendStatus.AUTH
            assert server.calls["/otel/v1/traces"] == 1
            # Other endpoints are unaffected.
            assert not m.endpoint("tags").circuit_open
            assert (await t.send("tags", TAGS, b"x")).ok
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "traces" in errors[0].getMessage()
    assert KEY not in caplog.text
    assert m.retries.total() == 0


@pytest.mark.asyncio
async def test_probe_after_cooldown_closes_circuit(caplog: pytest.LogCaptureFixture) -> None:
    """After the cool-down the next send goes out as a probe; a 200 closes the circuit."""
    server = Server(401, 200)
    with caplog.at_level(logging.WARNING):
        async with transport(server, config(circuit_cooldown=0.05)) as (t, m):
            assert (await t.send("traces", TRACES, b"x")).status is SendStatus.AUTH
            assert m.endpoint("traces").circuit_open
            await asyncio.sleep(0.2)  # let the (deterministic, 0.05 s) cool-down pass; nothing is asserted on timing
            probe = await t.send("traces", TRACES, b"x")
            assert probe.status is SendStatus.DELIVERED
            assert not m.endpoint("traces").circuit_open
            assert server.total == 2
            assert (await t.send("traces", TRACES, b"x")).ok
    assert server.total == 3
    assert any("accepts our credentials again" in r.getMessage() for r in caplog.records)
    assert KEY not in caplog.text


@pytest.mark.asyncio
async def test_failed_probe_reopens_without_logging_again(caplog: pytest.LogCaptureFixture) -> None:
    """A probe that gets 401 again re-opens the circuit, without repeating the error log."""
    server = Server(401)
    with caplog.at_level(logging.ERROR):
        async with transport(server, config(circuit_cooldown=0.05)) as (t, m):
            await t.send("traces", TRACES, b"x")
            await asyncio.sleep(0.2)
            assert (await t.send("traces", TRACES, b"x")).status is SendStatus.AUTH
            assert server.total == 2
            assert m.endpoint("traces").circuit_open
            assert (await t.send("traces", TRACES, b"x")).status is SendStatus.AUTH
            assert server.total == 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


# ------------------------------------------------------------------ 429
@pytest.mark.asyncio
async def test_429_pauses_only_that_endpoint() -> None:
    """A 429 with Retry-After pauses its endpoint; another endpoint's send proceeds while it waits."""
    server = Server(by_path={"/otel/v1/traces": [(429, {"Retry-After": "2"}), 200], "/tags": [200]})
    async with transport(server) as (t, m):
        started = time.monotonic()
        traces = asyncio.ensure_future(t.send("traces", TRACES, b"x"))

        async def until_paused() -> None:
            while t.paused_for("traces") == 0:
                await asyncio.sleep(0.005)

        await asyncio.wait_for(until_paused(), WAIT)
        assert t.paused_for("traces") <= 2.0
        assert t.paused_for("tags") == 0
        other = await asyncio.wait_for(t.send("tags", TAGS, b"x"), WAIT)
        assert other.ok
        assert not traces.done()  # still paused: the tags request did not wait for it
        assert [r.url.path for r in server.requests] == ["/otel/v1/traces", "/tags"]
        result = await asyncio.wait_for(traces, WAIT)
        assert result.ok
        assert time.monotonic() - started >= 1.9  # Retry-After is honoured even in testing mode (lower bound only)
    assert server.calls["/otel/v1/traces"] == 2
    assert dict(m.api_errors.items()) == {("traces", "429"): 1}


@pytest.mark.asyncio
async def test_429_retry_after_beyond_deadline_gives_up_and_pauses() -> None:
    """A Retry-After past the deadline gives up at once; the (capped) pause still applies to the next send."""
    server = Server((429, {"Retry-After": "3600"}))
    async with transport(server, config(export_timeout=30.0)) as (t, m):
        result = await asyncio.wait_for(t.send("traces", TRACES, b"x"), WAIT)
        assert result.status is SendStatus.EXHAUSTED
        assert result.http_status == 429
        assert 50 < t.paused_for("traces") <= 60  # Retry-After: 3600 capped at max_retry_after (default 60 s)
        again = await asyncio.wait_for(t.send("traces", TRACES, b"x"), WAIT)
        assert again.status is SendStatus.EXHAUSTED
        assert server.total == 1
        assert m.retries.total() == 0


# ------------------------------------------------------------------ deadline and shutdown
@pytest.mark.asyncio
async def test_shutdown_cuts_backoff_short() -> None:
    """Setting the shutdown event during a 30 s backoff makes send return shutdown promptly."""
    server = Server(503)
    stop = threading.Event()
    cfg = config(retry_testing=False, retry_wait_initial=30, retry_wait_max=30, export_timeout=120.0)
    async with transport(server, cfg, shutting_down=stop, rng=MaxRandom()) as (t, _):
        asyncio.get_running_loop().call_later(0.2, stop.set)
        started = time.monotonic()
        result = await asyncio.wait_for(t.send("traces", TRACES, b"x"), 60)
        elapsed = time.monotonic() - started
    assert result.status is SendStatus.SHUTDOWN
    assert result.status.value == "shutdown_deadline"
    assert server.total == 1
    assert elapsed < 10.0  # generous; the backoff alone would be 30 s


@pytest.mark.asyncio
async def test_slow_server_is_cut_by_the_deadline() -> None:
    """A response slower than the whole send deadline is abandoned and counted as a timeout."""
    release = asyncio.Event()
    calls = 0

    async def hang(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await release.wait()
        return httpx.Response(200)

    async with transport(hang) as (t, m):
        result = await asyncio.wait_for(t.send("traces", TRACES, b"x", timeout=0.2), WAIT)
    release.set()
    assert result.status is SendStatus.EXHAUSTED
    assert calls == 1
    assert m.api_errors.items()[0][0] == ("traces", "timeout")


@pytest.mark.asyncio
async def test_retry_loop_respects_the_per_call_deadline() -> None:
    """With timeout=2 and 1 s backoffs, send gives up after the 2nd try instead of sleeping past its deadline."""
    server = Server(503)
    cfg = config(retry_testing=False, retry_wait_initial=1.0, retry_wait_max=1.0, export_timeout=60.0)
    async with transport(server, cfg, rng=MaxRandom()) as (t, m):
        result = await asyncio.wait_for(t.send("traces", TRACES, b"x", timeout=2.0), WAIT)
    assert result.status is SendStatus.EXHAUSTED
    assert server.total == 2
    assert ("traces", "timeout") not in dict(m.api_errors.items())  # no request ever timed out
    assert m.retries.total() == 1


# ------------------------------------------------------------------ secrets
@pytest.mark.asyncio
async def test_api_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    """The key is absent from repr(transport), results and every log line, even when an error's text contains it."""

    def leaky(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"failed with headers {dict(request.headers)}")

    with caplog.at_level(logging.DEBUG):
        async with transport(leaky, config(retry_attempts=2)) as (t, m):
            assert KEY not in repr(t)
            result = await t.send("traces", TRACES, b"x")
            assert KEY not in repr(result)
            assert KEY not in repr(m.api_errors.items())
    assert result.status is SendStatus.EXHAUSTED
    assert KEY not in caplog.text
    assert all(KEY not in str(r.args) for r in caplog.records)


def test_send_result_helpers() -> None:
    """SendResult.ok is True only for delivered, and json() parses the body."""
    assert SendResult(SendStatus.DELIVERED, 200, b'{"a": 1}').json() == {"a": 1}
    assert not SendResult(SendStatus.AUTH).ok
    assert {s.value for s in SendStatus} <= {
        "delivered",
        "non_retryable_status",
        "auth_error",
        "payload_too_large",
        "retries_exhausted",
        "unacknowledged",
        "shutdown_deadline",
    }


@pytest.mark.asyncio
async def test_aclose_is_idempotent_and_client_is_recreated() -> None:
    """aclose twice is fine, and a send after aclose builds a fresh client."""
    server = Server(200)
    async with transport(server) as (t, _):
        await t.aclose()
        await t.aclose()
        assert (await t.send("tags", TAGS, b"x")).ok
    assert server.total == 1


# ------------------------------------------------------------------ Retry-After cap (max_retry_after)
def _cap_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "max_retry_after" in r.getMessage()]


@pytest.mark.asyncio
async def test_429_retry_after_is_capped_by_max_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    """A 429 asking for an hour pauses the endpoint for max_retry_after only; the retry then delivers."""
    server = Server((429, {"Retry-After": "3600"}), 200)
    with caplog.at_level(logging.WARNING):
        async with transport(server, config(max_retry_after=0.3, export_timeout=20.0)) as (t, _):
            result = await asyncio.wait_for(t.send("traces", TRACES, b"x"), WAIT)
    assert result.status is SendStatus.DELIVERED
    assert server.total == 2
    (warning,) = _cap_warnings(caplog)
    assert "3600" in warning.getMessage() and "traces" in warning.getMessage()


@pytest.mark.asyncio
async def test_503_retry_after_is_capped_and_logged_once_per_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    """A 503's Retry-After is capped too; repeated caps log once per endpoint, not once per response."""
    server = Server((503, {"Retry-After": "86400"}), (503, {"Retry-After": "86400"}), 200)
    with caplog.at_level(logging.WARNING):
        async with transport(server, config(max_retry_after=0.05, retry_attempts=5)) as (t, _):
            assert (await asyncio.wait_for(t.send("evals", TAGS, b"x"), WAIT)).ok
            server.calls.clear()
            assert (await asyncio.wait_for(t.send("evals", TAGS, b"x"), WAIT)).ok
            server.calls.clear()
            assert (await asyncio.wait_for(t.send("tags", TAGS, b"x"), WAIT)).ok
    assert sorted(r.getMessage().split(" endpoint")[0].rsplit(" ", 1)[1] for r in _cap_warnings(caplog)) == [
        "evals",
        "tags",
    ]


@pytest.mark.asyncio
async def test_retry_after_below_the_cap_is_honoured_as_given() -> None:
    """A Retry-After under max_retry_after pauses for exactly what the server asked."""
    server = Server((429, {"Retry-After": "40"}))
    async with transport(server, config(export_timeout=30.0)) as (t, _):
        await asyncio.wait_for(t.send("traces", TRACES, b"x"), WAIT)
        assert 35 < t.paused_for("traces") <= 40


# ------------------------------------------------------------------ sent but never answered
@pytest.mark.asyncio
async def test_last_attempt_timing_out_after_sending_is_unacknowledged() -> None:
    """Read timeouts on every attempt end as unacknowledged (maybe delivered), not retries_exhausted."""
    server = Server(httpx.ReadTimeout("no answer"))
    async with transport(server, config(retry_attempts=3)) as (t, _):
        result = await t.send("traces", TRACES, b"x")
    assert result.status is SendStatus.UNACKNOWLEDGED
    assert result.status.value == "unacknowledged"
    assert server.total == 3
    assert len({r.headers["Idempotency-Key"] for r in server.requests}) == 1


@pytest.mark.asyncio
async def test_the_last_attempt_decides_between_unacknowledged_and_exhausted() -> None:
    """A read timeout followed by a 503 is exhausted; a 503 followed by a read timeout is unacknowledged."""
    async with transport(Server(httpx.ReadTimeout("slow"), 503), config(retry_attempts=2)) as (t, _):
        assert (await t.send("traces", TRACES, b"x")).status is SendStatus.EXHAUSTED
    async with transport(Server(503, httpx.ReadTimeout("slow")), config(retry_attempts=2)) as (t, _):
        assert (await t.send("traces", TRACES, b"x")).status is SendStatus.UNACKNOWLEDGED
    async with transport(Server(httpx.ReadTimeout("slow")), config()) as (t, _):
        assert (await t.send("traces", TRACES, b"x", retry=False)).status is SendStatus.UNACKNOWLEDGED


@pytest.mark.asyncio
async def test_read_timeout_backs_off_harder_than_a_503() -> None:
    """After a read timeout the wait comes from the upper half of a doubled range; after a 503 from the full one."""
    waits: dict[str, float] = {}
    for name, first in (("timeout", httpx.ReadTimeout("slow")), ("503", 503)):
        server = Server(first, 200)
        cfg = config(retry_testing=False, retry_wait_initial=0.4, retry_wait_max=10.0)
        # A seeded rng whose first draw is small: full jitter would wait ~nothing, equal jitter at least half.
        async with transport(server, cfg, rng=random.Random(3)) as (t, _):
            started = time.monotonic()
            assert (await asyncio.wait_for(t.send("traces", TRACES, b"x"), WAIT)).ok
            waits[name] = time.monotonic() - started
    assert random.Random(3).uniform(0, 0.4) < 0.2  # the 503 control's wait, by construction
    assert waits["timeout"] >= 0.4  # upper half of the doubled cap 0.8: the behaviour is the wait
    assert waits["timeout"] > waits["503"]


# ------------------------------------------------------------------ hygiene: logs and plain http
def test_plain_http_with_a_key_to_a_remote_host_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """An API key bound for plain http:// on a non-loopback host logs one warning per host, without the key."""
    with caplog.at_level(logging.WARNING):
        AsyncTransport(config(api_url="http://judgment.example.internal:8080"), Metrics())
        AsyncTransport(config(api_url="http://judgment.example.internal:8080"), Metrics())
    warnings = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1
    assert "judgment.example.internal" in warnings[0].getMessage()
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    "options",
    [
        {"api_url": "http://127.0.0.1:8080"},
        {"api_url": "http://localhost:8080"},
        {"api_url": "http://[::1]:8080"},
        {"api_url": "https://remote.example.net"},
        {"api_url": "http://nokey.example.net", "api_key": ""},
    ],
    ids=["ipv4-loopback", "localhost", "ipv6-loopback", "https", "no-key"],
)
def test_no_plain_http_warning_for_loopback_https_or_no_key(
    caplog: pytest.LogCaptureFixture, options: dict[str, Any]
) -> None:
    """Loopback hosts, https and a key-less config send nothing secret over the network: no warning."""
    with caplog.at_level(logging.WARNING):
        AsyncTransport(config(**options), Metrics())
    assert not [r for r in caplog.records if "plain http" in r.getMessage()]


def test_plain_http_third_party_otlp_endpoint_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    """A plain-http third-party otlp_endpoint never gets the key (only Judgment's URLs do), so no warning."""
    with caplog.at_level(logging.WARNING):
        AsyncTransport(
            config(api_url="https://api.example.org", otlp_endpoint="http://collector.example.org/v1/traces"),
            Metrics(),
        )
    assert not [r for r in caplog.records if "plain http" in r.getMessage()]


@pytest.mark.parametrize("name", ["httpx", "httpcore", "httpcore.http11", "httpcore.connection", "httpcore.http2"])
def test_http_library_records_from_the_loop_thread_are_filtered(caplog: pytest.LogCaptureFixture, name: str) -> None:
    """httpx/httpcore records (httpcore's child loggers included) emitted on our loop thread never propagate."""
    from judgeval_async._config import LOOP_THREAD_NAME

    AsyncTransport(config(), Metrics())

    def emit() -> None:
        logging.getLogger(name).debug("from the loop %s", name)

    with caplog.at_level(logging.DEBUG):
        thread = threading.Thread(target=emit, name=LOOP_THREAD_NAME)
        thread.start()
        thread.join()
        logging.getLogger(name).debug("from the application %s", name)
    messages = [r.getMessage() for r in caplog.records if r.name == name]
    assert messages == [f"from the application {name}"]
