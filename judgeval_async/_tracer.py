"""The Tracer: the only place that wires config, metrics, runtime, transport and the three pipelines together.

Nothing in ``Tracer.__init__`` does I/O: the loop thread starts here but only waits for work (so the first traced
call does not pay for starting it), the project id is resolved on the loop, and the HTTP client is created there.
Spans come from the span engine (``_provider``/``_span``) unless ``tracer_provider=`` brings an SDK provider.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.version import __version__ as _otel_sdk_version

from ._config import Config, resource_from_env
from ._errors import LoopThreadError, RuntimeClosedError
from ._evals import EvalDispatcher, scorer_configs
from ._gcguard import install as gc_guard_install
from ._health import HealthSnapshot, take_snapshot
from ._metadata import SpanMetadataStore
from ._metrics import Metrics
from ._multiprocess import SnapshotWriter, metrics_dir
from ._observe import SpanContextManager, put_value, wrap
from ._project import ProjectResolver
from ._provider import EngineTracerProvider, current_span
from ._routes import eval_transport, judgment_api
from ._runtime import BaseService, LoopRuntime, post_signal_later, run_exit_flush, set_exit_timeout
from ._semconv import Semconv
from ._serialize import (
    RateLimitedLog,
    SerializeLimits,
    bounded_text,
    bounded_texts,
    json_text,
    safe_json,
    utc_now_iso,
)
from ._signals import signal_guard
from ._span import EngineSpan
from ._span_evals import SpanEvalCarrier, judges_text
from ._spans import JudgmentSpanProcessor, SpanExportService
from ._tags import TagBatcher
from ._transport import AsyncTransport

__all__ = ["Tracer"]

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
# Caps on what goes on the wire besides inputs and outputs (docs/reliability.md, "Caps and hostile input").
KEY_MAX = 256  # attribute keys; model names (scorer caps live in _evals)
TAG_MAX = 256  # characters per tag
NAME_MAX = 1024  # evaluation run names
_INT64 = (-(2**63), 2**63)
# A blocking call waits for the loop's answer this much past its deadline (the hand-off between threads), so a
# flush that finished right at the deadline is not reported as failed.
_HANDOFF_GRACE = 0.02
_SCORER_SETS_MAX = 256  # score-type strings whose configs async_evaluate keeps built
# (judgment scorer configs, custom scorer configs, judgeval's "judges" JSON text, the first judge's name)
_ScorerSet = tuple[list[dict[str, Any]], list[dict[str, Any]], str, str]
ATTR_TAGS = "tag.tags"  # OpenInference: the span's tags (Phoenix shows them; Langfuse reads them as trace tags)


def build_resource(config: Config, environ: Any = None) -> Resource:
    """The resource of a provider we create. Lowest to highest precedence: the SDK's ``telemetry.sdk.*``,
    ``service.name`` (and, with OpenInference, ``openinference.project.name``) = ``project_name``,
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``, then the
    ``resource_attributes`` keyword (code beats the environment, as in OpenTelemetry). ``judgment.project_name``
    (and ``judgment.project_id`` when configured) always carry the Judgment project, whatever ``service.name`` says.

    Built from plain attributes rather than ``Resource.create``: that runs OpenTelemetry's own environment detector,
    which warns on every bad entry on every call and does not percent-decode keys.
    """
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _otel_sdk_version,
        "service.name": config.project_name or "unknown_service",
    }
    if "openinference" in config.semconv and config.project_name:
        attributes["openinference.project.name"] = config.project_name  # Phoenix's project for these traces
    attributes.update(resource_from_env(environ))
    attributes.update(config.resource_attributes)
    if config.project_name:
        attributes["judgment.project_name"] = config.project_name
    if config.project_id:
        attributes["judgment.project_id"] = config.project_id
    return Resource(attributes)


# Modules the SDK loop thread would otherwise import lazily, on its first send. ``Tracer()`` imports them on the
# constructing thread, before the loop thread exists, so the loop thread never imports anything. A fork landing while
# the loop thread was importing left the child an import lock no thread there can release, or a half-initialised
# module ("partially initialized module 'httpcore' has no attribute 'AsyncConnectionPool'"): its tracer never sent.
# tests/adversarial/test_fork_storm.py checks that a first send of every kind imports nothing on an SDK thread.
_LOOP_IMPORTS = (
    "httpcore",  # httpx imports it only when the first client is built (with h11, h2 if installed, its backends)
    "httpcore._backends.anyio",
    "httpcore._backends.auto",
    "anyio._backends._asyncio",  # anyio imports its backend on first use
    "anyio._core._resources",
    "anyio._core._sockets",
    "anyio._core._streams",
    "anyio.abc",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "anyio.to_thread",
    "certifi",  # the CA bundle httpx loads when it builds the client's TLS context
    "encodings.idna",  # the codec for host names
)
_loop_imports_done = False


def _import_loop_dependencies() -> None:
    """Import everything the loop thread needs, on the calling thread. Idempotent; never raises."""
    global _loop_imports_done  # noqa: PLW0603 - a once-per-process flag
    if _loop_imports_done:
        return
    for name in _LOOP_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # an optional piece missing in this environment: the loop thread will not need it
            logger.debug("judgeval_async could not preload %s", name, exc_info=True)
    try:
        # httpcore tries ``import sniffio`` each time it sets up a lock (every connection). When sniffio is not
        # installed, every attempt takes that module's import lock and searches sys.path, on the loop thread.
        # Record the absence the standard way (None in sys.modules): the import then fails at once, lock-free,
        # exactly as it would anyway.
        if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
            sys.modules["sniffio"] = None  # type: ignore[assignment]
        elif "sniffio" not in sys.modules:
            importlib.import_module("sniffio")
    except Exception:  # pragma: no cover - an odd import system: the loop thread imports it as before
        logger.debug("judgeval_async could not preload sniffio", exc_info=True)
    _loop_imports_done = True


class _ForkReset(BaseService):
    """In a forked child: re-create the small locks an application thread or the loop thread may have held at the
    fork (histograms, counters, the span metadata store, rate-limited logs). A lock copied in the held state would
    hang the child's next span or send forever. Each guards a few counter updates: the worst a fork mid-update
    leaves is one half-recorded sample."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def after_fork_in_child(self) -> None:
        t = self._tracer
        t.metrics.after_fork_in_child()
        t._metadata.after_fork_in_child()
        t._degrade_log.after_fork_in_child()
        t._span_eval_log.after_fork_in_child()
        for service in (t._spans, t._evals, t._tags):
            log = getattr(service, "_log", None)
            if isinstance(log, RateLimitedLog):
                log.after_fork_in_child()


