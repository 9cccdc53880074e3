"""The lean HTTP/1.1 transport (``_http11``) over real sockets on 127.0.0.1: framing, keep-alive, timeouts, errors
mapped to httpx's types, TLS, and the proxy fallback. Each test scripts a raw asyncio server, byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trustme

from judgeval_async import Config
from judgeval_async._http11 import Http11Transport, proxy_configured
from judgeval_async._metrics import Metrics
from judgeval_async._transport import AsyncTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Scripted:
    """A raw server: each accepted connection runs ``handler``; counts connections and keeps the requests read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""
        self.tasks: set[asyncio.Task[Any]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (Content-Length framed, as our transport always sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def replying(*responses: bytes, close_after: bool = False) -> Handler:
    """A handler answering successive requests on a connection with ``responses`` (the last one repeats)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = 0
        while True:
            await read_request(reader)
            writer.write(responses[min(i, len(responses) - 1)])
            await writer.drain()
            i += 1
            if close_after:
                return

    return handler


def recording(seen: list[bytes]) -> Handler:
    """A handler answering every request on a connection with ``OK``, each request read kept in ``seen``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(OK)
            await writer.drain()

    return handler


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Scripted]:
    scripted = Scripted(handler)
    server = await asyncio.start_server(scripted._serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scripted.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield scripted
    finally:
        for task in scripted.tasks:  # handlers still waiting (a server that never answers): Python 3.12's
            task.cancel()  # wait_closed() would wait for their connections
        server.close()
        await server.wait_closed()


def client(timeout: httpx.Timeout | float = 5.0, context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    transport = Http11Transport(context or ssl.create_default_context(), keepalive_expiry=5.0, max_keepalive=4)
    return httpx.AsyncClient(transport=transport, timeout=timeout)


def recorder() -> tuple[list[str], Callable[[str, dict[str, Any]], Awaitable[None]]]:
    """The events an httpx ``trace`` extension sees, and the callback that records them."""
    events: list[str] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        events.append(event)

    return events, trace


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection() -> None:
    """Three requests in a row travel on one connection, each answered in full."""
    async with serving(replying(OK)) as srv, client() as c:
        for _ in range(3):
            r = await c.post(srv.url + "/x", content=b"body")
            assert (r.status_code, r.content) == (200, b"ok")
    assert srv.connections == 1


@pytest.mark.asyncio
async def test_request_bytes_on_the_wire() -> None:
    """The request line, httpx's headers (Host, Content-Length, ours) and the body arrive as sent."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()

    async with serving(handler) as srv, client() as c:
        await c.post(srv.url + "/v1/traces?a=1", content=b"\x00payload", headers={"X-Thing": "v"})
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/traces?a=1 HTTP/1.1"
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert fields[b"host"] == srv.url.split("//")[1].encode()
    assert fields[b"content-length"] == b"8"
    assert fields[b"x-thing"] == b"v"
    assert body == b"\x00payload"


@pytest.mark.asyncio
async def test_chunked_response_with_extensions_and_trailers() -> None:
    """A chunked body (a chunk extension, a trailer) is joined; the connection stays usable for the next request."""
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with serving(replying(chunked, OK)) as srv, client() as c:
        r = await c.post(srv.url, content=b"")
        assert r.content == b"hello world"
        assert (await c.post(srv.url, content=b"")).content == b"ok"
    assert srv.connections == 1


@pytest.mark.asyncio
async def test_informational_responses_are_skipped() -> None:
    """A 100 Continue and a 103 ahead of the answer are read past; the final status is returned."""
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with serving(replying(reply)) as srv, client() as c:
        r = await c.post(srv.url, content=b"x")
    assert (r.status_code, r.content) == (200, b"ok")


@pytest.mark.asyncio
async def test_body_to_end_of_connection_is_not_reused() -> None:
    """No length and no chunking: the body runs to the end of the connection, and the next request connects anew."""
    async with serving(replying(b"HTTP/1.1 200 OK\r\n\r\nall of it", close_after=True)) as srv, client() as c:
        assert (await c.post(srv.url, content=b"")).content == b"all of it"
        assert (await c.post(srv.url, content=b"")).content == b"all of it"
    assert srv.connections == 2


@pytest.mark.asyncio
async def test_connection_close_header_is_honoured() -> None:
    """``Connection: close`` from the server: that connection is not pooled."""
    reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with serving(replying(reply)) as srv, client() as c:
        for _ in range(2):
            assert (await c.post(srv.url, content=b"")).status_code == 200
    assert srv.connections == 2


@pytest.mark.asyncio
async def test_idle_connection_closed_by_server_is_replaced() -> None:
    """The server closes a kept-alive connection while it is idle: the next request notices and connects anew."""
    async with serving(replying(OK, close_after=True)) as srv, client() as c:
        assert (await c.post(srv.url, content=b"")).status_code == 200
        for _ in range(1000):  # the close reaches our side as a callback, within a few loop turns
            await asyncio.sleep(0.01)
            if srv.connections == 1 and not _pooled(c):
                break
        assert (await c.post(srv.url, content=b"")).status_code == 200
    assert srv.connections == 2


def _pooled(c: httpx.AsyncClient) -> bool:
    transport = c._transport
    assert isinstance(transport, Http11Transport)
    return any(conn.reusable(0.0, float("inf")) for conns in transport._idle.values() for conn in conns)


@pytest.mark.asyncio
async def test_server_closing_without_an_answer_is_a_protocol_error() -> None:
    """The server reads the request and hangs up: httpx.RemoteProtocolError (a network error to the retry logic)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with serving(handler) as srv, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(srv.url, content=b"x")


@pytest.mark.asyncio
async def test_truncated_body_is_a_protocol_error() -> None:
    """Fewer body bytes than Content-Length promised, then EOF: an error, not a short body."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
    async with serving(replying(reply, close_after=True)) as srv, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(srv.url, content=b"x")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ],
)
async def test_malformed_responses_are_protocol_errors(reply: bytes) -> None:
    """A status line, header or length we cannot read: httpx.RemoteProtocolError, and the connection is dropped."""
    async with serving(replying(reply)) as srv, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(srv.url, content=b"x")
        assert not _pooled(c)


@pytest.mark.asyncio
async def test_read_timeout_after_the_body_was_sent() -> None:
    """No answer within the read timeout: httpx.ReadTimeout, after the trace saw the whole body leave (ambiguous)."""
    events, trace = recorder()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serving(handler) as srv, client(timeout=httpx.Timeout(10.0, read=0.3)) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post(srv.url, content=b"x" * 1000, extensions={"trace": trace})
        assert not _pooled(c)
    assert events == ["http11.send_request_body.complete"]


@pytest.mark.asyncio
async def test_write_timeout_when_the_server_does_not_read() -> None:
    """A body the server never reads, larger than the socket buffers: httpx.WriteTimeout; the body was not sent."""
    events, trace = recorder()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serving(handler) as srv, client(timeout=httpx.Timeout(10.0, write=0.3)) as c:
        with pytest.raises(httpx.WriteTimeout):
            await c.post(srv.url, content=b"x" * (64 * 1024 * 1024), extensions={"trace": trace})
    assert events == []


@pytest.mark.asyncio
async def test_refused_connection_is_a_connect_error() -> None:
    """Nothing listening: httpx.ConnectError."""
    async with serving(replying(OK)) as srv:
        url = srv.url
    async with client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.post(url, content=b"x")


@pytest.mark.asyncio
async def test_cancelled_request_does_not_pool_its_connection() -> None:
    """A request cancelled while waiting for its answer: its connection is closed, the next one connects anew."""
    answered = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if srv.connections == 1:
            answered.set()
            await asyncio.sleep(30)
        writer.write(OK)
        await writer.drain()

    async with serving(handler) as srv, client() as c:
        task = asyncio.ensure_future(c.post(srv.url, content=b"x"))
        await asyncio.wait_for(answered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await c.post(srv.url, content=b"x")).status_code == 200
    assert srv.connections == 2


@pytest.mark.asyncio
async def test_gzip_response_is_decoded_by_httpx() -> None:
    """A gzip-encoded answer reaches the caller decoded, as with httpx's own transport."""
    packed = gzip.compress(b'{"ok": true}')
    reply = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
    async with serving(replying(reply)) as srv, client() as c:
        assert (await c.post(srv.url, content=b"")).json() == {"ok": True}


@pytest.mark.asyncio
async def test_tls_round_trip_and_verification() -> None:
    """HTTPS to a server with a certificate from a test CA: trusted, it answers; untrusted, httpx.ConnectError."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with serving(replying(OK), tls=server_ctx) as srv:
        async with client(context=trusting) as c:
            for _ in range(2):
                assert (await c.post(srv.url, content=b"x")).content == b"ok"
        assert srv.connections == 1
        async with client(context=ssl.create_default_context()) as c:
            with pytest.raises(httpx.ConnectError):
                await c.post(srv.url, content=b"x")


def test_proxy_variables_keep_httpx_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a proxy in the environment the SDK keeps httpx's own transport (which speaks to proxies); else ours."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    transport = AsyncTransport(Config(api_url="http://127.0.0.1:9", api_key="k", organization_id="o"), Metrics())
    assert not proxy_configured()
    assert isinstance(transport.default_transport(), Http11Transport)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:3128")
    assert proxy_configured()
    assert transport.default_transport() is None


@pytest.mark.asyncio
async def test_large_body_arrives_whole() -> None:
    """A body past the single-write size (1 MB) arrives byte for byte, and the answer is read on the same connection."""
    seen: list[bytes] = []
    handler = recording(seen)

    payload = bytes(range(256)) * 4096
    async with serving(handler) as srv, client() as c:
        for _ in range(2):
            assert (await c.post(srv.url, content=payload)).content == b"ok"
    assert srv.connections == 1
    assert [r.partition(b"\r\n\r\n")[2] for r in seen] == [payload, payload]


@pytest.mark.asyncio
async def test_connection_reset_while_writing_is_a_write_error() -> None:
    """The server hangs up mid-upload: httpx.WriteError, and the trace never says the body was sent."""
    events, trace = recorder()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1024)  # then close with the rest unread: the kernel answers our writes with a reset

    async with serving(handler) as srv, client() as c:
        with pytest.raises(httpx.WriteError):
            await c.post(srv.url, content=b"x" * (64 * 1024 * 1024), extensions={"trace": trace})
    assert events == []


@pytest.mark.asyncio
async def test_direct_requests_carry_what_the_client_would_send() -> None:
    """AsyncTransport hands requests straight to our transport: the headers on the wire are the ones
    AsyncClient.post sent (its defaults, ours replacing them case-insensitively, nothing twice), same body."""
    seen: list[bytes] = []
    handler = recording(seen)

    def fields(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        pairs = sorted((name.lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines))
        return pairs, body

    async with serving(handler) as srv:
        transport = AsyncTransport(Config(api_url=srv.url, api_key="k", organization_id="o"), Metrics())
        try:
            sent = []
            for direct in (True, False):
                transport._ensure_client()
                assert transport._direct is not None
                if not direct:
                    transport._direct = None  # the AsyncClient.post path, as with a test seam's transport
                result = await transport.send(
                    "evals", srv.url + "/x", b'{"a":1}', headers={"User-Agent": "custom/1"}, idempotency_key="k1"
                )
                assert result.ok
                sent.append(fields(seen[-1]))
        finally:
            await transport.aclose()
    (direct_fields, direct_body), (client_fields, client_body) = sent
    assert direct_fields == client_fields and direct_body == client_body == b'{"a":1}'
    names = [name for name, _ in direct_fields]
    assert len(names) == len(set(names))
    assert ("user-agent", "custom/1") in direct_fields and ("idempotency-key", "k1") in direct_fields
    assert ("authorization", "Bearer k") in direct_fields


def closing_on_reuse(seen: list[bytes]) -> Handler:
    """A server whose first connection answers one request, then reads the next and hangs up without a byte (what the
    client sees when the server's keep-alive timeout closes the connection as the request is on its way); every
    later connection answers every request. Each request read is kept in ``seen``."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        for i in itertools.count():
            seen.append(await read_request(reader))
            if first and i == 1:
                return
            writer.write(OK)
            await writer.drain()

    return handler


async def connections_when_the_second_request_fails(handler: Handler) -> int:
    """Two requests in a row: the first answered, the second a RemoteProtocolError; the connections the server saw."""
    async with serving(handler) as srv, client() as c:
        assert (await c.post(srv.url, content=b"1")).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post(srv.url, content=b"2")
    return srv.connections


@pytest.mark.asyncio
async def test_a_reused_connection_closed_without_an_answer_is_retried_on_a_new_one() -> None:
    """The keep-alive race: the reused connection ends with no byte of an answer; the request goes once more on a
    new connection and succeeds, the caller sees no error."""
    seen: list[bytes] = []
    async with serving(closing_on_reuse(seen)) as srv, client() as c:
        assert (await c.post(srv.url + "/a", content=b"1")).status_code == 200
        r = await c.post(srv.url + "/b", content=b"2")
        assert (r.status_code, r.content) == (200, b"ok")
    assert srv.connections == 2
    assert [req.split(b" ", 2)[1] for req in seen] == [b"/a", b"/b", b"/b"]


@pytest.mark.asyncio
async def test_the_retry_on_a_new_connection_happens_once() -> None:
    """A fresh connection that also ends without an answer is an error (RemoteProtocolError), not a loop."""

    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        if accepted > 1:
            await read_request(reader)
            return  # every later connection: read and hang up
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the reuse: read and hang up

    assert await connections_when_the_second_request_fails(handler) == 2


@pytest.mark.asyncio
async def test_a_reused_connection_cut_inside_its_answer_is_not_retried() -> None:
    """Part of an answer arrived before the server hung up: the request may have been processed, so it is an error
    for the retry logic above (which counts it and keeps the payload), not a silent second send."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        await writer.drain()

    assert await connections_when_the_second_request_fails(handler) == 1


@pytest.mark.asyncio
async def test_the_keep_alive_race_costs_the_sdk_no_error_and_no_retry() -> None:
    """Through AsyncTransport: the stale connection's request is delivered in one attempt, with no network error
    or retry counted (no false alarm on an on-call dashboard) and one Idempotency-Key on both copies."""
    seen: list[bytes] = []
    async with serving(closing_on_reuse(seen)) as srv:
        metrics = Metrics()
        transport = AsyncTransport(Config(api_url=srv.url, api_key="k", organization_id="o"), metrics)
        try:
            for key in ("k1", "k2"):
                result = await transport.send("evals", srv.url + "/x", b"{}", idempotency_key=key)
                assert result.ok
        finally:
            await transport.aclose()
    assert metrics.api_errors.items() == [] and metrics.retries.items() == []
    assert [req.count(b"idempotency-key: k2") for req in seen] == [0, 1, 1]
