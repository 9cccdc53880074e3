"""The ``observe`` decorator and the ``span`` context manager: the caller-side hot path.

Per call: start an OpenTelemetry span, make it current, record bounded input and output, end it. The span processor
then does one bounded append. The function's signature, docstring and ``inspect`` nature are preserved (a coroutine
function stays a coroutine function, a generator function a generator function). Exceptions from the wrapped
function propagate unchanged; exceptions from *our* code never reach the caller.

Overhead is sampled (one call in ``_SAMPLE_EVERY``) into ``judgeval_observe_overhead_seconds``: our time before and
after the wrapped function, not the function's own time.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import traceback
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from ._gcguard import STATE as _GC
from ._gcguard import held_span, hold, isolated, release, unsafe_to_set_context
from ._provider import EngineTracer, detach
from ._semconv import JSON_MIME, Semconv
from ._serialize import args_json, fast_json, json_text
from ._span import EngineSpan

__all__ = ["Recorder", "put_value", "wrap"]

logger = logging.getLogger(__name__)

_SAMPLE_EVERY = 16
_FAST_ARGS_MAX = 16  # parameters for which args_json's direct path is set up (safe_json's flat-dict fast path)
_MAX_GENERATOR_ITEMS = 100  # yielded items kept for a generator span's output
NAME_MAX = 1024  # characters of a span name (observe(name=...), span(name), or the function's __name__)
KIND_MAX = 256  # characters of a span_type
MODEL_MAX = 256  # characters of an llm span's model argument
MESSAGE_MAX = 8192  # characters of a recorded exception's message
STACKTRACE_MAX = 32_768  # characters of a recorded exception's stack trace


class Recorder(Protocol):
    """What the wrappers need from the tracer (kept narrow so the hot path is easy to read)."""

    otel_tracer: trace.Tracer
    semconv: Semconv

    input_limit: int  # characters of a serialized input or output (SerializeLimits.max_length)

    def serialize(self, value: Any) -> str: ...

    def text(self, value: object, limit: int) -> str:
        """``value`` as a name: an exact str of at most ``limit`` characters, lone surrogates replaced, counted."""
        ...

    def record_overhead(self, seconds: float) -> None: ...

    def metrics_enabled(self) -> bool: ...


def put_value(attributes: dict[str, Any], keys: tuple[str, ...], mime_key: str, text: str) -> None:
    """Write one serialized input or output under every key the ``semconv`` setting names (``Semconv.input_keys``
    or ``output_keys``): the JSON text is computed once and the same string object is stored under each key."""
    for key in keys:
        attributes[key] = text
    if mime_key:
        attributes[mime_key] = JSON_MIME


def _start(rec: Recorder, name: str, attributes: dict[str, Any]) -> tuple[Span, object] | None:
    """Start a span and make it current: (span, context token), or (span, None) when it must not be made current
    (inside a garbage collection on CPython 3.10/3.11, see _gcguard), or None when even starting failed."""
    try:
        tracer = rec.otel_tracer
        if _GC.thread and unsafe_to_set_context():
            held = held_span()
            parent = trace.set_span_in_context(held) if held is not None else None  # a new Context: no set
            span = tracer.start_span(name, context=parent, attributes=attributes)
            hold(span)
            return span, None
        if type(tracer) is EngineTracer:
            return tracer.start_current(name, attributes)  # the span engine: one call, attributes adopted
        span = tracer.start_span(name, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token
    except Exception:
        logger.debug("judgeval_async could not start a span", exc_info=True)
        return None


def _isolated_call(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in a copy of the context (see _gcguard), with the held span, if any, current there."""
    held = held_span()

    def call() -> Any:
        if held is not None:
            otel_context.attach(trace.set_span_in_context(held))  # in the copy, discarded with it: no detach
        return func(*args, **kwargs)

    return isolated(call)


def _attach(ctx: otel_context.Context) -> object:
    """``otel_context.attach``, or None where a context variable must not be set (a collection's finalizer on
    CPython 3.10/3.11, see _gcguard): a generator stepped from a ``__del__`` runs in the context it was stepped in."""
    if _GC.thread and unsafe_to_set_context():
        return None
    return otel_context.attach(ctx)


def _detach(token: object) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


def _input_json(
    rec: Recorder,
    sig: inspect.Signature | None,
    names: tuple[str, ...] | None,
    skip_first: bool,
    args: Any,
    kwargs: Any,
    keys: tuple[str, ...] | None = None,
) -> str | None:
    """The call's bound arguments as bounded JSON (None if even that failed). ``keys``: the names' JSON texts, when
    every name is a short ASCII identifier (then a few exact str/int/float/bool/None positional values are written
    directly, the same text as the general path's)."""
    try:
        if keys is not None and not kwargs and len(args) <= len(keys):
            text = args_json(keys, args, 1 if skip_first else 0, rec.input_limit)
            if text is not None:
                return text
        if names is not None and len(args) <= len(names):
            # Plain parameters only: zip is several times cheaper than Signature.bind_partial, same mapping.
            values = dict(zip(names, args, strict=False))
            if kwargs:
                values.update(kwargs)
            if skip_first and values:
                values.pop(names[0], None)
        elif sig is not None:
            bound = sig.bind_partial(*args, **kwargs)
            values = dict(bound.arguments)
            if skip_first and values:
                values.pop(next(iter(values)))
        else:
            values = {"args": args, "kwargs": kwargs}
        return rec.serialize(values)
    except Exception:
        logger.debug("judgeval_async could not record input", exc_info=True)
        return None


