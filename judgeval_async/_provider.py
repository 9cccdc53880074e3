"""The span engine's ``TracerProvider`` and ``Tracer`` (issue 12): OpenTelemetry API classes that make ``_span`` spans.

Used by default (isolated ``Tracer(...)`` and ``set_global=True``); ``tracer_provider=`` keeps the user's SDK
provider. What the SDK's provider does per span and this one keeps: a parent-based sampler (always-on, or a trace-id
ratio for root spans, read from ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` as the SDK does, or given), span
limits (an SDK ``SpanLimits``, which reads the ``OTEL_*_LIMIT`` variables), the resource and one instrumentation scope
per tracer, and the W3C trace flags the SDK sets (sampled, random-trace-id). A span the sampler drops is the API's
``NonRecordingSpan`` carrying its context, so the trace still propagates. What it does not keep: SDK span processors
(ended spans go to one callback, judgeval's pipeline).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util._decorator import _agnosticcontextmanager

from ._gcguard import STATE as _GC
from ._gcguard import held_span, hold, release, unsafe_to_set_context
from ._span import EngineSpan, Limits, SpanOwner, bounded, new_span_id, new_trace_id, valid_links

__all__ = ["EngineTracer", "EngineTracerProvider", "current_span", "detach", "sampler_ratio_from_env"]

logger = logging.getLogger(__name__)

_get_value = otel_context.get_value
_set_value = otel_context.set_value
_attach = otel_context.attach
_dict_set = dict.__setitem__
_INTERNAL = SpanKind.INTERNAL
_EMPTY_STATE = TraceState()
_LOW64 = (1 << 64) - 1
_SAMPLED = 0x01
_RANDOM = 0x02  # W3C "random trace id": our ids are random, and the SDK sets the flag too
_MAX_TRACERS = 256


# The functions below read the stock contextvars runtime context's ContextVar directly (OpenTelemetry's default;
# OTEL_PYTHON_CONTEXT may select another, then they go through the API). The runtime context is a module global of
# opentelemetry.context, read on every call: a test or a library may replace it. Both names are OpenTelemetry's
# private ones, so they are checked once here: if a release renames them, _STOCK_RUNTIME is a class no runtime
# context has and every call takes the API's path (slower, never broken).


class _NoRuntime:
    """Matches no runtime context: disables the direct reads."""


def _stock_runtime() -> type:
    runtime = vars(otel_context).get("_RUNTIME_CONTEXT")
    probe = ContextVarsRuntimeContext()
    if runtime is not None and isinstance(getattr(probe, "_current_context", None), contextvars.ContextVar):
        return ContextVarsRuntimeContext
    return _NoRuntime


_STOCK_RUNTIME = _stock_runtime()
_context_globals = vars(otel_context)


def current_span() -> trace.Span | None:
    """``trace.get_current_span()``'s span, or None when there is none: the context's own dict read directly
    (``get_current_span`` costs three Python calls and an ABC ``isinstance`` against a virtual subclass). Inside a
    collection on CPython 3.10/3.11, a span a ``with`` could not make current comes first (see _gcguard)."""
    if _GC.held:
        held = held_span()
        if held is not None:
            return held  # type: ignore[no-any-return]
    runtime = _context_globals.get("_RUNTIME_CONTEXT")
    if type(runtime) is _STOCK_RUNTIME:
        span = runtime._current_context.get().get(_SPAN_KEY)  # type: ignore[attr-defined]
    else:
        span = _get_value(_SPAN_KEY)
    if type(span) is EngineSpan:
        return span  # a virtual subclass of trace.Span (see _span)
    return span if isinstance(span, trace.Span) else None


def detach(token: Any) -> None:
    """``otel_context.detach``, with the stock runtime context's reset called directly; a token the runtime context
    refuses (made in another context) goes through ``otel_context.detach``, which logs it as it always did."""
    runtime = _context_globals.get("_RUNTIME_CONTEXT")
    if type(runtime) is _STOCK_RUNTIME:
        try:
            runtime._current_context.reset(token)  # type: ignore[attr-defined]
            return
        except Exception:
            pass
    otel_context.detach(token)


def sampler_ratio_from_env() -> tuple[float, bool]:
    """(ratio for root spans, parent-based) from ``OTEL_TRACES_SAMPLER``[_ARG], as the SDK reads them."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    parent_based = name.startswith("parentbased_") or name not in ("always_on", "always_off", "traceidratio")
    if name in ("always_off", "parentbased_always_off"):
        return 0.0, parent_based
    if name in ("traceidratio", "parentbased_traceidratio"):
        try:
            rate = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            rate = 1.0
        return (rate if 0.0 <= rate <= 1.0 else 1.0), parent_based
    return 1.0, parent_based


