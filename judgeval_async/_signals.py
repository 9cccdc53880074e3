"""SIGTERM: deliver what the SDK holds before the signal ends the process, with no change to the application.

Why this exists: a process that dies by a signal's *default action* runs no ``atexit`` hook, so the exit flush never
runs. uvicorn (and so gunicorn's ``UvicornWorker``) ends a SIGTERM-triggered graceful shutdown by restoring the
handler it found at start-up (``SIG_DFL``) and re-raising the signal; gunicorn's worker resets SIGTERM to
``SIG_DFL``; a plain ``asyncio.run`` service usually never handles it. All of them died with the SDK's last
``schedule_delay`` window in memory.

The guard installs one handler for SIGTERM, a :class:`_Chain` that remembers the handler it replaced, and acts on a
signal according to that previous handler:

* ``SIG_DFL`` (the signal would kill the process now): run the exit flush (the ``atexit`` hook's own function,
  bounded by ``exit_timeout``), put ``SIG_DFL`` back and re-raise the signal, so the process still dies by it
  (exit status 143). The handler does no I/O itself: the flush runs on the SDK loop thread; the handler only waits
  for it, with the deadline. That is allowed here because a Python signal handler is not a C signal handler: the
  interpreter runs it on the main thread between two bytecodes, where any Python code may run.
* a Python callable (a server's or the application's own handler): call it, so its graceful shutdown starts as
  before, and *block* the signal for the main thread until the interpreter exits. If that server later re-raises
  the signal after restoring ``SIG_DFL`` (uvicorn does, with ``signal.raise_signal``, which targets the calling
  thread), the signal stays pending instead of killing the process; the interpreter then exits normally, our exit
  hook flushes and unblocks, and the pending signal is delivered: the process dies by it, status 143. If nobody
  re-raises, nothing is pending and the process exits with its own status. The signal is deferred, never
  swallowed.
* ``SIG_IGN``: nothing (the application chose to ignore it).

A held signal is released early, flush first, if the process goes on running after the signal was re-raised (the
next span ended on the main thread notices), or if the handler we called re-raised it at once.

Servers replace handlers after the Tracer is built (gunicorn's worker resets SIGTERM after the fork; uvicorn and
asyncio's ``add_signal_handler`` install their own), and ``signal.signal`` only works on the main thread. So
:meth:`SignalGuard.check` runs on every span end: on the main thread, if the current handler is not ours, it wraps
it again (one ``signal.getsignal`` call when nothing changed).

Re-entrancy: the handler may interrupt the main thread while it is inside this package, possibly holding a lock the
flush needs. Then it re-posts the signal instead, so it runs again as soon as that code has returned.

Which thread takes the signal: a process-directed signal goes to any thread that does not block it, and CPython
only sets a flag when that is not the main thread; a main thread asleep in ``time.sleep`` or a read would then not
run the handler until that call returns. The SDK's threads are started with SIGTERM (and the other signals an
application handles) blocked (``_runtime._start_thread``), so the kernel hands it to an application thread,
normally the main one.

Limits (docs/deployment.md): SIGKILL and the OOM killer give no chance to run code; a server that re-raises the
signal at the whole process (``os.kill(os.getpid(), ...)``) or leaves with ``os._exit`` bypasses the deferral; a
process started during the deferral inherits the blocked signal.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

try:
    # The C function: signal.getsignal wraps it and converts through an Enum lookup that raises internally for
    # every callable handler, about 8 us; the check runs on every span end. typeshed has no stub for _signal.
    from _signal import getsignal as _raw_getsignal  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - interpreters without the C module
    _raw_getsignal = signal.getsignal

__all__ = ["SIGNALS", "SignalGuard", "signal_guard"]

logger = logging.getLogger(__name__)

# SIGINT is left alone: its Python default raises KeyboardInterrupt, which unwinds and runs the exit hook.
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM,)
_PACKAGE = __name__.rpartition(".")[0] + "."
_TESTING = _PACKAGE + "testing"
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) - {"__main__"}
_REPOST_DELAY = (
    0.02  # seconds: the SDK's critical sections last microseconds; a blocking call re-posts until it returns
)


class _Chain:
    """The handler we install: calls the guard with the handler it replaced."""

    __slots__ = ("guard", "previous")

    def __init__(self, guard: SignalGuard, previous: Any) -> None:
        self.guard = guard
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.guard.handle(self.previous, signum, frame)

    def __repr__(self) -> str:
        return f"<judgeval_async SIGTERM handler, chaining {self.previous!r}>"


class SignalGuard:
    """One per process: the exit flush to run before SIGTERM ends the process, and the handler that runs it."""

    def __init__(self) -> None:
        self._exit_flush: Callable[[], object] | None = None
        self._repost_later: Callable[[int, float], bool] | None = None
        self._handling = False
        self._deferred: set[int] = set()
        self._release_registered = False

    def enable(self, exit_flush: Callable[[], object], repost: Callable[[int, float], bool] | None = None) -> None:
        """Arm the guard (idempotent); installs the handler now if called on the main thread, else at first use.

        ``repost(signum, delay)`` delivers the signal to the main thread again later (from the SDK loop); it is
        used when the signal interrupted SDK code."""
        self._exit_flush = exit_flush
        self._repost_later = repost
        self.check()

    def check(self) -> None:
        """Install (again) our handler if another one replaced it. Any thread; only the main thread can act.

        Costs one ``getsignal`` when our handler is in place (it runs on every span end).
        """
        if self._exit_flush is None:
            return
        if self._deferred and threading.current_thread() is threading.main_thread():
            # A server re-raised the held signal but the process goes on producing spans instead of exiting: it
            # meant to die, so do not hold the signal any longer than the exit flush takes.
            self._release_if_pending()
            if self._deferred:
                # Still held: block it again, in case the mask was restored under us (the handler ran while the
                # SDK was starting a thread with the signal blocked for a moment, see _runtime._start_thread).
                signal.pthread_sigmask(signal.SIG_BLOCK, self._deferred)
        for sig in SIGNALS:
            if isinstance(_raw_getsignal(sig), _Chain):
                continue  # ours: the usual case
            if threading.current_thread() is not threading.main_thread():
                return  # signal.signal only works there
            try:
                current = signal.getsignal(sig)
                if current is None:
                    continue  # a handler set outside Python, which we could not call: leave it alone
                signal.signal(sig, _Chain(self, current))
            except (ValueError, OSError):  # pragma: no cover - not the main interpreter, or an exotic platform
                return

    # ------------------------------------------------------------------ the handler
    def handle(self, previous: Any, signum: int, frame: FrameType | None) -> None:
        """What :class:`_Chain` runs on the main thread when the signal arrives."""
        if previous is signal.SIG_IGN:
            return
        if callable(previous):
            # Someone else shuts the process down gracefully; hold a re-raised signal until our exit hook ran.
            self._defer(signum)
            previous(signum, frame)
            # A handler that re-raised at once wants the process to die now: flush, then let the signal through.
            self._release_if_pending()
            return
        # SIG_DFL: the process dies as soon as we return. Flush first, then die by the same signal.
        if self._handling:
            return  # a second signal while we flush: the first one is re-raised when the flush is done
        if _interrupted_sdk_code(frame) and callable(_raw_getsignal(signum)) and self._repost(signum, _REPOST_DELAY):
            # The main thread was stopped inside our own code, maybe holding a lock the flush needs. Return at once
            # (so that code finishes) and have the SDK loop send the signal to the main thread again a moment later.
            # Never re-post from here (interrupt_main/raise_signal): the handler would run again nested in itself,
            # at its own next bytecode, before the interrupted code could move on. Without a running SDK loop
            # nothing is queued there to flush, so the flush below runs now.
            return
        self._handling = True
        try:
            self._flush()
        finally:
            signal.signal(signum, signal.SIG_DFL)
            if signum in self._deferred and hasattr(signal, "pthread_sigmask"):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
            signal.raise_signal(signum)
            self._handling = False  # only reached if the default action did not end the process

    def _repost(self, signum: int, delay: float) -> bool:
        repost = self._repost_later
        if repost is None:
            return False
        try:
            return repost(signum, delay)
        except Exception:  # never keep the signal from its effect
            return False

    def _flush(self) -> None:
        exit_flush = self._exit_flush
        if exit_flush is None:
            return
        try:
            exit_flush()
        except Exception:  # never let a failed flush keep the signal from ending the process
            logger.debug("judgeval_async exit flush on signal failed", exc_info=True)

    def _defer(self, signum: int) -> None:
        if signum in self._deferred or not hasattr(signal, "pthread_sigmask"):
            return
        if not self._release_registered:
            # Registered now, after the runtime's own exit hook, so it runs before it (atexit is LIFO): flush,
            # then let the held signal through.
            atexit.register(self._release)
            self._release_registered = True
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        self._deferred.add(signum)

    def _release_if_pending(self) -> None:
        if self._deferred and not self._deferred.isdisjoint(signal.sigpending()):
            self._release()

    def _release(self) -> None:
        """At interpreter exit: flush, then unblock what we held, so a pending signal ends the process as before."""
        if not self._deferred:
            return
        try:
            self._flush()
        finally:
            held, self._deferred = self._deferred, set()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)

    def after_fork_in_child(self) -> None:
        # The child inherits the parent's signal mask: a child must never start with SIGTERM blocked.
        held, self._deferred = self._deferred, set()
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        self._handling = False


def _interrupted_sdk_code(frame: FrameType | None) -> bool:
    """Whether the signal interrupted the SDK's own code: the innermost frame that is not the standard library's
    (a lock's ``__enter__``, ``contextlib``, ``logging`` called by us) belongs to this package.

    Only the innermost code counts: an application function wrapped by ``observe`` has our wrapper further up its
    stack for its whole run, and a signal landing in the application's own code must flush at once."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not isinstance(name, str):
            return False
        if name.partition(".")[0] not in _STDLIB:
            # This module's own frames hold no lock (the release at exit lets a held signal in from here).
            return name.startswith(_PACKAGE) and not name.startswith(_TESTING) and name != __name__
        frame = frame.f_back
    return False


signal_guard = SignalGuard()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=signal_guard.after_fork_in_child)
