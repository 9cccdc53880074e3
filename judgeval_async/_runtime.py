"""The SDK's own event loop, on its own daemon thread. The only module that creates threads.

Lifecycle (anyio ``start_blocking_portal`` shape): started lazily; the starter can wait on a handshake until the loop
really runs; stopped by ``stop(timeout)``: stop accepting, let every service drain until the deadline, cancel what is
left (services count it), close the loop, join the thread. All of it bounded by the one deadline.

Fork: ``os.register_at_fork`` quiesces every runtime before a fork (its services' locks are taken, so no lock is
copied mid-update) and, in the child, drops the parent's thread, loop and clients without touching them (their
sockets are shared with the parent) and lets each service discard and count what it inherited (``fork_discard``).
The next use in the child starts a fresh loop thread.

Exit: an ``atexit`` hook stops every live runtime within its ``exit_timeout`` (default 2 s). It never hangs the
interpreter: the thread is a daemon and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import enum
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ._config import LOOP_THREAD_NAME
from ._errors import LoopThreadError, RuntimeClosedError
from ._metrics import Metrics

__all__ = ["BaseService", "LoopRuntime", "Service"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_LAG_TICK = 0.25  # seconds between loop-lag samples


class Service(Protocol):
    """A long-lived component that runs on the runtime's loop (span exporter, eval dispatcher, tag batcher)."""

    def locks(self) -> list[threading.Lock]:
        """Locks the producers take; held across fork so the child never inherits one mid-update."""
        ...

    async def start(self) -> None:
        """Called on the loop when it starts (and again in a forked child's fresh loop): create the tasks."""
        ...

    def close_intake(self) -> None:
        """Stop accepting items (offers count ``shutdown``). Any thread."""
        ...

    async def drain(self) -> None:
        """Deliver everything held and return; the runtime cancels this at the deadline."""
        ...

    async def aclose(self) -> None:
        """Cancel the service's tasks after ``drain`` (cut short or not); count and drop anything still held."""
        ...

    def after_fork_in_child(self) -> None:
        """Discard inherited items (counted ``fork_discard``) and forget the parent's loop objects."""
        ...

    def abandon(self) -> None:
        """Count everything still held as dropped (``shutdown_deadline``). Called from the stopping thread when
        the loop could not finish closing the service in time. Any thread; idempotent."""
        ...


