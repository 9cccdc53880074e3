"""The loop side of the local server: the listening socket, its connections, the request pipeline.

Every method runs on the server's loop thread. Per request: read the head, consult the faults,
read the body (slowly if asked), delay, then black-hole / reset / answer with a fault status / let
the API or the control endpoint answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11

from judgeval_async.testing._control import Control
from judgeval_async.testing._faults import PASS, Decision, FaultTable
from judgeval_async.testing._http import BodyTooLarge, HttpConnection
from judgeval_async.testing._protocol import (
    CONTROL,
    ENDPOINTS,
    Api,
    Reply,
    Request,
    error_reply,
    route,
)
from judgeval_async.testing._records import Recorder

logger = logging.getLogger(__name__)


class LoopServer:
    """Listener plus connections for one run of the server; closed once, by `close()`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        faults: FaultTable,
        recorder: Recorder,
        api: Api,
        control: Control,
        max_body_bytes: int,
    ) -> None:
        self._host = host
        self._port = port
        self._faults = faults
        self._recorder = recorder
        self._api = api
        self._control = control
        self._max_body_bytes = max_body_bytes
        self._lock = asyncio.Lock()
        self._listener: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], HttpConnection] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._refuse_timer: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the one the OS chose for port 0)."""
        return self._port

    async def open(self) -> None:
        """Bind, then apply a refuse fault that was set before start."""
        await self._open_listener()
        await self.sync_listener()

    async def close(self) -> None:
        """Stop listening and end every connection, black-holed ones included."""
        self._closing = True
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
            self._refuse_timer = None
        self._close_listener()
        for connection in list(self._connections.values()):
            connection.abort()
        tasks = [*self._connections, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def sync_listener(self, spare: HttpConnection | None = None) -> None:
        """Close or reopen the listener to match the refuse fault, and arm its recovery timer.

        Closing also aborts open connections (all but `spare`), like a crashed server would.
        """
        async with self._lock:
            if self._closing:
                return
            refusing, remaining = self._faults.refuse_state()
            if refusing and self._listener is not None:
                self._close_listener()
                for connection in list(self._connections.values()):
                    if connection is not spare:
                        connection.abort()
            elif not refusing and self._listener is None:
                await self._open_listener()
            if self._refuse_timer is not None:
                self._refuse_timer.cancel()
                self._refuse_timer = None
            if refusing and remaining is not None:
                # A hair late, so the fault table agrees the fault has expired when this fires.
                delay = remaining + 0.005
                self._refuse_timer = asyncio.get_running_loop().call_later(delay, self._spawn_sync)

    async def _open_listener(self) -> None:
        self._listener = await asyncio.start_server(self._on_connect, self._host, self._port, reuse_address=True)
        self._port = self._listener.sockets[0].getsockname()[1]

    def _close_listener(self) -> None:
        # close() stops accepting at once; wait_closed() is skipped because on 3.12+ it also waits
        # for every open connection, and black-holed ones never end by themselves.
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _spawn_sync(self) -> None:
        task = asyncio.ensure_future(self.sync_listener())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # stream callbacks always run in a task
        connection = HttpConnection(reader, writer)
        self._connections[task] = connection
        self._recorder.count_connection()
        try:
            await self._serve(connection)
        except (ConnectionError, h11.RemoteProtocolError):
            pass  # the client went away or spoke garbage; nobody is left to answer
        except asyncio.CancelledError:
            # The server is stopping. Ending normally matters: on Python < 3.12, asyncio's stream callback calls
            # task.exception() on this task and logs a CancelledError traceback if the task ends cancelled.
            pass
        except Exception:
            logger.exception("local server: unexpected error on a connection")
        finally:
            self._connections.pop(task, None)
            await connection.close()

    async def _serve(self, connection: HttpConnection) -> None:
        while True:
            try:
                head = await connection.read_head()
            except h11.RemoteProtocolError:
                await connection.send(error_reply(400, "malformed HTTP request"), close=True)
                return
            if head is None:
                return
            rt = route(head.method, head.target)
            is_api = rt.endpoint in ENDPOINTS
            decision = self._faults.decide(rt.endpoint) if is_api else PASS
            if is_api:
                self._recorder.note_headers(rt.endpoint, head.headers)
            try:
                body = await connection.read_body(
                    limit=self._max_body_bytes,
                    chunk_delay=decision.chunk_delay,
                    chunk_size=decision.chunk_size,
                )
            except BodyTooLarge as exc:
                if rt.endpoint != CONTROL:
                    self._recorder.count(rt.endpoint, 413)
                await connection.send(error_reply(413, str(exc)), close=True)
                return
            if 0 < decision.max_body_bytes < len(body):
                # A receiver's size limit (body_limit fault): refused before anything else happens to the request.
                self._recorder.count(rt.endpoint, 413)
                limit = decision.max_body_bytes
                if not await connection.send(error_reply(413, f"request body over {limit} bytes")):
                    return
                continue
            if decision.delay > 0:
                await asyncio.sleep(decision.delay)
            if decision.action == "blackhole":
                self._recorder.count(rt.endpoint, "blackhole")
                await connection.hold()
                return
            if decision.action == "reset":
                self._recorder.count(rt.endpoint, "reset")
                connection.reset()
                return
            request = Request(head.method, head.target, head.headers, body)
            listener_changed = False
            if decision.action == "status":
                reply = _fault_reply(decision)
                self._recorder.count(rt.endpoint, reply.status)
            elif rt.endpoint == CONTROL:
                reply, listener_changed = self._control.handle(rt.params["action"], request)
            else:
                reply = self._api.handle(rt, request)
            if listener_changed:
                # Close the port before answering, so the caller sees the refusal as soon as it
                # has the answer; its own connection is spared and closed cleanly after the reply.
                await self.sync_listener(spare=connection)
            keep_alive = await connection.send(reply, close=listener_changed)
            if not keep_alive:
                return


def _fault_reply(decision: Decision) -> Reply:
    if decision.body is None:
        body = json.dumps({"detail": f"injected fault: HTTP {decision.status}"}).encode()
    else:
        body = decision.body.encode()
    headers = () if decision.retry_after is None else (("retry-after", decision.retry_after),)
    return Reply(decision.status, body, decision.content_type, headers)
