"""A lean HTTP/1.1 transport under the SDK's ``httpx.AsyncClient``: the request path without httpcore and anyio.

Why: a POST through httpx's default transport (httpcore's pool, anyio streams, h11) cost the loop thread ~1.2 ms of
CPU here, ~2 500 Python calls, against ~0.13 ms for the same request written on asyncio's own protocol; under the web
benchmark's load that was ~10 % of the loop thread's CPU, spent in the application's process under its GIL
(docs/performance.md, "A lean HTTP/1.1 transport"). With this transport a POST costs ~0.5 ms. The client stays
httpx's (its ``Request``/``Response`` models, headers, timeouts, exceptions); only the bytes on the connection are
ours, on the asyncio loop that owns the client.

Scope, on purpose: HTTP/1.1 over TCP or TLS, one request per connection at a time, keep-alive reuse per origin,
responses framed by Content-Length, chunked coding or end of connection, 1xx responses skipped. No proxies (the
caller keeps httpx's own transport when proxy variables are set), no HTTP/2, no Unix sockets, no streaming bodies
upward (our responses are small JSON). Timeouts follow httpx's per-phase ``timeout`` extension: connect (with the
TLS handshake), each write that waits for the socket, each read that waits for bytes. Errors are httpx's own
exception types, so the retry classification above this layer does not change.

A connection whose request did not finish cleanly (timeout, cancellation, protocol error) is closed, never pooled;
an idle connection the server closed is noticed from asyncio's callbacks (no syscall) and discarded at checkout. One
the server closes while our request is on its way (the keep-alive race) is retried once on a new connection, provided
no byte of an answer came back.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["Http11Transport", "proxy_configured"]

_MAX_HEAD = 64 * 1024  # a response's status line and headers; beyond it the peer is not an HTTP server we talk to
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_JOIN_MAX = 64 * 1024  # a body up to this size goes out in one write with its head


def proxy_configured() -> bool:
    """True when httpx would read a proxy from the environment: then its own transport (which speaks to proxies) is
    used instead of this one."""
    return any(os.environ.get(name) or os.environ.get(name.lower()) for name in _PROXY_VARS)


class _Timeout(Exception):
    """Raised inside a wait that ran out; mapped to the phase's httpx exception by the caller."""


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(_Timeout())


