"""HTTP/1.1 over one asyncio stream pair, parsed by h11, with the low-level moves faults need.

h11 does the parsing (and keep-alive bookkeeping); this module owns the socket, so it can read a
body slowly, never answer, or abort with a TCP RST — things a regular HTTP framework hides.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from http import HTTPStatus

import h11

from judgeval_async.testing._faults import chunk_count
from judgeval_async.testing._protocol import Reply

_READ_SIZE = 65536
_SERVER_HEADER = "judgeval-local-server"


class BodyTooLarge(Exception):
    """The request body passed the server's `max_body_bytes`."""


@dataclass(frozen=True)
class Head:
    """A request line and headers; header names lowercase, repeats joined by ", "."""

    method: str
    target: str
    headers: dict[str, str]


class HttpConnection:
    """One server-side connection; all methods run on the server's loop.

    Peer errors surface as `ConnectionError` or `h11.RemoteProtocolError`; the caller drops the
    connection on either.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.SERVER)

    async def read_head(self) -> Head | None:
        """The next request's head, or None once the client has closed an idle connection."""
        event = await self._next_event(_READ_SIZE)
        if not isinstance(event, h11.Request):
            return None
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return Head(event.method.decode("ascii"), event.target.decode("latin-1"), headers)

    async def read_body(self, *, limit: int, chunk_delay: float = 0.0, chunk_size: int = 0) -> bytes:
        """The whole body of the current request.

        With `chunk_delay`, reads at most `chunk_size` bytes per socket read and sleeps
        `chunk_delay` per `chunk_size` bytes consumed, so pacing is the same whether the bytes
        were already buffered or not. Raises `BodyTooLarge` past `limit` bytes.
        """
        slow = chunk_delay > 0 and chunk_size > 0
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(chunk_size if slow else _READ_SIZE)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise BodyTooLarge(f"request body over {limit} bytes")
                parts.append(bytes(event.data))
                if slow:
                    await asyncio.sleep(chunk_delay * chunk_count(len(event.data), chunk_size))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise ConnectionError(f"connection ended inside a request body ({event!r})")

    async def send(self, reply: Reply, *, close: bool = False) -> bool:
        """Write `reply`; True if the connection can carry another request."""
        if self._h11.our_state is not h11.SEND_RESPONSE:
            return False
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("server", _SERVER_HEADER),
            *reply.headers,
        ]
        if close:
            headers.append(("connection", "close"))
        data = (
            self._h11.send(h11.Response(status_code=reply.status, headers=headers, reason=_reason(reply.status))) or b""
        )
        if reply.body:
            data += self._h11.send(h11.Data(data=reply.body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        self._writer.write(data)
        await self._writer.drain()
        # Read afresh: sending moved the state on (mypy still sees the narrowed SEND_RESPONSE).
        our_state: object = self._h11.our_state
        if our_state is h11.MUST_CLOSE or self._h11.their_state is not h11.DONE:
            return False
        self._h11.start_next_cycle()
        return True

    async def hold(self) -> None:
        """Black-hole: never answer; return only when the client closes (or the server stops)."""
        while await self._reader.read(_READ_SIZE):
            pass

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0) rather than a FIN, like a crashed peer or proxy."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    def abort(self) -> None:
        """Drop the connection at once, unflushed data included."""
        self._writer.transport.abort()

    async def close(self) -> None:
        """Flush and close; errors from a peer that is already gone are irrelevant here."""
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def _next_event(self, read_size: int) -> object:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            # b"" (EOF) is fed too: h11 turns it into ConnectionClosed or a RemoteProtocolError.
            self._h11.receive_data(await self._reader.read(read_size))


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