@contextlib.contextmanager
def _not_current(
    span: trace.Span, end_on_exit: bool, record_exception: bool, set_status_on_exception: bool
) -> Iterator[trace.Span]:
    """``trace.use_span`` without making ``span`` current (it is held for the tracer's own calls instead): the same
    exception recording, status and end."""
    hold(span)
    try:
        yield span
    except Exception as exc:  # use_span records Exception subclasses only (GeneratorExit is not an error)
        if span.is_recording():
            if record_exception:
                span.record_exception(exc)
            if set_status_on_exception:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        release(span)
        if end_on_exit:
            span.end()


class EngineTracer(trace.Tracer):
    """Starts ``EngineSpan`` records (or ``NonRecordingSpan`` when sampled out). Any thread."""

    def __init__(self, owner: SpanOwner, bound: int | None, parent_based: bool) -> None:
        self._owner = owner
        self._bound = bound  # None: every root span is sampled
        self._parent_based = parent_based

    def _make(
        self,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attrs: dict[str, Any],
        dropped: int,
        start_time: int | None,
    ) -> trace.Span:
        parent = context.get(_SPAN_KEY) if context is not None else _get_value(_SPAN_KEY)
        pctx: SpanContext | None = None
        if type(parent) is EngineSpan:
            # Ours: read the fields, no SpanContext built. A recording EngineSpan is always sampled.
            trace_id, parent_id, pflags, state, remote = (
                parent._trace_id,
                parent._span_id,
                parent._flags,
                parent._state,
                False,
            )
        elif parent is not None and isinstance(parent, trace.Span):
            pctx = parent.get_span_context()
            if pctx is not None and pctx.is_valid:
                trace_id, parent_id, pflags, remote = pctx.trace_id, pctx.span_id, pctx.trace_flags, pctx.is_remote
                state = pctx.trace_state or None
            else:
                pctx = None
                parent_id = 0
        else:
            parent_id = 0
        bound = self._bound
        if not parent_id:
            trace_id, state, remote = new_trace_id(), None, False
            sampled = bound is None or (trace_id & _LOW64) < bound
            flags = (_SAMPLED | _RANDOM) if sampled else _RANDOM
        else:
            if self._parent_based:
                sampled = bool(pflags & _SAMPLED)
            else:
                sampled = bound is None or (trace_id & _LOW64) < bound
            flags = (_SAMPLED if sampled else 0) | (pflags & _RANDOM)
        span_id = new_span_id()
        if not sampled:
            return NonRecordingSpan(
                SpanContext(trace_id, span_id, False, TraceFlags(flags), state if state is not None else _EMPTY_STATE)
            )
        return EngineSpan(
            self._owner,
            name,
            trace_id,
            span_id,
            flags,
            state,
            parent_id,
            remote,
            pctx,
            kind,
            attrs,
            dropped,
            start_time if start_time is not None else time_ns(),
        )

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        limits = self._owner.limits
        attrs, dropped = bounded(attributes, limits.span_attributes, limits.span_value_len)
        span = self._make(name, context, kind, attrs, dropped, start_time)
        if type(span) is EngineSpan:
            if links:
                for link in valid_links(links):
                    span._append_link(link.context, link.attributes)
            if not record_exception:
                span._x().record_exception = False
            if not set_status_on_exception:
                span._x().set_status_on_exception = False
        return span

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        if _GC.thread and unsafe_to_set_context():
            # A finalizer run by a collection in this thread (CPython 3.10/3.11): making the span current is a
            # ContextVar.set that can crash the interpreter (_gcguard). The span is started and ended, not current.
            with _not_current(span, end_on_exit, record_exception, set_status_on_exception) as current:
                yield current
            return
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current

    def start_current(self, name: str, attributes: dict[str, Any]) -> tuple[trace.Span, object]:
        """``observe``'s fast path: start a span as a child of the current one, make it current; (span, token).

        ``attributes`` is adopted, not copied: the caller built it for this span, with clean string keys and values.
        """
        limits = self._owner.limits
        maxlen = limits.span_attributes
        if limits.span_value_len is not None or (maxlen is not None and len(attributes) > maxlen):
            attributes, dropped = bounded(attributes, maxlen, limits.span_value_len)
        else:
            dropped = 0
        runtime = _context_globals.get("_RUNTIME_CONTEXT")
        if type(runtime) is not _STOCK_RUNTIME:
            span = self._make(name, None, _INTERNAL, attributes, dropped, None)
            return span, _attach(_set_value(_SPAN_KEY, span))
        # The stock contextvars runtime context: what get_value, set_value and attach do, without their calls.
        var = runtime._current_context  # type: ignore[attr-defined]
        current = var.get()
        span = self._make(name, current, _INTERNAL, attributes, dropped, None)
        context = Context(current)  # one copy; Context's own __setitem__ refuses (it is immutable once shared)
        _dict_set(context, _SPAN_KEY, span)
        return span, var.set(context)


