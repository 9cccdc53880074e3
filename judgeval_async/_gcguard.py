"""Knowing when this thread is inside a garbage collection, so tracing from a finalizer cannot crash CPython 3.10/3.11.

CPython before 3.12 runs the cyclic collector inside any allocation, including the ones ``ContextVar.set`` makes
while it builds the context's new HAMT. A ``__del__`` or weakref callback run by that collection, in the same thread,
that sets a context variable replaces (and frees) the HAMT the interrupted set is still copying from: a use-after-free
that segfaults the process (python/cpython#148891, open; dd-trace-py ships a native workaround, DataDog/dd-trace-py
#18599). Making a span current is a ``ContextVar.set``, so a finalizer that traces could crash its host; CI caught it
(tests/adversarial/test_reentrancy.py). CPython 3.12+ collects only between bytecodes: the guard is not installed.

While a collection runs in this thread, the tracer sets no context variable in the context the collection
interrupted: ``observe`` runs the call in a copy of that context (the copy holds its own reference to the HAMT, so
a set inside it cannot free the one being copied), and a ``with`` span is started but not made current: it is
*held* here instead, and the tracer's own calls (``tag``, ``set_attribute``, a nested ``observe`` or span) treat the
innermost held span as current. Code that reads the context itself (an instrumented library) sees the span the
collection interrupted.
"""

from __future__ import annotations

import contextvars
import gc
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["NEEDED", "STATE", "held_span", "hold", "install", "isolated", "release", "unsafe_to_set_context"]

T = TypeVar("T")

NEEDED = sys.implementation.name == "cpython" and sys.version_info < (3, 12)
_get_ident = threading.get_ident


class _State:
    """``thread``: ident of the thread running a collection, 0 when none (read on every span start: one attribute
    load decides). ``isolated``: how deep this collection's thread is inside ``isolated()`` calls. ``held``: the
    spans a ``with`` opened in this collection without making them current, innermost last. Only the collecting
    thread changes ``isolated`` and ``held``, and only during its collection; each collection starts them afresh."""

    __slots__ = ("held", "isolated", "thread")

    def __init__(self) -> None:
        self.thread = 0
        self.isolated = 0
        self.held: list[Any] = []


STATE = _State()


def _on_gc(phase: str, info: dict[str, int]) -> None:
    # "start" and "stop" run in the collecting thread; every finalizer and weakref callback of the collection runs
    # between them, in that thread. Collections never nest (the collector refuses to start while one runs).
    STATE.thread = _get_ident() if phase == "start" else 0
    STATE.isolated = 0
    STATE.held = []


def install() -> None:
    """Register the collector callback (idempotent; does nothing on CPython 3.12+ or other interpreters)."""
    if NEEDED and _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def unsafe_to_set_context() -> bool:
    """True in a finalizer or weakref callback run by a collection in this thread, outside ``isolated()``: a
    ``ContextVar.set`` here may free the HAMT an interrupted set is copying from."""
    thread = STATE.thread
    return thread != 0 and thread == _get_ident() and not STATE.isolated


def isolated(func: Callable[[], T]) -> T:
    """``func()`` in a copy of the current context, where setting context variables is safe."""
    STATE.isolated += 1
    try:
        return contextvars.copy_context().run(func)
    finally:
        STATE.isolated = max(0, STATE.isolated - 1)


def held_span() -> Any:
    """The innermost span held in this thread's collection (outside ``isolated()``), or None."""
    held = STATE.held
    if held and STATE.thread == _get_ident() and not STATE.isolated:
        return held[-1]
    return None


def hold(span: Any) -> None:
    """Treat ``span`` as current for the tracer's own calls until ``release``: it could not be made current."""
    STATE.held.append(span)


def release(span: Any) -> None:
    held = STATE.held
    if held and held[-1] is span:
        held.pop()
    elif span in held:  # ended out of order (a span ended by hand inside another): forget it all the same
        held.remove(span)
