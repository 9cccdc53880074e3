"""The SDK's own event loop, on its own daemon thread. The only module that creates threads.

Lifecycle (anyio ``start_blocking_portal`` shape): started lazily; the starter can wait on a handshake until the loop
really runs; stopped by ``stop(timeout)``: stop accepting, let every service drain until the deadline, cancel what is
left (services count it), close the loop, join the thread. All of it bounded by the one deadline.

Fork: ``os.register_at_fork`` quiesces every runtime before a fork (its state lock and its services' locks are
taken, each for a bounded time, so no lock is copied mid-update) and, in the child, drops the parent's thread, loop,
executor and clients without touching them (their sockets are shared with the parent) and lets each service discard
and count what it inherited (``fork_discard``). The next use in the child starts a fresh loop thread. The loop thread
never imports anything (the Tracer imports what it needs before the thread starts), so a fork can never leave the
child an import lock held by a thread that does not exist there, or a half-initialised module.

Exit: an ``atexit`` hook (:func:`run_exit_flush`) stops every live runtime within the longest ``exit_timeout``
(default 2 s). It never hangs the interpreter: the threads are daemons and every wait is bounded. Name resolution
works there because the loop's default executor is our own (:class:`_LoopExecutor`), not asyncio's, which the
interpreter has already shut down by the time atexit handlers run.
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
import queue
import signal
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, Protocol, TypeVar

from ._config import LOOP_THREAD_NAME
from ._errors import LoopThreadError, RuntimeClosedError
from ._metrics import Metrics

__all__ = [
    "BaseService",
    "LoopRuntime",
    "Service",
    "app_signals_blocked",
    "post_signal_later",
    "run_exit_flush",
    "set_exit_timeout",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

_LAG_TICK = 0.25  # seconds between loop-lag samples
_LEFTOVER_UNWIND = 0.1  # seconds the loop's leftover tasks get to unwind once cancelled at stop
# A blocking call hands its result back across threads: allow this much past the deadline for the hand-off itself,
# so a call never returns False when its work finished right at the deadline. Every blocking call returns by
# its deadline plus this (and scheduling noise).
_HANDOFF_GRACE = 0.02
_RESOLVER_THREADS = 4  # name resolutions at once (one per new connection); the first worker starts with the loop
# Before a fork each lock is waited for at most this long: a lock the forking thread itself holds (a fork from a
# signal handler or __del__) must delay the fork, never hang it. The child re-creates every lock anyway.
_FORK_LOCK_WAIT = 1.0
# Process-directed signals an application handles. CPython runs Python handlers only on the main thread; when the
# kernel hands such a signal to one of our threads instead (any thread that does not block it may take it, and a
# thread that just started or changed its mask often does), only a flag is set and a main thread blocked in
# time.sleep or a read is not woken: SIGTERM, SIGINT, ... would wait until that call returns. So our threads block
# them, and the kernel delivers them to a thread of the application. Faults (SIGSEGV, ...) and SIGPIPE, which target
# the thread that caused them, stay unblocked.
_APP_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGWINCH")
    if hasattr(signal, name)
)
# Reasons that are not losses of this process: the parent still holds (and delivers) what a forked child discarded.
_NOT_LOST = frozenset({"fork_discard"})


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


_Job = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _LoopExecutor(concurrent.futures.ThreadPoolExecutor):
    """The SDK loop's default executor, where asyncio runs ``getaddrinfo`` (name resolution) and any other
    ``run_in_executor(None, ...)``, on daemon threads this runtime owns.

    Why not asyncio's default ``ThreadPoolExecutor``: at interpreter exit ``threading._shutdown`` runs
    ``concurrent.futures``' exit hook *before* the atexit handlers. It sets a global flag that makes every
    ``ThreadPoolExecutor`` refuse work ("cannot schedule new futures after interpreter shutdown") and stops their
    workers. The exit flush runs in an atexit handler, so with asyncio's executor a hostname could not be resolved
    there and everything queued was dropped. This executor never reads that flag. Its first worker starts with the
    loop, so the exit flush needs no new thread (3.12.0 and 3.12.1 refuse to start threads in atexit handlers);
    if another cannot be started, jobs wait for the workers that exist.

    It subclasses ``ThreadPoolExecutor`` only because ``loop.set_default_executor`` accepts nothing else (3.11+);
    none of the base class's machinery (its queue, its threads, its exit hook) is used.
    """

    def __init__(self, name: str, max_workers: int = _RESOLVER_THREADS) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=name)
        self._sdk_name = name
        self._sdk_limit = max_workers
        self._sdk_jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._sdk_lock = threading.Lock()
        self._sdk_idle = threading.Semaphore(0)
        self._sdk_workers: list[threading.Thread] = []
        self._sdk_closed = False
        with self._sdk_lock:
            self._sdk_add_worker_locked()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._sdk_lock:
            if self._sdk_closed:
                raise RuntimeError("cannot schedule new futures after the SDK loop closed")
            self._sdk_jobs.put((fut, fn, args, kwargs))
            if not self._sdk_idle.acquire(blocking=False) and len(self._sdk_workers) < self._sdk_limit:
                self._sdk_add_worker_locked()
            if not self._sdk_workers:
                # No worker could ever be started: run the job here rather than never (it blocks the loop briefly).
                job = self._sdk_jobs.get_nowait()
                if job is not None:
                    _run_job(job)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._sdk_lock:
            if self._sdk_closed:
                return
            self._sdk_closed = True
            workers = list(self._sdk_workers)
        if cancel_futures:
            while True:
                try:
                    job = self._sdk_jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in workers:
            self._sdk_jobs.put(None)
        if wait:
            for worker in workers:
                if worker is not threading.current_thread():
                    worker.join()

    def _sdk_add_worker_locked(self) -> None:
        n = len(self._sdk_workers) + 1
        worker = threading.Thread(target=self._sdk_work, name=f"{self._sdk_name}-resolver-{n}", daemon=True)
        try:
            _start_thread(worker)
        except RuntimeError:  # "can't create new thread at interpreter shutdown" (3.12.0-3.12.1), or out of threads
            return
        self._sdk_workers.append(worker)

    def _sdk_work(self) -> None:
        jobs, idle = self._sdk_jobs, self._sdk_idle
        while True:
            idle.release()
            job = jobs.get()
            if job is None:
                return
            _run_job(job)
            del job  # drop references to the job's arguments and result while idle


def _start_thread(thread: threading.Thread) -> None:
    """Start one of our threads with the application's signals blocked in it (see _APP_SIGNALS)."""
    with app_signals_blocked():
        thread.start()