class EngineTracerProvider(trace.TracerProvider):
    """judgeval_async's own provider. ``on_end`` receives every ended recording span (it must never raise)."""

    def __init__(
        self,
        *,
        resource: Any,
        on_end: Callable[[EngineSpan], None],
        span_limits: SpanLimits | None = None,
        sampler_ratio: float | None = None,
        flush: Callable[[float], bool] | None = None,
        shutdown: Callable[[], object] | None = None,
    ) -> None:
        self.resource = resource
        self._on_end = on_end
        self._limits = Limits(span_limits if span_limits is not None else SpanLimits())
        if sampler_ratio is None:
            ratio, self._parent_based = sampler_ratio_from_env()
        else:
            if not 0.0 <= sampler_ratio <= 1.0:
                raise ValueError(f"sampler_ratio must be within [0, 1], got {sampler_ratio!r}")
            ratio, self._parent_based = sampler_ratio, True
        bound = round(ratio * (_LOW64 + 1))
        self._bound: int | None = None if bound > _LOW64 else bound
        self._flush = flush
        self._shutdown = shutdown
        self._tracers: dict[tuple[str, str | None, str | None], EngineTracer] = {}

    @property
    def sampler_ratio(self) -> float:
        return 1.0 if self._bound is None else self._bound / (_LOW64 + 1)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> EngineTracer:
        name = instrumenting_module_name
        if not name:
            logger.error("get_tracer called with missing module name.")
            name = ""
        key = (name, instrumenting_library_version, schema_url)
        if attributes is None:
            cached = self._tracers.get(key)
            if cached is not None:
                return cached
        scope = InstrumentationScope(name, instrumenting_library_version, schema_url, attributes)
        tracer = EngineTracer(
            SpanOwner(self.resource, scope, self._limits, self._on_end), self._bound, self._parent_based
        )
        if attributes is None and len(self._tracers) < _MAX_TRACERS:
            self._tracers[key] = tracer
        return tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._flush(timeout_millis / 1000.0) if self._flush is not None else True

    def shutdown(self) -> None:
        if self._shutdown is not None:
            self._shutdown()
