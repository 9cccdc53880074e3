"""`LocalJudgmentServer`: a real HTTP/1.1 Judgment API double on its own loop thread.

Layout: `_http` moves bytes, `_protocol` answers the API, `_faults` decides what goes wrong,
`_records` remembers, `_control` exposes all that over HTTP, `_serving` runs the socket on the
loop. This module is the thread-safe facade: the thread with its start handshake and stop+join.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any

from judgeval_async.testing._control import Control, check_endpoint
from judgeval_async.testing._faults import (
    Fault,
    FaultKind,
    FaultTable,
    RatioMode,
    format_retry_after,
)
from judgeval_async.testing._protocol import Api, ApiSettings
from judgeval_async.testing._records import EvalRecord, Recorder, SpanRecord, TagCall
from judgeval_async.testing._serving import LoopServer

_THREAD_NAME = "judgeval-local-server"
_LOOP_CALL_TIMEOUT = 10.0


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(f"host: the local server binds loopback IPv4 only, got {host!r}")
    return host


class LocalJudgmentServer:
    """The Judgment API on 127.0.0.1, with fault injection and full recording.

    Like a real backend, it honours ``Idempotency-Key``: a request repeating the key of one it already accepted
    is acknowledged with the same answer but not recorded again, and counted in `duplicates` (``idempotency=False``
    records every delivery instead).

    `start()` returns once the socket listens; `stop()` closes everything and joins the thread; the
    object is a context manager doing both, and may be started again after a stop (same port).
    Every public method is thread-safe. The ones that touch the socket (`set_fault(kind="refuse")`,
    `clear_faults()`, `start`, `stop`) block briefly and refuse to run on the server's own thread.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "test-key",
        org_id: str = "test-org",
        require_project_id: bool = True,
        batch_tags_enabled: bool = True,
        seed: int | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
        headers_kept: int = 50,
        idempotency: bool = True,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port: expected 0-65535, got {port!r}")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: expected >= 1, got {max_body_bytes!r}")
        self._host = _loopback_host(host)
        self._port = port
        self._max_body_bytes = max_body_bytes
        self._settings = ApiSettings(api_key, org_id, require_project_id)
        self._faults = FaultTable(seed)
        self._recorder = Recorder(headers_kept)
        self._api = Api(self._settings, self._recorder, batch_tags=batch_tags_enabled, idempotency=idempotency)
        self._control = Control(self._faults, self._recorder, self._api)
        self._state_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._startup_error: BaseException | None = None
        self._stop_event: asyncio.Event | None = None
        self._engine: LoopServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalJudgmentServer:
        """Bind and serve; returns once the port accepts connections (raises if binding failed)."""
        with self._state_lock:
            if self._thread is not None:
                raise RuntimeError("LocalJudgmentServer is already running")
            ready = threading.Event()
            self._startup_error = None
            thread = threading.Thread(target=self._run, args=(ready,), name=_THREAD_NAME, daemon=True)
            thread.start()
            ready.wait()
            if self._startup_error is not None:
                thread.join()
                self._loop = None
                raise self._startup_error
            self._thread = thread
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection (black-holed ones too), then join the thread."""
        with self._state_lock:
            thread, loop, stop_event = self._thread, self._loop, self._stop_event
            if thread is None or loop is None or stop_event is None:
                return
            if threading.current_thread() is thread:
                raise RuntimeError("stop() called on the server's own thread would deadlock")
            loop.call_soon_threadsafe(stop_event.set)
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"local server thread still running after {timeout} s")
            self._thread = None
            self._loop = None
            self._engine = None

    def __enter__(self) -> LocalJudgmentServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LocalJudgmentServer {self._host}:{self._port} {state}>"

    @property
    def running(self) -> bool:
        """Whether the server thread is up."""
        return self._thread is not None

    @property
    def host(self) -> str:
        """The loopback address bound."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known once started when constructed with port 0)."""
        if self._port == 0:
            raise RuntimeError("port is assigned on start(); start the server first")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``; the client's api_url."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The key the server expects in ``Authorization: Bearer``."""
        return self._settings.api_key

    @property
    def org_id(self) -> str:
        """The organization the server expects in ``X-Organization-Id``."""
        return self._settings.org_id

    def auth_headers(self) -> dict[str, str]:
        """Headers a client needs on every call (Authorization, X-Organization-Id)."""
        return {"Authorization": f"Bearer {self.api_key}", "X-Organization-Id": self.org_id}

    # -- faults -------------------------------------------------------------------------------

    def set_fault(
        self,
        endpoint: str | None = None,
        *,
        kind: FaultKind,
        seconds: float = 0.0,
        range: tuple[float, float] | None = None,
        status: int = 503,
        retry_after: str | float | None = None,
        body: str | None = None,
        content_type: str = "application/json",
        ratio: float = 0.0,
        mode: RatioMode = "status",
        chunk_delay: float = 0.0,
        chunk_size: int = 1024,
        max_bytes: int = 0,
        recover_after_requests: int | None = None,
        recover_after_seconds: float | None = None,
    ) -> Fault:
        """Inject a fault on one endpoint (or all, with None); see `Fault` for each kind's fields.

        Replaces any fault of the same kind in that scope. Applies to requests whose head arrives
        after this returns; a ``refuse`` has closed the listener by the time it returns.
        """
        check_endpoint(endpoint)
        fault = Fault(
            kind=kind,
            seconds=seconds,
            range=None if range is None else (float(range[0]), float(range[1])),
            status=status,
            retry_after=format_retry_after(retry_after),
            body=body,
            content_type=content_type,
            ratio=ratio,
            mode=mode,
            chunk_delay=chunk_delay,
            chunk_size=chunk_size,
            max_bytes=max_bytes,
            recover_after_requests=recover_after_requests,
            recover_after_seconds=recover_after_seconds,
        )
        self._faults.set(endpoint, fault)
        if kind == "refuse":
            self._call_on_loop(LoopServer.sync_listener)
        return fault

    def clear_faults(self, endpoint: str | None = None) -> None:
        """Remove one endpoint's faults, or every fault (reopening a refused port) with None."""
        check_endpoint(endpoint)
        self._faults.clear(endpoint)
        if endpoint is None:
            self._call_on_loop(LoopServer.sync_listener)

    def active_faults(self) -> dict[str, list[Fault]]:
        """Faults in force, by scope (``"*"`` is global); recovered ones are gone."""
        return self._faults.snapshot()

    @property
    def batch_tags_enabled(self) -> bool:
        """Whether ``tags_batch`` is served (else 404)."""
        return self._api.batch_tags_enabled

    def set_batch_tags_enabled(self, enabled: bool) -> None:
        """Switch ``tags_batch`` on or off while running."""
        self._api.set_batch_tags_enabled(enabled)

    # -- records ------------------------------------------------------------------------------

    @property
    def spans(self) -> dict[tuple[str, str], SpanRecord]:
        """Distinct spans keyed by (trace_id, span_id), first-seen order."""
        return self._recorder.spans

    @property
    def raw_spans(self) -> list[SpanRecord]:
        """Every span received, redeliveries included."""
        return self._recorder.raw_spans

    @property
    def tags(self) -> dict[str, set[str]]:
        """trace_id -> tags, merged across ``tags`` and ``tags_batch``."""
        return self._recorder.tags

    @property
    def tag_calls(self) -> list[TagCall]:
        """Every accepted tag call."""
        return self._recorder.tag_calls

    @property
    def evals(self) -> list[EvalRecord]:
        """Distinct eval runs (identical redeliveries collapsed)."""
        return self._recorder.evals

    @property
    def span_evals(self) -> list[dict[str, Any]]:
        """Evaluations carried on distinct spans (``eval_transport="span"``), decoded from their attribute."""
        return self._recorder.span_evals

    @property
    def raw_evals(self) -> list[EvalRecord]:
        """Every eval run received."""
        return self._recorder.raw_evals

    def headers_seen(self, endpoint: str) -> list[dict[str, str]]:
        """Recent request headers on `endpoint` (lowercase names, API key redacted)."""
        return self._recorder.headers_seen(endpoint)

    def bytes_received(self, endpoint: str) -> tuple[int, int]:
        """(wire, decoded) body bytes of requests the API answered on `endpoint`."""
        return self._recorder.bytes_received(endpoint)

    def duplicates(self, endpoint: str | None = None) -> int:
        """Redeliveries of an already accepted ``Idempotency-Key``: acknowledged, not recorded (one endpoint or all)."""
        return self._recorder.duplicates(endpoint)

    def request_count(self, endpoint: str, status: int | str | None = None) -> int:
        """Finished requests on `endpoint`; `status` filters by code, "blackhole" or "reset"."""
        return self._recorder.request_count(endpoint, status)

    def stats(self) -> dict[str, Any]:
        """JSON-ready counts (the same document as ``GET /_control/stats``)."""
        return self._control.stats()

    def wait_for(
        self,
        *,
        spans: int | None = None,
        evals: int | None = None,
        tag_traces: int | None = None,
        requests: Mapping[str, int] | None = None,
        timeout: float,
    ) -> bool:
        """Block until the distinct spans/evals/tagged traces and per-endpoint requests reach the
        given counts; False on timeout. Woken by each record, never polls."""
        return self._recorder.wait_for(
            spans=spans, evals=evals, tag_traces=tag_traces, requests=requests, timeout=timeout
        )

    def reset_records(self) -> None:
        """Forget every record and count (faults stay)."""
        self._recorder.reset()

    # -- loop thread --------------------------------------------------------------------------

    def _call_on_loop(self, make: Callable[[LoopServer], Coroutine[Any, Any, None]]) -> None:
        with self._state_lock:
            loop, thread, engine = self._loop, self._thread, self._engine
            if loop is None or thread is None or engine is None:
                return  # start() applies the fault table as it finds it
            if threading.current_thread() is thread:
                raise RuntimeError("this call would deadlock on the server's own thread")
            asyncio.run_coroutine_threadsafe(make(engine), loop).result(_LOOP_CALL_TIMEOUT)

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            ready.set()  # in case _main died before its handshake

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        stop_event = self._stop_event = asyncio.Event()
        engine = LoopServer(
            host=self._host,
            port=self._port,
            faults=self._faults,
            recorder=self._recorder,
            api=self._api,
            control=self._control,
            max_body_bytes=self._max_body_bytes,
        )
        try:
            await engine.open()
        except Exception as exc:
            self._startup_error = exc
            await engine.close()
            ready.set()
            return
        self._engine = engine
        self._port = engine.port
        ready.set()
        try:
            await stop_event.wait()
        finally:
            await engine.close()