def _settle(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class _Connection(asyncio.Protocol):
    """One connection's bytes as asyncio hands them over; ``write``/``read_*`` suspend the one request using it."""

    __slots__ = ("answered", "buf", "closed", "drained", "origin", "transport", "used_at", "waiter", "writing_paused")

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.buf = bytearray()
        self.answered = False  # a byte arrived since the current request was written (reset at each checkout)
        self.closed = False  # EOF or connection lost: no more bytes will arrive
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.writing_paused = False
        self.transport: asyncio.Transport | None = None
        self.used_at = 0.0

    # -- asyncio's callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Paused whenever a byte waits in asyncio's buffer: resumed exactly when the kernel has taken the whole write,
        # which is what "the request body was sent" means to the caller (an unanswered request is then ambiguous).
        transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        self.buf += data
        _settle(self.waiter)

    def eof_received(self) -> bool:
        self.closed = True
        _settle(self.waiter)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        _settle(self.waiter)
        # A write still waiting is woken with ``writing_paused`` left set: its bytes never reached the kernel.
        _settle(self.drained)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _settle(self.drained)

    # -- the request's side
    def reusable(self, now: float, expiry: float) -> bool:
        t = self.transport
        return not self.closed and not self.buf and t is not None and not t.is_closing() and now - self.used_at < expiry

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _wait(self, attr: str, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        setattr(self, attr, fut)
        timer = loop.call_later(timeout, _expire, fut) if timeout is not None else None
        try:
            await fut
        finally:
            setattr(self, attr, None)
            if timer is not None:
                timer.cancel()

    async def write(self, data: bytes, timeout: float | None) -> None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed before the request was written")
        transport.write(data)
        if self.writing_paused:
            await self._wait("drained", timeout)
            if self.closed and self.writing_paused:
                raise ConnectionResetError("connection lost while writing the request")

    async def more(self, timeout: float | None) -> bool:
        """Wait for bytes beyond what is buffered; False at the end of the connection."""
        if self.closed:
            return False
        seen = len(self.buf)
        await self._wait("waiter", timeout)
        return len(self.buf) > seen or not self.closed

    async def read_line(self, timeout: float | None, limit: int) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > limit:
                raise _Malformed("response line too long")
            if not await self.more(timeout):
                raise _Disconnected()

    async def read_exactly(self, n: int, timeout: float | None) -> bytes:
        while len(self.buf) < n:
            if not await self.more(timeout):
                raise _Disconnected()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def read_to_end(self, timeout: float | None) -> bytes:
        while await self.more(timeout):
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data


class _Disconnected(Exception):
    """The peer ended the connection inside a response (or before one)."""


class _Malformed(Exception):
    """The response is not HTTP/1.1 as we read it."""


class _Stale(Exception):
    """A reused keep-alive connection ended before a byte of the answer arrived: the server had closed it."""


class Http11Transport(httpx.AsyncBaseTransport):
    """See the module docstring. Runs on one event loop: the SDK loop, which owns the client and this transport."""

    def __init__(self, ssl_context: ssl.SSLContext, *, keepalive_expiry: float, max_keepalive: int) -> None:
        self._ssl_context = ssl_context
        self._expiry = keepalive_expiry
        self._max_keepalive = max_keepalive
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        trace: Callable[[str, dict[str, Any]], Any] | None = request.extensions.get("trace")
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        conn = self._checkout(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, request, body, timeouts, trace, reused=True)
            except _Stale:
                # The server closed this kept-alive connection as we reused it (its idle timeout crossed our request
                # on the wire; uvicorn's is 5 s, gunicorn's 2 s) and not one byte of an answer came back: sent once
                # more on a new connection, as browsers and urllib3 do, instead of a failed attempt, a counted error
                # and a backoff. Our POSTs carry an Idempotency-Key, so a backend that did read the first can drop it.
                pass
        conn = await self._connect(origin, request, timeouts.get("connect"))
        return await self._exchange(conn, request, body, timeouts, trace, reused=False)

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, float | None],
        trace: Callable[[str, dict[str, Any]], Any] | None,
        *,
        reused: bool,
    ) -> httpx.Response:
        """One request and its response on ``conn``, which is pooled again only if the exchange ended cleanly.

        Raises ``_Stale`` (a reused connection that never answered: worth one new connection) or httpx's errors."""
        url = request.url
        done = False
        try:
            head = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
            for name, value in request.headers.raw:
                head += (name, b": ", value, b"\r\n")
            head.append(b"\r\n")
            try:
                if len(body) <= _JOIN_MAX:
                    await conn.write(b"".join(head) + body, timeouts.get("write"))
                else:  # two writes (two segments) rather than a copy of a large body
                    await conn.write(b"".join(head), timeouts.get("write"))
                    await conn.write(body, timeouts.get("write"))
            except _Timeout:
                raise httpx.WriteTimeout("timed out writing the request", request=request) from None
            except OSError as exc:
                if reused and not conn.answered:
                    raise _Stale() from None
                raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None
            if trace is not None:
                await trace("http11.send_request_body.complete", {"request": request})
            try:
                response, keep = await _read_response(conn, request, timeouts.get("read"))
            except _Timeout:
                raise httpx.ReadTimeout("timed out reading the response", request=request) from None
            except _Malformed as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from None
            except _Disconnected:
                if reused and not conn.answered:
                    raise _Stale() from None
                raise httpx.RemoteProtocolError(
                    "server disconnected without sending a complete response", request=request
                ) from None
            done = keep
            return response
        finally:
            if done and not self._closed:
                self._checkin(conn)
            else:
                conn.close()

    def _checkout(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable(now, self._expiry):
                conn.answered = False
                return conn
            conn.close()
        return None

    def _checkin(self, conn: _Connection) -> None:
        conn.used_at = time.monotonic()
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self._max_keepalive:
            conn.close()
            return
        idle.append(conn)

    async def _connect(
        self, origin: tuple[str, str, int], request: httpx.Request, timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        conn = _Connection(origin)
        loop = asyncio.get_running_loop()
        tls = scheme == "https"
        connecting = loop.create_connection(
            lambda: conn,
            host,
            port,
            ssl=self._ssl_context if tls else None,
            server_hostname=host if tls else None,
            # RFC 8305's delay: a host whose first address (often IPv6) drops SYNs does not use up the connect timeout
            # before its next address is tried (anyio, under httpcore, races them the same way).
            happy_eyeballs_delay=0.25,
        )
        try:
            await asyncio.wait_for(connecting, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            conn.close()
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        except BaseException:  # cancelled (a send's hard deadline, shutdown): a socket made meanwhile is not leaked
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


async def _read_response(
    conn: _Connection, request: httpx.Request, timeout: float | None
) -> tuple[httpx.Response, bool]:
    """The final response (1xx skipped) with its body read, and whether the connection may carry another."""
    while True:
        status_line = await conn.read_line(timeout, _MAX_HEAD)
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _Malformed(f"malformed status line {status_line[:64]!r}")
        status = int(parts[1])
        headers: list[tuple[bytes, bytes]] = []
        size = len(status_line)
        while True:
            line = await conn.read_line(timeout, _MAX_HEAD)
            if not line:
                break
            size += len(line)
            name, sep, value = line.partition(b":")
            if not sep or size > _MAX_HEAD or name != name.strip() or not name:
                raise _Malformed("malformed response header")
            headers.append((name, value.strip(b" \t")))
        if status >= 200 or status == 101:
            break  # 101 (an upgrade) was never asked for: returned as it is, the connection then closed
    fields = {name.lower(): value for name, value in headers}
    keep = parts[0] == b"HTTP/1.1" and b"close" not in fields.get(b"connection", b"").lower()
    if request.method == "HEAD" or status in (101, 204, 304):
        content = b""
        keep = keep and status != 101
    elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        content = await _read_chunked(conn, timeout)
    elif b"content-length" in fields:
        raw = fields[b"content-length"]
        if not raw.strip().isdigit():
            raise _Malformed("malformed Content-Length")
        content = await conn.read_exactly(int(raw), timeout)
    else:
        content = await conn.read_to_end(timeout)
        keep = False
    response = httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(content),
        request=request,
        extensions={"http_version": parts[0], "reason_phrase": parts[2] if len(parts) > 2 else b""},
    )
    return response, keep


async def _read_chunked(conn: _Connection, timeout: float | None) -> bytes:
    out = bytearray()
    while True:
        size_line = (await conn.read_line(timeout, _MAX_HEAD)).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _Malformed("malformed chunk size") from None
        if size == 0:
            while await conn.read_line(timeout, _MAX_HEAD):
                pass  # trailer fields, ignored
            return bytes(out)
        out += await conn.read_exactly(size, timeout)
        if await conn.read_exactly(2, timeout) != b"\r\n":
            raise _Malformed("malformed chunk")
