"""The transport's direct path (a POST handed straight to the client's transport, not through ``AsyncClient.post``):
it is taken for plain requests, and what the client would add (default headers, cookies, basic auth from the URL,
env proxies) is still there."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from judgeval_async import Config
from judgeval_async._metrics import Metrics
from judgeval_async._transport import AsyncTransport, SendStatus

BASE = "http://127.0.0.1:9"
TRACES = BASE + "/otel/v1/traces"


def config(**overrides: Any) -> Config:
    options: dict[str, Any] = {"retry_testing": True, "api_key": "sk-k", "organization_id": "org1", "api_url": BASE}
    options.update(overrides)
    return Config(**options)


class Recorder:
    """A MockTransport handler recording requests; replies 200, with ``Set-Cookie`` on the first when asked."""

    def __init__(self, set_cookie: str | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.set_cookie = set_cookie

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"Set-Cookie": self.set_cookie} if self.set_cookie and len(self.requests) == 1 else {}
        return httpx.Response(200, headers=headers, json={"n": len(self.requests)})


@asynccontextmanager
async def transport(handler: Any, cfg: Config | None = None, *, mock: bool = True) -> AsyncIterator[AsyncTransport]:
    t = AsyncTransport(
        cfg or config(),
        Metrics(),
        shutting_down=threading.Event(),
        transport=httpx.MockTransport(handler) if mock else None,
    )
    try:
        yield t
    finally:
        await t.aclose()


@pytest.fixture
def client_posts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts ``AsyncClient.post`` calls (the client's full path), passing them through."""
    calls: list[str] = []
    original = httpx.AsyncClient.post

    async def post(self: httpx.AsyncClient, url: Any, **kwargs: Any) -> httpx.Response:
        calls.append(str(url))
        return await original(self, url, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "post", post)
    return calls


@pytest.mark.asyncio
async def test_plain_send_skips_the_clients_per_request_path(client_posts: list[str]) -> None:
    """A send with nothing client-specific to apply goes straight to the transport: no ``AsyncClient.post``."""
    server = Recorder()
    async with transport(server) as t:
        for _ in range(3):
            result = await t.send("traces", TRACES, b"x", content_type="application/x-protobuf")
            assert result.status is SendStatus.DELIVERED
    assert client_posts == []
    assert len(server.requests) == 3


@pytest.mark.asyncio
async def test_direct_request_is_the_one_the_client_would_send(
    monkeypatch: pytest.MonkeyPatch, client_posts: list[str]
) -> None:
    """Method, URL, headers (names, case, order, values), body and timeouts on the direct path are exactly those of
    the same send through ``AsyncClient.post``."""
    server = Recorder()
    args: dict[str, Any] = {
        "content_type": "application/x-protobuf",
        "headers": {"x-project-id": "p", "Content-Encoding": "gzip"},
        "idempotency_key": "k1",
    }
    async with transport(server) as t:
        await t.send("traces", TRACES, b"body", **args)
        assert client_posts == []
        monkeypatch.setattr(t, "_route", lambda client, url: (httpx.URL(url), None))  # no transport: client's path
        await t.send("traces", TRACES, b"body", **args)
        assert client_posts == [TRACES]
    direct, via_client = server.requests
    assert direct.method == via_client.method == "POST"
    assert direct.url == via_client.url
    assert direct.headers.raw == via_client.headers.raw
    assert direct.read() == via_client.read() == b"body"
    assert direct.extensions["timeout"] == via_client.extensions["timeout"]


@pytest.mark.asyncio
async def test_cookies_set_by_the_server_are_sent_back(client_posts: list[str]) -> None:
    """A ``Set-Cookie`` answer is stored as the client would, and later requests carry the cookie."""
    server = Recorder(set_cookie="lb=node-7; Path=/")
    async with transport(server) as t:
        for _ in range(3):
            assert (await t.send("traces", TRACES, b"x")).ok
    assert "cookie" not in server.requests[0].headers
    assert server.requests[1].headers["cookie"] == "lb=node-7"
    assert server.requests[2].headers["cookie"] == "lb=node-7"
    assert len(client_posts) == 2  # after the first cookie, the client's own path (it owns the cookie jar)


@pytest.mark.asyncio
async def test_credentials_in_the_url_still_become_basic_auth() -> None:
    """``user:password@`` in the URL takes the client's path, which sends them as basic auth."""
    server = Recorder()
    async with transport(server) as t:
        assert (await t.send("traces", "http://user:pw@127.0.0.1:9/x", b"x", judgment=False)).ok
    assert server.requests[0].headers["authorization"] == httpx.BasicAuth("user", "pw")._auth_header


@pytest.mark.asyncio
async def test_a_header_overriding_a_client_default_wins() -> None:
    """A caller header with a client default's name (``User-Agent``) replaces the default, as on the client."""
    server = Recorder()
    async with transport(server) as t:
        assert (await t.send("traces", TRACES, b"x", headers={"user-agent": "mine/1"})).ok
    assert server.requests[0].headers.get_list("user-agent") == ["mine/1"]


@pytest.mark.asyncio
async def test_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTP_PROXY`` in the environment routes the direct request through the proxy (absolute-form target)."""
    lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
        )
        await reader.readexactly(length)
        lines.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    try:
        async with transport(None, config(api_url="http://judgment.invalid"), mock=False) as t:
            result = await t.send("traces", "http://judgment.invalid/otel/v1/traces", b"x", timeout=10.0)
    finally:
        server.close()
        await server.wait_closed()
    assert result.ok
    assert lines == [b"POST http://judgment.invalid/otel/v1/traces HTTP/1.1"]