def _finish(span: Span, token: object, error: BaseException | None, output: Any, rec: Recorder, record: bool) -> None:
    try:
        if error is not None:
            _record_error(span, error, rec)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
        elif record:
            sc = rec.semconv
            if sc.output_keys:
                # A str or int result (fast_json cannot raise on those): no bounded walk to set up.
                kind = type(output)
                text = fast_json(output, rec.input_limit) if kind is str or kind is int else None
                if text is None:
                    text = rec.serialize(output)
                attributes = dict.fromkeys(sc.output_keys, text)  # put_value, inline
                if sc.output_mime_key:
                    attributes[sc.output_mime_key] = JSON_MIME
                if type(span) is EngineSpan:
                    span.set_clean_attributes(attributes)  # our own strings: no cleaning pass
                else:
                    span.set_attributes(attributes)  # one lock round-trip for every key
        span.end()
    except Exception:
        logger.debug("judgeval_async could not end a span", exc_info=True)
    finally:
        try:
            if token is not None:
                detach(token)
            else:
                release(span)  # started inside a collection and held instead of made current (_gcguard)
        except Exception:
            pass


def _record_error(span: Span, error: BaseException, rec: Recorder) -> None:
    """What ``span.record_exception`` records (the same event and attributes), but bounded: a 100 MB message would
    otherwise go on the wire twice (message and stack trace). The exception's own ``__str__`` is called, as any
    logger would; the traceback lines are read only until the cap is reached."""
    kind = type(error)
    module, qualname = getattr(kind, "__module__", None), getattr(kind, "__qualname__", "Exception")
    exc_type = qualname if not module or module == "builtins" else f"{module}.{qualname}"
    try:
        message = str(error)
    except Exception:
        message = f"<{qualname} (str() failed)>"
    lines: list[str] = []
    size = 0
    try:
        for line in traceback.TracebackException(kind, error, error.__traceback__, compact=True).format():
            lines.append(line[: STACKTRACE_MAX - size + 1])
            size += len(lines[-1])
            if size > STACKTRACE_MAX:
                break
    except Exception:
        lines.append(f"{exc_type}: <traceback unavailable>")
    span.add_event(
        "exception",
        {
            "exception.type": rec.text(exc_type, KIND_MAX),
            "exception.message": rec.text(message, MESSAGE_MAX),
            "exception.stacktrace": rec.text("".join(lines), STACKTRACE_MAX),
            "exception.escaped": "False",
        },
    )


