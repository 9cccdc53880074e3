"""Tracing from finalizers run by a garbage collection (judgeval_async._gcguard): on CPython 3.10/3.11 no context
variable is set in the context the collection interrupted, yet spans nest and the tracer's calls find their span."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import StatusCode

from judgeval_async import Tracer
from judgeval_async._gcguard import NEEDED, _on_gc, install, isolated, unsafe_to_set_context
from judgeval_async._provider import EngineTracerProvider, current_span
from judgeval_async._span import EngineSpan
from judgeval_async.testing import LocalJudgmentServer

needs_guard = pytest.mark.skipif(not NEEDED, reason="the guard exists for CPython 3.10/3.11 only")


class _Finalized:
    """Cyclic garbage: its ``__del__`` runs inside the collection that frees it, in the collecting thread."""

    def __init__(self, on_del: Callable[[], None]) -> None:
        self.me = self
        self.on_del = on_del

    def __del__(self) -> None:
        self.on_del()


def _collect_running(on_del: Callable[[], None]) -> None:
    """Run ``on_del`` from a finalizer inside a ``gc.collect()`` of this thread."""
    me = threading.get_ident()
    ran: list[bool] = []

    def in_finalizer() -> None:
        # Once, and only in this thread: an object freed by another thread's collection is not the case under test.
        if threading.get_ident() == me and not ran:
            ran.append(True)
            on_del()

    gc.collect()  # nothing else pending, so the one below runs exactly our finalizer
    # gc.collect() returns at once, collecting nothing, while another thread (a tracer's loop, the local server) is
    # collecting, and that thread may free our object: try again until a collection of ours has run it (the other
    # thread gets the GIL back between tries, at the switch interval).
    for _ in range(10_000):
        _Finalized(in_finalizer)
        gc.collect()
        if ran:
            return
    raise AssertionError("no collection of this thread ran the finalizer")


@pytest.fixture
def guard() -> Iterator[None]:
    install()
    yield


def test_install_registers_one_callback_where_needed(guard: None) -> None:
    """install() is idempotent, and registers a collector callback on CPython 3.10/3.11 only."""
    install()
    assert gc.callbacks.count(_on_gc) == (1 if NEEDED else 0)


@needs_guard
def test_only_the_collecting_thread_outside_isolation_is_unsafe(guard: None) -> None:
    """In a finalizer: unsafe in the collecting thread; safe in another thread meanwhile, inside isolated(), and
    after the collection."""
    seen: dict[str, bool] = {}

    def probe() -> None:
        seen["finalizer"] = unsafe_to_set_context()
        seen["isolated"] = isolated(unsafe_to_set_context)
        other = threading.Thread(target=lambda: seen.__setitem__("other_thread", unsafe_to_set_context()))
        other.start()
        other.join()

    _collect_running(probe)
    assert seen == {"finalizer": True, "isolated": False, "other_thread": False}
    assert not unsafe_to_set_context()


def test_spans_opened_by_a_finalizer_nest_and_find_their_span(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A finalizer's ``with tracer.span`` and ``observe`` nest under the interrupted span and under each other,
    set_attribute and tag reach the right span, and the interrupted context is as it was."""
    tracer = make_tracer()
    seen: dict[str, bool] = {}

    @tracer.observe
    def in_finalizer() -> int:
        with tracer.span("nested"):
            tracer.set_attribute("where", "nested")
        tracer.tag("from-finalizer")
        return 1

    def on_del() -> None:
        seen["guarded"] = unsafe_to_set_context()  # the path under test: on 3.10/3.11, the guard's
        with tracer.span("del-span"):
            tracer.set_attribute("where", "del-span")
            in_finalizer()

    with tracer.span("outer") as outer:
        _collect_running(on_del)
        assert trace.get_current_span() is outer
    assert tracer.force_flush(timeout=10.0)
    by_name = {r.name: r for r in local_server.spans.values()}
    assert set(by_name) == {"outer", "del-span", "in_finalizer", "nested"}
    assert by_name["del-span"].parent_span_id == by_name["outer"].span_id
    assert by_name["in_finalizer"].parent_span_id == by_name["del-span"].span_id
    assert by_name["nested"].parent_span_id == by_name["in_finalizer"].span_id
    assert by_name["del-span"].attributes["where"] == "del-span"
    assert by_name["nested"].attributes["where"] == "nested"
    assert local_server.tags == {by_name["outer"].trace_id: {"from-finalizer"}}
    assert tracer.get_health_metrics()["ledger_balanced"]
    assert seen == {"guarded": NEEDED}


def test_start_as_current_span_in_a_finalizer_records_and_ends(guard: None) -> None:
    """The OpenTelemetry API's start_as_current_span on our provider, in a finalizer: parented to the interrupted
    span, an escaping exception recorded with an ERROR status, ended; inside, our calls see it as current."""
    ended: list[EngineSpan] = []
    provider = EngineTracerProvider(resource=Resource.create({}), on_end=ended.append)
    api = provider.get_tracer("some.library")
    seen: dict[str, Any] = {}

    def on_del() -> None:
        try:
            seen["guarded"] = unsafe_to_set_context()
            with api.start_as_current_span("api-span") as span:
                seen["current"] = current_span() is span
                raise ValueError("boom")
        except ValueError:
            pass

    with api.start_as_current_span("outer") as outer:
        _collect_running(on_del)
        assert trace.get_current_span() is outer
    by_name = {s.name: s for s in ended}
    assert set(by_name) == {"outer", "api-span"}
    inner = by_name["api-span"]
    assert inner.parent is not None and inner.parent.span_id == outer.get_span_context().span_id
    assert inner.status.status_code is StatusCode.ERROR
    assert [e.name for e in inner.events] == ["exception"]
    assert inner.end_time is not None
    assert seen == {"current": True, "guarded": NEEDED}