class BaseService:
    """A :class:`Service` that does nothing at each step: subclass it and override only the steps you need."""

    def locks(self) -> list[threading.Lock]:
        return []

    async def start(self) -> None:
        return None

    def close_intake(self) -> None:
        return None

    async def drain(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def after_fork_in_child(self) -> None:
        return None

    def abandon(self) -> None:
        return None


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class LoopRuntime:
    """Owns the loop thread and the services that run on it."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        name: str = LOOP_THREAD_NAME,
        on_loop_start: Callable[[], None] | None = None,
    ) -> None:
        self._name = name
        self._on_loop_start = on_loop_start
        self._metrics = metrics if metrics is not None else Metrics()
        self._services: list[Service] = []
        self._state_lock = threading.Lock()
        self._state = _State.NEW
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None
        self._loop_context: contextvars.Context | None = None
        self.shutting_down = threading.Event()  # services read it to cut backoff sleeps short
        _live_runtimes.add(self)

    # ------------------------------------------------------------------ wiring
    def add_service(self, service: Service) -> None:
        """Register a service before first use; it starts with the loop."""
        self._services.append(service)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    @property
    def stopped(self) -> bool:
        return self._state in (_State.STOPPING, _State.STOPPED)

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    # ------------------------------------------------------------------ start
    def ensure_started(self, *, wait: float | None = None) -> bool:
        """Start the loop thread if needed. Never blocks unless ``wait`` is given (seconds, for the handshake).

        Returns True when the loop is running (or, with ``wait=None``, starting).
        """
        state = self._state
        if state is _State.RUNNING:
            return True
        if state in (_State.STOPPING, _State.STOPPED):
            return False
        if state is _State.NEW:
            with self._state_lock:
                if self._state is _State.NEW:
                    self._state = _State.STARTING
                    self._ready.clear()
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        if wait is None:
            return True
        if self.in_loop_thread():
            return self._state is _State.RUNNING
        self._ready.wait(wait)
        return self._state is _State.RUNNING

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException:  # the thread must not die silently
            logger.exception("judgeval_async loop thread crashed")
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:  # pragma: no cover - best effort on a dying loop
                pass
            loop.close()
            self._state = _State.STOPPED
            self._ready.set()

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        if self._on_loop_start is not None:
            # Runs before any service task exists, so every task inherits what it sets in the context.
            self._on_loop_start()
        self._loop_context = contextvars.copy_context()
        for service in self._services:
            try:
                await service.start()
            except Exception:
                logger.exception("judgeval_async service failed to start")
        lag_task = asyncio.get_running_loop().create_task(self._measure_lag())
        self._state = _State.RUNNING
        self._ready.set()  # handshake: the loop is really running and every service has its tasks
        await self._stop_requested.wait()
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task

    async def _measure_lag(self) -> None:
        # How late the loop runs a timer: the user-visible symptom of a busy or blocked SDK loop.
        m = self._metrics
        while True:
            before = time.monotonic()
            await asyncio.sleep(_LAG_TICK)
            lag = max(0.0, time.monotonic() - before - _LAG_TICK)
            m.loop_lag = lag
            m.loop_lag_max = max(lag, m.loop_lag_max * 0.9)  # decays so one old spike does not stick forever

    # ------------------------------------------------------------------ running work
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any thread; never blocks (starts the loop lazily)."""
        if self.stopped or not self.ensure_started(wait=None):
            coro.close()
            raise RuntimeClosedError("the judgeval_async runtime is stopped")
        loop = self._loop
        if loop is None or not self._ready.is_set():
            # Still starting: wait briefly for the handshake. Only blocking callers reach this path.
            self.ensure_started(wait=5.0)
            loop = self._loop
        if loop is None or self._state is not _State.RUNNING:
            coro.close()
            raise RuntimeClosedError("the judgeval_async runtime is not running")
        return asyncio.run_coroutine_threadsafe(self._in_loop_context(coro), loop)

    async def _in_loop_context(self, coro: Coroutine[Any, Any, T]) -> T:
        # run_coroutine_threadsafe would run ``coro`` in a copy of the *caller's* context (its current span, ...);
        # work submitted to the SDK runs in the loop's own context instead, like the services' tasks.
        ctx = self._loop_context
        if ctx is None:
            return await coro
        task: asyncio.Task[T] = ctx.run(asyncio.get_running_loop().create_task, coro)
        return await task

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for it (blocking; not on the loop thread).

        On timeout the coroutine is cancelled and ``TimeoutError`` is raised.
        """
        self.check_not_loop_thread("run")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"judgeval_async operation did not finish within {timeout:.3g}s") from None

    def check_not_loop_thread(self, what: str) -> None:
        if self.in_loop_thread():
            raise LoopThreadError(
                f"{what}() blocks until the SDK loop finishes work, and was called on that loop's own thread, "
                "where it would deadlock; call it from another thread, or await the async variant"
            )

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float) -> bool:
        """Stop accepting, drain until ``timeout``, cancel the rest, close and join. Returns True if fully drained.

        Safe to call twice, from any thread but the loop's own, before or without start.
        """
        self.check_not_loop_thread("shutdown")
        deadline = time.monotonic() + max(0.0, timeout)
        with self._state_lock:
            state = self._state
            if state in (_State.STOPPING, _State.STOPPED):
                return True
            self._state = _State.STOPPING
        self.shutting_down.set()
        for service in self._services:
            service.close_intake()
        if state is _State.NEW:
            self._state = _State.STOPPED
            return True
        # STARTING: give the handshake part of the budget.
        self._ready.wait(max(0.0, deadline - time.monotonic()))
        loop = self._loop
        if loop is None or loop.is_closed():
            self._state = _State.STOPPED
            return False
        drained = False
        # Draining gets the budget less a small reserve for cancelling and closing, so the whole stop keeps it.
        drain_deadline = deadline - min(0.25, max(0.0, timeout) * 0.25)
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(drain_deadline, deadline), loop)
        try:
            drained = fut.result(max(0.0, deadline - time.monotonic()) + 0.05)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            fut.cancel()
        except Exception:
            logger.exception("judgeval_async shutdown failed")
        # Whatever the loop did not get to close in time is counted here, from this thread: nothing goes uncounted.
        for service in self._services:
            try:
                service.abandon()
            except Exception:  # pragma: no cover - accounting must not break shutdown
                logger.exception("judgeval_async could not count what shutdown abandoned")
        thread = self._thread
        if thread is not None:
            thread.join(max(0.01, deadline - time.monotonic() + 0.05))
        return drained

    async def _shutdown(self, drain_deadline: float, deadline: float) -> bool:
        drained = True
        drains = [asyncio.ensure_future(s.drain()) for s in self._services]
        if drains:
            done, pending = await asyncio.wait(drains, timeout=max(0.0, drain_deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            if pending:
                drained = False
                await asyncio.wait(pending, timeout=max(0.01, deadline - time.monotonic()))
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("judgeval_async drain failed", exc_info=task.exception())
        closes = [asyncio.ensure_future(s.aclose()) for s in self._services]
        _, late = await asyncio.wait(closes, timeout=max(0.01, deadline - time.monotonic()))
        for task in late:
            task.cancel()
        for task in closes:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("judgeval_async service close failed", exc_info=task.exception())
        # Let the loop go: _main returns, then the thread closes the loop.
        assert self._stop_requested is not None
        self._stop_requested.set()
        return drained

    # ------------------------------------------------------------------ fork
    def _before_fork(self) -> list[threading.Lock]:
        held: list[threading.Lock] = []
        for service in self._services:
            for lock in service.locks():
                lock.acquire()
                held.append(lock)
        return held

    def _after_fork_in_child(self) -> None:
        # The parent's loop thread does not exist here. Do not close its loop or client: their file descriptors
        # and sockets are shared with the parent, and closing a TLS connection would write to the parent's socket.
        self._state_lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = None
        self._thread = None
        self._stop_requested = None
        if self._state is not _State.STOPPED:
            self._state = _State.NEW
            self.shutting_down = threading.Event()
        for service in self._services:
            try:
                service.after_fork_in_child()
            except Exception:  # pragma: no cover - must never break the child
                logger.exception("judgeval_async fork reset failed")


# Every runtime not yet garbage-collected: the fork and atexit hooks walk it.
_live_runtimes: weakref.WeakSet[LoopRuntime] = weakref.WeakSet()
_held_across_fork: list[threading.Lock] = []


def _before_fork() -> None:
    for rt in list(_live_runtimes):
        if rt.running:
            _held_across_fork.extend(rt._before_fork())


def _after_fork_in_parent() -> None:
    while _held_across_fork:
        _held_across_fork.pop().release()


def _after_fork_in_child() -> None:
    # The locks were taken by this very thread before fork; releasing them here leaves them usable.
    while _held_across_fork:
        _held_across_fork.pop().release()
    for rt in list(_live_runtimes):
        rt._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )

# Per-runtime exit budgets; the Tracer sets it from Config.exit_timeout.
_exit_timeouts: weakref.WeakKeyDictionary[LoopRuntime, float] = weakref.WeakKeyDictionary()


def set_exit_timeout(runtime: LoopRuntime, timeout: float) -> None:
    _exit_timeouts[runtime] = timeout


@atexit.register
def _stop_all_at_exit() -> None:
    # One budget for the whole exit, however many tracers exist: the longest exit_timeout among them.
    live = [rt for rt in list(_live_runtimes) if not rt.stopped and not rt.in_loop_thread()]
    if not live:
        return
    deadline = time.monotonic() + max(_exit_timeouts.get(rt, 2.0) for rt in live)
    for rt in live:
        try:
            rt.stop(max(0.0, deadline - time.monotonic()))
        except Exception:  # pragma: no cover - never raise during interpreter exit
            logger.debug("judgeval_async exit flush failed", exc_info=True)


def run_exit_flush() -> None:
    """Run the exit flush now: what the atexit hook runs. ``_signals`` calls it before a signal ends the process
    (a process killed by a signal's default action runs no atexit hook). Idempotent: stopped runtimes are skipped."""
    _stop_all_at_exit()
