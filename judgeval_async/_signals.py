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

import _thread
import atexit
import logging
import os
import signal
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
        self._handling = False
        self._deferred: set[int] = set()
        self._release_registered = False

    def enable(self, exit_flush: Callable[[], object]) -> None:
        """Arm the guard (idempotent); installs the handler now if called on the main thread, else at first use."""
        self._exit_flush = exit_flush
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
        if _inside_package(frame) and callable(_raw_getsignal(signum)):
            # The main thread was stopped inside our own code, maybe holding a lock the flush needs: post the
            # signal again without delivering it now (raise_signal would run this handler nested, right here),
            # so the handler runs at the interpreter's next check, until that code has returned. (Only possible
            # while a Python handler is installed; otherwise flushing now is the only chance left.)
            _thread.interrupt_main(signal.Signals(signum))
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


def _inside_package(frame: FrameType | None) -> bool:
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        # This module's own frames hold no lock (the release at exit lets a held signal in from here).
        if isinstance(name, str) and name.startswith(_PACKAGE) and not name.startswith(_TESTING) and name != __name__:
            return True
        frame = frame.f_back
    return False


signal_guard = SignalGuard()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=signal_guard.after_fork_in_child)