@contextlib.contextmanager
def app_signals_blocked() -> Iterator[None]:
    """Threads started inside this block never take the application's signals (see _APP_SIGNALS); also for threads
    a library starts for us (prometheus_client's metrics server).

    A new thread inherits its mask from the starting thread at creation, so they are blocked here, around the
    start: blocking them in the new thread itself would leave the window in which it takes them. Only what was
    added is unblocked afterwards. (If the SIGTERM guard's handler ran in between and held the signal, the guard
    blocks it again at the next span end.)
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows: no per-thread masks
        yield
        return
    added = _APP_SIGNALS - signal.pthread_sigmask(signal.SIG_BLOCK, _APP_SIGNALS)
    try:
        yield
    finally:
        if added:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, added)


def _run_job(job: _Job) -> None:
    fut, fn, args, kwargs = job
    if not fut.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # handed to the waiting coroutine, as ThreadPoolExecutor does
        fut.set_exception(exc)
    else:
        fut.set_result(result)


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
        # Never wait for this lock: a signal handler or __del__ that traces may interrupt this very thread while it
        # holds it (re-entrance); whoever holds it is starting the loop, so "starting" is the right answer.
        if state is _State.NEW and self._state_lock.acquire(blocking=False):
            try:
                if self._state is _State.NEW:
                    self._state = _State.STARTING
                    self._ready.clear()
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    _start_thread(self._thread)
            finally:
                self._state_lock.release()
        if wait is None:
            return True
        if self.in_loop_thread():
            return self._state is _State.RUNNING
        self._ready.wait(wait)
        return self._state is _State.RUNNING

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        # Our own default executor: name resolution must keep working in the exit flush (see _LoopExecutor).
        loop.set_default_executor(_LoopExecutor(self._name))
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException:  # the thread must not die silently
            logger.exception("judgeval_async loop thread crashed")
        finally:
            try:
                _cancel_leftovers(loop)
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
    def submit(self, coro: Coroutine[Any, Any, T], *, wait: float = 5.0) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any thread (starts the loop lazily).

        Blocks only while the loop is still starting, for at most ``wait`` seconds (the handshake).
        """
        if self.stopped or not self.ensure_started(wait=None):
            coro.close()
            raise RuntimeClosedError("the judgeval_async runtime is stopped")
        loop = self._loop
        if loop is None or not self._ready.is_set():
            # Still starting: wait for the handshake, within the caller's budget. Only blocking callers get here.
            self.ensure_started(wait=max(0.0, wait))
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
        deadline = time.monotonic() + max(0.0, timeout)
        fut = self.submit(coro, wait=timeout)
        try:
            return fut.result(max(0.0, deadline - time.monotonic()))
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

        Returns within ``timeout`` seconds (plus a few milliseconds of hand-off). Whatever is left undelivered is
        counted and summed up in one WARNING line (nothing is logged when everything was delivered).
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
        drained = False
        if state is not _State.NEW:
            # STARTING: the handshake gets part of the budget.
            self._ready.wait(max(0.0, deadline - time.monotonic()))
            loop = self._loop
            if loop is not None and not loop.is_closed():
                drained = self._stop_loop(loop, timeout, deadline)
        else:
            drained = True
        self._state = _State.STOPPED
        # Whatever the loop did not get to close in time is counted here, from this thread: nothing goes uncounted.
        for service in self._services:
            try:
                service.abandon()
            except Exception:  # pragma: no cover - accounting must not break shutdown
                logger.exception("judgeval_async could not count what shutdown abandoned")
        self._report_undelivered()
        return drained

    def _stop_loop(self, loop: asyncio.AbstractEventLoop, timeout: float, deadline: float) -> bool:
        drained = False
        # Draining gets the budget less a small reserve for cancelling and closing, so the whole stop keeps it.
        drain_deadline = deadline - min(0.25, max(0.0, timeout) * 0.25)
        try:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(drain_deadline, deadline), loop)
        except RuntimeError:  # the loop closed under us (its thread died): nothing to wait for
            return False
        try:
            drained = fut.result(max(0.0, deadline + _HANDOFF_GRACE - time.monotonic()))
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            fut.cancel()
        except Exception:
            logger.exception("judgeval_async shutdown failed")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # The thread is a daemon: if it has not finished by the deadline, it is left to the interpreter.
            thread.join(max(0.0, deadline + _HANDOFF_GRACE - time.monotonic()))
        return drained

    def _report_undelivered(self) -> None:
        """One WARNING line summing up what this runtime's pipelines never delivered, by signal and reason.

        Counts cover the tracer's whole life in this process (what the backend never received), except items a
        forked child discarded: its parent delivers those. Silent when nothing was lost.
        """
        m = self._metrics
        parts: list[str] = []
        for ledger in (m.spans, m.evaluations, m.tags):
            snap = ledger.snapshot()
            reasons = {r: n for r, n in snap.dropped.items() if n and r not in _NOT_LOST}
            if snap.queued:
                reasons["queued"] = snap.queued
            if snap.in_flight:
                reasons["in_flight"] = snap.in_flight
            if snap.spooled:
                reasons["spooled"] = snap.spooled  # on disk: the next process replays them
            if reasons:
                detail = " ".join(f"{r}={n}" for r, n in sorted(reasons.items()))
                parts.append(f"{ledger.name}={sum(reasons.values())} [{detail}]")
        if parts:
            logger.warning(
                "judgeval_async: shut down with items not delivered: %s (delivered: spans=%d evaluations=%d "
                "tags=%d); see the drop reasons in docs/reliability.md",
                " ".join(parts),
                m.spans.delivered,
                m.evaluations.delivered,
                m.tags.delivered,
            )

    async def _shutdown(self, drain_deadline: float, deadline: float) -> bool:
        drained = True
        drains = [asyncio.ensure_future(s.drain()) for s in self._services]
        if drains:
            done, pending = await asyncio.wait(drains, timeout=max(0.0, drain_deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            if pending:
                drained = False
                # A cancelled drain needs one loop turn to unwind, hence the floor; never past the deadline.
                await asyncio.wait(pending, timeout=max(0.001, deadline - time.monotonic()))
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("judgeval_async drain failed", exc_info=task.exception())
        closes = [asyncio.ensure_future(s.aclose()) for s in self._services]
        _, late = await asyncio.wait(closes, timeout=max(0.001, deadline - time.monotonic()))
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
        for lock in [self._state_lock, *(lk for service in self._services for lk in service.locks())]:
            # Bounded: a lock this very thread holds (a fork from a signal handler) must not hang the fork.
            if lock.acquire(timeout=_FORK_LOCK_WAIT):
                held.append(lock)
        return held

    def _after_fork_in_child(self) -> None:
        # The parent's loop thread (and its resolver threads) do not exist here. Do not close its loop or client:
        # their file descriptors and sockets are shared with the parent, and closing a TLS connection would write
        # to the parent's socket. Forget them; the next use starts a fresh loop thread.
        self._state_lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = None
        self._thread = None
        self._stop_requested = None
        self._loop_context = None
        # A tracer the parent had shut down (or was shutting down) stays shut down in the child.
        stopped = self._state in (_State.STOPPING, _State.STOPPED)
        self._state = _State.STOPPED if stopped else _State.NEW
        for service in self._services:
            try:
                service.after_fork_in_child()
                if stopped:
                    service.close_intake()  # later offers count ``shutdown``, as in the parent
            except Exception:  # pragma: no cover - must never break the child
                logger.exception("judgeval_async fork reset failed")


# Every runtime not yet garbage-collected: the fork and atexit hooks walk it.
_live_runtimes: weakref.WeakSet[LoopRuntime] = weakref.WeakSet()
_held_across_fork: list[threading.Lock] = []


def _before_fork() -> None:
    # Every runtime, whatever its state: producers take the ledger locks before the loop starts and after it stops.
    for rt in list(_live_runtimes):
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
_DEFAULT_EXIT_TIMEOUT = 2.0


def post_signal_later(signum: int, delay: float) -> bool:
    """Deliver ``signum`` to the main thread ``delay`` seconds from now, from a running SDK loop (``_signals`` uses it
    to come back once the main thread has left SDK code it interrupted). False when no loop runs (then nothing is
    queued on a loop either, so the caller may flush at once). Any thread; never raises."""
    target = threading.main_thread().ident
    if target is None or not hasattr(signal, "pthread_kill"):
        return False
    for rt in list(_live_runtimes):
        loop = rt.loop
        if rt.running and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.call_later, delay, signal.pthread_kill, target, signum)
            except RuntimeError:  # closed between the check and the call: try the next runtime
                continue
            return True
    return False


def set_exit_timeout(runtime: LoopRuntime, timeout: float) -> None:
    _exit_timeouts[runtime] = timeout


def run_exit_flush(timeout: float | None = None) -> bool:
    """The exit flush: stop every live runtime (deliver what is queued, count and log the rest) within one budget.

    The budget is ``timeout`` if given, else the longest ``exit_timeout`` among the live tracers (one budget for the
    whole exit, however many tracers exist). Runs at interpreter exit (atexit); a signal-driven shutdown path
    (SIGTERM handler, ASGI lifespan) may call it earlier, from any thread but the SDK loop's. Do not call it from
    inside a signal handler that may have interrupted the tracer itself: run it from the main flow or another
    thread. Idempotent: runtimes already stopped are skipped, so the atexit run after it does nothing. Never raises.
    Returns True when every runtime drained completely.
    """
    try:
        live = [rt for rt in list(_live_runtimes) if not rt.stopped and not rt.in_loop_thread()]
        if not live:
            return True
        budget = timeout if timeout is not None else max(_exit_timeouts.get(rt, _DEFAULT_EXIT_TIMEOUT) for rt in live)
        deadline = time.monotonic() + max(0.0, budget)
        drained = True
        for rt in live:
            try:
                drained = rt.stop(max(0.0, deadline - time.monotonic())) and drained
            except Exception:  # pragma: no cover - never raise during interpreter exit
                drained = False
                logger.debug("judgeval_async exit flush failed", exc_info=True)
        return drained
    except Exception:  # pragma: no cover - never raise during interpreter exit
        logger.debug("judgeval_async exit flush failed", exc_info=True)
        return False


atexit.register(run_exit_flush)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is still pending when the loop stops (a project resolve or a send still waiting on a dead backend)
    and give it one bounded turn to unwind, as ``asyncio.run`` does: a task left pending when the loop closes is
    logged by asyncio as "Task was destroyed but it is pending!" on the application's stderr."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.wait(tasks, timeout=_LEFTOVER_UNWIND))