def wrap(
    func: Callable[..., Any],
    rec: Recorder,
    *,
    name: str | None,
    span_type: str,
    record_input: bool,
    record_output: bool,
) -> Callable[..., Any]:
    if name is None or (type(name) is str and not name):
        # __name__, not __qualname__: "search", not "build_workload.<locals>.search" (what every OTel UI shows).
        name = getattr(func, "__name__", None) or "function"
    # Once per function, not per call: a span name and kind are capped and cleaned of lone surrogates (which would
    # make the encoder fail the span) here, and counted.
    span_name = rec.text(name, NAME_MAX)
    span_type = rec.text(span_type, KIND_MAX)
    sc = rec.semconv
    static = sc.kind_attributes(span_type, span_name)
    try:
        sig: inspect.Signature | None = inspect.signature(func)  # once per function, not per call
    except (TypeError, ValueError):
        sig = None
    params = list(sig.parameters) if sig is not None else []
    skip_first = bool(params) and params[0] in ("self", "cls")
    simple = sig is not None and all(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in sig.parameters.values()
    )
    names = tuple(params) if simple else None
    # The names' JSON texts, once per function: args_json writes a call's input without building a dict.
    keys = (
        tuple([json_text(n) + ":" for n in names])
        if names is not None and len(names) <= _FAST_ARGS_MAX and all(n.isascii() and len(n) <= 64 for n in names)
        else None
    )
    # An llm span whose function takes a ``model`` string names the requested model (llm.model_name, gen_ai).
    model_keys = sc.model_keys(span_type) if "model" in params else ()
    model_at = _positional_index(sig, "model") if model_keys else -1
    counter = [0]
    in_keys, in_mime = sc.input_keys, sc.input_mime_key

    def begin(args: Any, kwargs: Any) -> tuple[tuple[Span, object] | None, float]:
        """Start the span; returns it and, on a sampled call, our time so far (else -1: no clock reads)."""
        counter[0] += 1
        sampled = counter[0] % _SAMPLE_EVERY == 0 and rec.metrics_enabled()
        t0 = time.perf_counter() if sampled else 0.0
        attributes = static.copy()
        if record_input and sc.input_keys:
            # Set at start, in the same call as the kind: one attribute update on the span instead of two.
            text = _input_json(rec, sig, names, skip_first, args, kwargs, keys)
            if text is not None:
                for key in in_keys:  # put_value, inline: one call fewer per span
                    attributes[key] = text
                if in_mime:
                    attributes[in_mime] = JSON_MIME
        if model_keys:
            _put_model(rec, attributes, model_keys, model_at, args, kwargs)
        started = _start(rec, span_name, attributes)
        return started, (time.perf_counter() - t0) if sampled else -1.0

    def end(started: tuple[Span, object] | None, pre: float, err: BaseException | None, out: Any) -> None:
        if started is None:
            return
        if pre < 0:
            _finish(started[0], started[1], err, out, rec, record_output)
            return
        t0 = time.perf_counter()
        _finish(started[0], started[1], err, out, rec, record_output)
        rec.record_overhead(pre + time.perf_counter() - t0)

    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            started, pre = begin(args, kwargs)
            items: list[Any] = []
            span_ctx = otel_context.get_current()
            if started is not None:
                _detach(started[1])
            agen = func(*args, **kwargs)
            err: BaseException | None = None
            try:
                sent: Any = None
                while True:
                    token = _attach(span_ctx)
                    try:
                        item = await agen.asend(sent)
                    except StopAsyncIteration:
                        break
                    finally:
                        _detach(token)
                    if len(items) < _MAX_GENERATOR_ITEMS:
                        items.append(item)
                    sent = yield item
            except GeneratorExit:
                await agen.aclose()  # the consumer stopped early: not an error of the function
                raise
            except BaseException as exc:
                err = exc
                await agen.aclose()
                raise
            finally:
                if started is not None:
                    token2 = _attach(span_ctx)
                    end((started[0], token2), pre, err, items)

        return agen_wrapper

    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            started, pre = begin(args, kwargs)
            items: list[Any] = []
            span_ctx = otel_context.get_current()
            if started is not None:
                _detach(started[1])
            gen = func(*args, **kwargs)
            err: BaseException | None = None
            result: Any = None
            try:
                sent: Any = None
                while True:
                    token = _attach(span_ctx)
                    try:
                        item = gen.send(sent)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    finally:
                        _detach(token)
                    if len(items) < _MAX_GENERATOR_ITEMS:
                        items.append(item)
                    sent = yield item
            except GeneratorExit:
                gen.close()  # the consumer stopped early: not an error of the function
                raise
            except BaseException as exc:
                err = exc
                gen.close()
                raise
            finally:
                if started is not None:
                    token2 = _attach(span_ctx)
                    end((started[0], token2), pre, err, items)
            return result

        return gen_wrapper

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            started, pre = begin(args, kwargs)
            try:
                out = await func(*args, **kwargs)
            except BaseException as exc:
                end(started, pre, exc, None)
                raise
            end(started, pre, None, out)
            return out

        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        if _GC.thread and unsafe_to_set_context():
            # A finalizer run by a collection in this thread (CPython 3.10/3.11): the whole call, nested spans and
            # tags included, runs in a copy of the context, where making its span current is safe (_gcguard).
            return _isolated_call(sync_wrapper, args, kwargs)
        started, pre = begin(args, kwargs)
        try:
            out = func(*args, **kwargs)
        except BaseException as exc:
            end(started, pre, exc, None)
            raise
        end(started, pre, None, out)
        return out

    return sync_wrapper


def _positional_index(sig: inspect.Signature | None, name: str) -> int:
    """Where ``name`` is in a call's positional arguments, or -1 if it can only be passed by keyword."""
    if sig is None:
        return -1
    for i, p in enumerate(sig.parameters.values()):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return -1
        if p.name == name:
            return i
    return -1


def _put_model(
    rec: Recorder, attributes: dict[str, Any], keys: tuple[str, ...], at: int, args: Any, kwargs: Any
) -> None:
    model = kwargs.get("model") if "model" in kwargs else (args[at] if 0 <= at < len(args) else None)
    if type(model) is str and model:
        text = rec.text(model, MODEL_MAX)
        for key in keys:
            attributes[key] = text


class SpanContextManager:
    """``with tracer.span("name"):`` and ``async with tracer.span("name"):``. Never raises from our side."""

    __slots__ = ("_attributes", "_name", "_rec", "_started")

    def __init__(self, rec: Recorder, name: str, span_type: str) -> None:
        self._rec = rec
        self._name = rec.text(name, NAME_MAX)
        self._attributes = rec.semconv.kind_attributes(rec.text(span_type, KIND_MAX), self._name)
        self._started: tuple[Span, object] | None = None

    def __enter__(self) -> Span:
        self._started = _start(self._rec, self._name, self._attributes)
        return self._started[0] if self._started is not None else trace.INVALID_SPAN

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        started, self._started = self._started, None
        if started is not None:
            _finish(started[0], started[1], exc, None, self._rec, False)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)