def _span_busy(span: Any) -> bool:
    """True while OpenTelemetry's own lock on ``span`` is held. It is a plain lock: held by the frame a signal handler
    or ``__del__`` interrupted on this very thread, calling into the span would deadlock for ever (re-entrancy,
    docs/reliability.md). Held by another thread it is a rare race on one span; either way the call is skipped."""
    locked = getattr(getattr(span, "_lock", None), "locked", None)
    return bool(locked()) if callable(locked) else False


class _TransportCloser(BaseService):
    """The last service: closes the HTTP client once every pipeline has drained or been cancelled."""

    def __init__(self, transport: AsyncTransport, resolver: ProjectResolver) -> None:
        self._transport = transport
        self._resolver = resolver

    async def aclose(self) -> None:
        await self._transport.aclose()

    def after_fork_in_child(self) -> None:
        self._transport.forget_after_fork()
        self._resolver.forget_after_fork()


class Tracer:
    """Traces an application without ever blocking it. See the README for the full API.

    Every keyword is a :class:`Config` field (``api_key``, ``organization_id``, ``api_url``, ``project_name``,
    sizes, timeouts, retry knobs); unset ones come from ``JUDGMENT_*`` environment variables, then defaults.
    Invalid values raise ``ValueError`` naming the field.

    ``tracer_provider``: add our processor to an existing SDK provider instead of using our span engine.
    ``set_global``: install our provider as OpenTelemetry's global one (default: isolated).
    ``http_transport``: an ``httpx`` transport to send through (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        project_name: str | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        set_global: bool = False,
        http_transport: httpx.AsyncBaseTransport | None = None,
        **config: Any,
    ) -> None:
        self.config = Config.from_env(project_name=project_name, **config)
        c = self.config
        self.semconv = Semconv(c.semconv)
        _import_loop_dependencies()  # before any loop thread exists: see _LOOP_IMPORTS
        gc_guard_install()  # CPython 3.10/3.11: tracing from a __del__ must not crash the interpreter (_gcguard)
        self.metrics = Metrics()
        self._runtime = LoopRuntime(self.metrics, on_loop_start=_suppress_instrumentation)
        set_exit_timeout(self._runtime, c.exit_timeout)
        self._limits = SerializeLimits(
            max_length=c.max_value_length,
            max_depth=c.max_depth,
            max_items=c.max_items,
            budget=c.serialize_budget,
        )
        self.input_limit = c.max_value_length  # (Recorder) observe's direct path for a call's input
        self._degrade_log = RateLimitedLog(logger)
        self._transport = AsyncTransport(
            c, self.metrics, shutting_down=self._runtime.shutting_down, transport=http_transport
        )
        self._resolver = ProjectResolver(c, self._transport)
        # No Judgment API to take tags and evaluations (spans to a third party, no api_key): those calls are
        # counted no-ops rather than requests retried against a backend that cannot take them.
        self._judgment_api = judgment_api(c)
        self._metadata = SpanMetadataStore(
            c.metadata_max_entries,
            c.metadata_ttl,
            on_evict=lambda reason, n: self.metrics.metadata_evictions.inc(reason, n=n),
        )
        self._spans = SpanExportService(c, self.metrics, self._transport, self._resolver)
        self._evals = EvalDispatcher(c, self.metrics, self._transport, self._resolver)
        span_evals = eval_transport(c) == "span"
        self._span_evals = SpanEvalCarrier(self.metrics.evaluations) if span_evals else None
        self._span_eval_log = RateLimitedLog(logger)
        self._scorer_sets: dict[str, _ScorerSet] = {}  # see _scorer_set
        self._tags = TagBatcher(c, self.metrics, self._transport, self._resolver)
        # First, so that in a forked child no later reset can meet a lock copied in the held state.
        self._runtime.add_service(_ForkReset(self))
        for service in (self._spans, self._evals, self._tags):
            self._runtime.add_service(service)
        self._runtime.add_service(_TransportCloser(self._transport, self._resolver))
        directory = metrics_dir()
        if directory is not None:
            # Multi-process mode (gunicorn workers): each process writes its counts for whichever one is scraped.
            self._runtime.add_service(SnapshotWriter(self, directory))
        self.processor = JudgmentSpanProcessor(
            self._spans,
            self._metadata,
            flush=lambda timeout: self.force_flush(timeout=timeout),
            # OpenTelemetry's shutdown() takes no deadline; ours is exit_timeout, the one budget for going away.
            shutdown=lambda: self.shutdown(timeout=c.exit_timeout),
            ensure_started=self._start_nowait,
        )
        self.provider: trace.TracerProvider
        if tracer_provider is None:
            # The span engine (issue 12): our own API-level provider; ended spans go straight to the pipeline.
            self.provider = EngineTracerProvider(
                resource=build_resource(c),
                on_end=self.processor.on_engine_end,
                flush=lambda timeout: self.force_flush(timeout=timeout),
                shutdown=lambda: self.shutdown(timeout=c.exit_timeout),
            )
        else:
            tracer_provider.add_span_processor(self.processor)
            self.provider = tracer_provider
        self._replaying = any(
            s.lane is not None and s.lane.has_leftovers() for s in (self._spans, self._evals, self._tags)
        )
        if self._replaying:
            # An earlier process left payloads in the spool: start now and replay them, not at the first span.
            self._start_nowait()
        if set_global:
            trace.set_tracer_provider(self.provider)
        self.otel_tracer = self.provider.get_tracer("judgeval_async")
        self._metrics_server: Any = None
        if c.install_signal_handlers:
            # SIGTERM must not end the process with our items in memory (uvicorn, gunicorn): see _signals.
            signal_guard.enable(run_exit_flush, post_signal_later)
        # Start the loop thread now (it does no I/O until there is something to send), so the first traced call
        # does not pay for a thread start. Its imports were done above, on this thread (see _LOOP_IMPORTS).
        self._runtime.ensure_started(wait=None)

    def __repr__(self) -> str:
        return f"Tracer(project_name={self.config.project_name!r}, api_url={self.config.api_url!r})"

    # ------------------------------------------------------------------ Recorder protocol (used by _observe)
    def serialize(self, value: Any) -> str:
        return safe_json(value, self._limits, self.degraded)

    def text(self, value: object, limit: int) -> str:
        return bounded_text(value, limit, self.degraded)

    def record_overhead(self, seconds: float) -> None:
        self.metrics.observe_overhead.observe(seconds)

    def metrics_enabled(self) -> bool:
        return self.config.metrics_enabled

    def degraded(self, reason: str) -> None:
        self.metrics.values_degraded.inc(reason)
        self._degrade_log.warning(
            reason,
            "judgeval_async: a traced value was degraded (%s); see values_degraded in health metrics",
            reason,
        )

    def _start_nowait(self) -> None:
        signal_guard.check()  # re-arm if a server replaced our SIGTERM handler (cheap; main thread only)
        if not self._runtime.running:
            self._runtime.ensure_started(wait=None)

    # ------------------------------------------------------------------ tracing API
    @overload
    def observe(self, func: F) -> F: ...
    @overload
    def observe(
        self,
        func: None = None,
        *,
        name: str | None = None,
        span_type: str = "span",
        record_input: bool = True,
        record_output: bool = True,
    ) -> Callable[[F], F]: ...

    def observe(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        span_type: str = "span",
        record_input: bool = True,
        record_output: bool = True,
    ) -> F | Callable[[F], F]:
        """Trace a sync/async function, generator or async generator. Bare ``@tracer.observe`` works too."""

        def decorate(f: F) -> F:
            try:
                wrapped = wrap(
                    f,
                    self,
                    name=name,
                    span_type=span_type,
                    record_input=record_input,
                    record_output=record_output,
                )
            except Exception:  # never break the user's import
                logger.exception("judgeval_async could not wrap %r; leaving it untraced", f)
                return f
            return wrapped  # type: ignore[return-value]

        if func is not None:
            return decorate(func)
        return decorate

    def span(self, name: str, *, span_type: str = "span") -> SpanContextManager:
        """A span as a context manager: ``with tracer.span("plan"):`` or ``async with``."""
        return SpanContextManager(self, name, span_type)

    def _current_span(self, call: str) -> trace.Span | None:
        span = current_span()
        if span is None:
            pass
        elif type(span) is EngineSpan:
            if span.is_recording():  # ours: valid ids and sampled by construction; no SpanContext built
                return span
        else:
            ctx = span.get_span_context()
            if ctx.is_valid and ctx.trace_flags.sampled and span.is_recording():
                return span
        self.metrics.calls_ignored.inc(call, "no_active_span")
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        """Set an attribute on the current span. Primitives are kept as they are (a long string is cut); anything
        else is stored as bounded JSON. The key is cut to 256 characters; lone surrogates are replaced."""
        try:
            span = self._current_span("set_attribute")
            if span is None:
                return
            key, value = self.text(key, KEY_MAX), self._attribute_value(value)
            if _span_busy(span):
                self.metrics.calls_ignored.inc("set_attribute", "span_busy")
                return
            span.set_attribute(key, value)
        except Exception:
            self.metrics.calls_ignored.inc("set_attribute", "error")
            logger.debug("judgeval_async set_attribute failed", exc_info=True)

    def _attribute_value(self, value: Any) -> Any:
        """An exact bool/int/float/str (only builtin code runs on it), else bounded JSON."""
        kind = type(value)
        if kind is bool:
            return value
        if issubclass(kind, int):
            number = int.__int__(value)
            if _INT64[0] <= number < _INT64[1]:
                return number
        elif issubclass(kind, float):
            return float.__float__(value)
        elif issubclass(kind, str) and str.__len__(value) <= self._limits.max_length:
            return self.text(value, self._limits.max_length)
        return self.serialize(value)

    def set_input(self, value: Any) -> None:
        """Record the current span's input, as bounded JSON like ``observe`` records arguments."""
        sc = self.semconv
        self._set_json("set_input", sc.input_keys, sc.input_mime_key, value)

    def set_output(self, value: Any) -> None:
        """Record the current span's output, as bounded JSON like ``observe`` records return values."""
        sc = self.semconv
        self._set_json("set_output", sc.output_keys, sc.output_mime_key, value)

    def _set_json(self, call: str, keys: tuple[str, ...], mime_key: str, value: Any) -> None:
        try:
            span = self._current_span(call)
            if span is not None and keys:
                attributes: dict[str, Any] = {}
                put_value(attributes, keys, mime_key, self.serialize(value))
                if _span_busy(span):
                    self.metrics.calls_ignored.inc(call, "span_busy")
                    return
                span.set_attributes(attributes)
        except Exception:
            self.metrics.calls_ignored.inc(call, "error")
            logger.debug("judgeval_async %s failed", call, exc_info=True)

    def tag(self, tags: str | list[str] | tuple[str, ...]) -> None:
        """Tag the current trace. Returns immediately: tags are batched and sent from the SDK loop.

        At most ``tag_max_per_trace`` tags of 256 characters are read from ``tags`` (a list, tuple, set, or a
        generator or other builtin iterator, even an endless one); the rest is not read, and counted
        ``values_degraded["truncated"]``. A ``tags`` that cannot be read without running its own code (a class with
        its own ``__iter__``) drops the call (``serialization_error``).
        """
        try:
            span = self._current_span("tag")
            if span is None:
                return
            c = self.config
            clean = bounded_texts(tags, TAG_MAX, c.tag_max_per_trace, c.serialize_budget, self.degraded)
            if clean is None:
                _drop_untracked(self.metrics.tags)
                return
            if not clean:
                return
            if self.semconv.openinference:
                self._tag_span(span, clean)
            if not self._judgment_api:
                self.metrics.calls_ignored.inc("tag", "no_judgment_api")  # the span's tag.tags has them
                return
            tid = span._trace_id if type(span) is EngineSpan else span.get_span_context().trace_id  # no SpanContext
            self._tags.offer((f"{tid:032x}", clean))
            if not self._runtime.running:  # (the signal guard's check runs when the span ends)
                self._start_nowait()
        except Exception:
            # Every call is accounted for: one that failed here is a lost tag() call, not silence.
            _drop_untracked(self.metrics.tags)
            logger.debug("judgeval_async tag failed", exc_info=True)

    def _tag_span(self, span: trace.Span, tags: tuple[str, ...] | list[str]) -> None:
        """Add ``tags`` to the span's ``tag.tags`` (so any OTLP backend shows them), keeping earlier ones, at most
        ``tag_max_per_trace`` per span: the attribute is bounded like the trace's tag set (100 x 256 characters).
        Read-merge-write is not atomic: two threads tagging one span at the same instant may keep only one call's
        tags on the span (the tag pipeline still gets both)."""
        try:
            engine = type(span) is EngineSpan
            if engine:
                previous = span.get_attribute(ATTR_TAGS)  # type: ignore[attr-defined]
            else:
                attributes = getattr(span, "attributes", None)
                previous = attributes.get(ATTR_TAGS) if attributes is not None else None
            limit = self.config.tag_max_per_trace
            if previous:
                if len(previous) >= limit:
                    return
                seen = set(previous)
                added = [tag for tag in dict.fromkeys(tags) if tag not in seen]
                if not added:
                    return  # nothing new: no write (the span's lock and OTel's per-element check are skipped)
                merged = (*previous, *added)
            else:
                merged = tuple(dict.fromkeys(tags))
            if engine:
                span.set_clean_attribute(ATTR_TAGS, merged[:limit])  # type: ignore[attr-defined]  # no lock to check
                return
            if _span_busy(span):
                return  # a signal handler interrupted this span's own update: the tag pipeline still gets the tags
            span.set_attribute(ATTR_TAGS, merged[:limit])
        except Exception:
            logger.debug("judgeval_async could not set tag.tags on the span", exc_info=True)

    def async_evaluate(
        self,
        scorer: Any = None,
        example: Any = None,
        *,
        scorers: list[Any] | None = None,
        model: str | None = None,
        eval_name: str | None = None,
        threshold: float | None = None,
    ) -> None:
        """Queue an evaluation of ``example`` by ``scorer`` for the current span. Returns immediately.

        Outside a sampled span it is a counted no-op (``calls_ignored``), not an error.
        """
        try:
            if not self.config.evaluations_enabled:
                self.metrics.calls_ignored.inc("async_evaluate", "disabled")
                return
            if not self._judgment_api:
                self.metrics.calls_ignored.inc("async_evaluate", "no_judgment_api")
                return
            span = self._current_span("async_evaluate")
            if span is None:
                return
            if type(span) is EngineSpan:
                tid, sid = span._trace_id, span._span_id  # no SpanContext built
            else:
                ctx = span.get_span_context()
                tid, sid = ctx.trace_id, ctx.span_id
            span_id = f"{sid:016x}"
            trace_id = f"{tid:032x}"
            reasons: set[str] = set()
            scorer_set = (
                self._scorer_sets.get(scorer) if type(scorer) is str and scorers is None and threshold is None else None
            ) or self._scorer_set(scorer, scorers, threshold, reasons)  # built (and cached when plain) on a miss
            named = not (eval_name is None or (type(eval_name) is str and not eval_name))
            name_text = bounded_text(eval_name, NAME_MAX, reasons.add) if named else f"async_evaluate_{span_id}"
            # Serialized here, bounded, on the caller: the loop never runs user code (a slow __repr__ there would
            # stall every export), and a later mutation of the user's example changes nothing.
            example_text = safe_json(example, self._limits, reasons.add)
            model_text = None if model is None else bounded_text(model, KEY_MAX, reasons.add)
            created_at = utc_now_iso()
            for reason in reasons:
                self.degraded(reason)
            carrier = self._span_evals
            # eval_transport="span" needs the project id in the payload: until it is resolved (the first moments
            # of a process given only project_name), or past the per-span caps, the API transport sends the run.
            why = (
                "api"
                if carrier is None
                else carrier.carry(
                    span,
                    self._resolver.project_id,
                    trace_id,
                    span_id,
                    example_text,
                    scorer_set[2],
                    scorer_set[3],
                    f'"{created_at}"',  # digits and "-:.+T" only: its own JSON text
                    json_text(name_text) if named else None,
                )
            )
            if why is not None:
                if why not in ("api", "no_project_id", "reentrant"):  # no logging inside a signal handler
                    self._span_eval_log.warning(
                        why,
                        "judgeval_async: eval_transport='span' could not carry an evaluation on its span (%s); "
                        "sent by the API instead",
                        why,
                    )
                self._evals.offer(
                    {
                        "project_name": self.config.project_name,
                        "eval_name": name_text,
                        "trace_id": trace_id,
                        "trace_span_id": span_id,
                        "examples": [example_text],
                        "judgment_scorers": scorer_set[0],
                        "custom_scorers": scorer_set[1],
                        "model": model_text,
                        "created_at": created_at,
                    }
                )
            if not self._runtime.running:  # (the signal guard's check runs when the span ends)
                self._start_nowait()
        except Exception:
            # Every call is accounted for: one that failed here is a lost evaluation, not silence.
            _drop_untracked(self.metrics.evaluations)
            logger.debug("judgeval_async async_evaluate failed", exc_info=True)

    def _scorer_set(self, scorer: Any, scorers: Any, threshold: Any, reasons: set[str]) -> _ScorerSet:
        """``scorer_configs`` and the carrier's ``judges_text`` for this call, built. For a plain score-type string
        (the common ``async_evaluate("faithfulness", ...)``) it is kept in ``_scorer_sets``, where ``async_evaluate``
        looks first: built once and reused. The configs are shared between runs and never mutated (the dispatcher
        only encodes them). A name that was degraded is not kept: every call counts its degradation."""
        cacheable = type(scorer) is str and scorers is None and threshold is None
        before = len(reasons)
        judgment, custom = scorer_configs(scorer, scorers, threshold, self.config.serialize_budget, reasons.add)
        built = (judgment, custom, *judges_text(judgment, custom))
        if cacheable and len(reasons) == before:
            sets = self._scorer_sets
            if len(sets) >= _SCORER_SETS_MAX:
                sets.clear()  # a process naming thousands of score types: start over rather than grow
            sets[scorer] = built
        return built

    # ------------------------------------------------------------------ health
    def health_snapshot(self) -> HealthSnapshot:
        """The typed form of :meth:`get_health_metrics`."""
        return take_snapshot(
            self.metrics,
            metadata_entries=len(self._metadata),
            tag_buffer_size=self._tags.buffered_traces,
        )

    def get_health_metrics(self) -> dict[str, Any]:
        """The SDK's health as a dict (see docs/metrics.md for every key). Any thread; never blocks."""
        try:
            return self.health_snapshot().as_dict()
        except Exception:  # pragma: no cover - health must never break a request handler
            logger.debug("judgeval_async health snapshot failed", exc_info=True)
            return {}

    def metrics_collector(self) -> Any:
        """A ``prometheus_client`` collector reading this tracer at scrape time: ``registry.register(it)``."""
        from ._prometheus import JudgevalCollector  # noqa: PLC0415 - prometheus_client loads only if used

        return JudgevalCollector(self)

    def start_metrics_server(self, port: int = 9464, addr: str = "127.0.0.1") -> Any:
        """Serve Prometheus ``/metrics`` on ``addr:port`` (loopback unless told otherwise); ``port=0`` picks one.

        Returns a server with ``.port``, ``.url`` and ``.close()``, closed by :meth:`shutdown` or by starting another.
        Raises ``MetricsServerError`` if the port cannot be bound; nothing else is affected.
        """
        from ._prometheus import start_metrics_server  # noqa: PLC0415 - prometheus_client loads only if used

        server = start_metrics_server(self, port=port, addr=addr)
        previous, self._metrics_server = self._metrics_server, server
        if previous is not None:
            previous.close()
        return server

    # ------------------------------------------------------------------ flush and shutdown (blocking, bounded)
    def force_flush(self, timeout: float = 5.0) -> bool:
        """Deliver everything created so far, waiting at most ``timeout`` seconds. True if all settled.

        Returns by its deadline (plus a few milliseconds), whatever the backend does; items not settled by then
        stay queued and keep being sent. Raises ``LoopThreadError`` (a ``RuntimeError``) if called on the SDK's
        loop thread. Before exiting, call :meth:`shutdown` alone: it includes this flush.
        """
        self._runtime.check_not_loop_thread("force_flush")
        deadline = time.monotonic() + max(0.0, timeout)
        if self._runtime.stopped:
            return self.health_snapshot().ledger_balanced
        if not self._runtime.running and not self._has_items() and not self._replaying:
            return True  # nothing was ever offered (nor left in a spool): no reason to start the loop thread
        try:
            if not self._runtime.ensure_started(wait=timeout):
                return False
            # The loop stops waiting at the deadline (absolute: the loop may pick the work up late); run() waits
            # for its answer a hand-off grace longer.
            remaining = max(0.0, deadline - time.monotonic())
            return self._runtime.run(self._aflush_until(deadline), remaining + _HANDOFF_GRACE)
        except (TimeoutError, RuntimeClosedError):
            return False
        except LoopThreadError:
            raise
        except Exception:
            logger.exception("judgeval_async force_flush failed")
            return False

    async def aflush(self, timeout: float = 5.0) -> bool:
        """``force_flush`` for async code: awaits without blocking the caller's event loop. Same deadline."""
        try:
            if self._runtime.in_loop_thread():
                return await self._aflush_all(timeout)
            if self._runtime.stopped:
                return False
            if not self._runtime.running and not self._has_items():
                return True
            self._runtime.ensure_started(wait=None)
            # Wait for the loop thread's handshake without blocking the caller's event loop.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(0.0, timeout)
            while not self._runtime.running:
                if self._runtime.stopped or loop.time() > deadline:
                    return False
                await asyncio.sleep(0.005)
            remaining = max(0.0, deadline - loop.time())
            fut = self._runtime.submit(self._aflush_until(time.monotonic() + remaining), wait=remaining)
            return await asyncio.wait_for(asyncio.wrap_future(fut), remaining + _HANDOFF_GRACE)
        except (TimeoutError, asyncio.TimeoutError, RuntimeClosedError):
            return False
        except Exception:
            logger.exception("judgeval_async aflush failed")
            return False

    def _has_items(self) -> bool:
        m = self.metrics
        return bool(m.spans.created or m.evaluations.created or m.tags.created)

    async def _aflush_until(self, deadline: float) -> bool:
        """Flush on the loop until ``deadline`` (``time.monotonic()``), however late the loop started on it."""
        return await self._aflush_all(max(0.0, deadline - time.monotonic()))

    async def _aflush_all(self, timeout: float) -> bool:
        results = await asyncio.gather(
            self._spans.flush(timeout), self._evals.flush(timeout), self._tags.flush(timeout)
        )
        return all(results)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush what can be flushed within ``timeout`` seconds, drop (and count) the rest, stop the loop thread.

        ``timeout`` covers everything, the flush included: no ``force_flush`` is needed before it (one before it
        takes its own budget, so the two together take up to twice as long). Returns by its deadline (plus a few
        milliseconds). Anything left undelivered is counted by reason and summed up in one WARNING log line;
        nothing is logged when everything was delivered. Returns True if everything was delivered or accounted
        for before the deadline. Idempotent.
        """
        self._runtime.check_not_loop_thread("shutdown")
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            drained = self._runtime.stop(timeout)
        except LoopThreadError:
            raise
        except Exception:
            logger.exception("judgeval_async shutdown failed")
            drained = False
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            try:
                server.close(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # pragma: no cover
                logger.debug("metrics server close failed", exc_info=True)
        return drained


def _suppress_instrumentation() -> None:
    """Mark the SDK loop's context so OpenTelemetry instrumentations (httpx, ...) never trace our own requests:
    tracing the exporter's sends would feed them back into the exporter."""
    ctx = otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
    ctx = otel_context.set_value(otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, ctx)
    otel_context.attach(ctx)


def _drop_untracked(ledger: Any) -> None:
    try:
        ledger.drop_untracked("serialization_error")
    except Exception:  # pragma: no cover - never let accounting reach the caller
        logger.debug("judgeval_async could not count a dropped call", exc_info=True)
