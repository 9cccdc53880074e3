"""The span engine's span (issue 12): a compact record implementing the OpenTelemetry **API** ``Span``.

Why not the SDK span: an SDK span costs 22-27 µs to start and end here and allocates a dozen GC-tracked objects
(``BoundedAttributes`` with its lock, ``BoundedList`` x2 with locks, ``SpanContext``, a ``ReadableSpan`` copy at end).
This record is one 11-slot ``__slots__`` object plus its attribute dict; what few spans use (events, links, drop
counts, a status, a kind other than INTERNAL, the ``SpanContext`` once someone asks for it) lives in one ``_Extra``
made on first use. A record that will wait in a deep queue is compacted after ``end`` (``compact``: attributes as a
values tuple, ids and times as one int): an observe span then keeps ~430 B alive, not ~800 B. It behaves as the
SDK span does, rule for rule (limits, the oldest attribute evicted when full, OK wins over ERROR, nothing changes
after ``end``), so the OTLP message ``_otlp`` writes from it is byte-for-byte the SDK's for the same content
(tests/unit/test_engine_conformance.py).

At runtime the class is registered as a *virtual* subclass of ``opentelemetry.trace.Span`` rather than inheriting
from it: the API's class has no ``__slots__``, so inheriting would give every span a ``__dict__``.
"""

from __future__ import annotations

import logging
import os
import random
import traceback
from collections.abc import Iterable, Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

__all__ = [
    "EngineSpan",
    "Limits",
    "SpanOwner",
    "new_span_id",
    "new_trace_id",
    "random_key",
    "random_uuid",
    "unpack_ids_times",
]

logger = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_EMPTY_STATE = TraceState()
_OK = StatusCode.OK
_INTERNAL = SpanKind.INTERNAL
_MAX64 = (1 << 64) - 1

# A compacted span's attributes: ``(*values, keys)`` (see ``EngineSpan.compact``). Key tuples are shared: every span of
# one traced function carries the same keys, so queued records keep one copy of them between them.
_NO_ATTRS: tuple[Any, ...] = ((),)
_KEYSETS: dict[tuple[str, ...], tuple[str, ...]] = {}
_KEYSETS_MAX = 256

# Ids: one private generator, reseeded in a forked child (two children must never share ids). Never the global
# ``random``: an application's ``random.seed(42)`` would make every process emit the same trace ids.
_rng = random.Random()
_bits = _rng.getrandbits


def _reseed() -> None:
    _rng.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_trace_id() -> int:
    """A random, valid (non-zero) 128-bit trace id."""
    n = _bits(128)
    while not n:  # pragma: no cover - one in 2**128
        n = _bits(128)
    return n


def new_span_id() -> int:
    """A random, valid (non-zero) 64-bit span id."""
    n = _bits(64)
    while not n:  # pragma: no cover - one in 2**64
        n = _bits(64)
    return n


def random_uuid() -> str:
    """A random (version 4) UUID's text from the private generator. Not ``uuid.uuid4()``: its ``os.urandom`` call
    releases the GIL, so a caller on a busy process waits for another thread's time slice (up to 5 ms)."""
    # 122 random bits; "4" is the version nibble, 0x8000 the RFC 4122 variant bits (as uuid.UUID(version=4) sets).
    return "%08x-%04x-4%03x-%04x-%012x" % (_bits(32), _bits(16), _bits(12), 0x8000 | _bits(14), _bits(48))  # noqa: UP031 - the fastest form


def random_key() -> str:
    """128 random bits as 32 hex digits (an ``Idempotency-Key``), from the private generator: not
    ``uuid.uuid4().hex``, whose ``os.urandom`` call releases the GIL (on the loop, once per payload: each release may
    hand the GIL to an application thread mid-request and take it back at that thread's next system call)."""
    return f"{_bits(128):032x}"


def unpack_ids_times(packed: Any) -> tuple[int, int, int, int]:
    """(trace id, span id, start, end) from a compacted span's one int (``EngineSpan.compact``)."""
    return packed >> 192, (packed >> 128) & _MAX64, (packed >> 64) & _MAX64, packed & _MAX64


class Limits:
    """The span limits, resolved once per provider (from an SDK ``SpanLimits``, which reads the OTEL_* variables)."""

    __slots__ = (
        "event_attributes",
        "events",
        "link_attributes",
        "links",
        "span_attributes",
        "span_value_len",
        "value_len",
    )

    def __init__(self, limits: Any) -> None:
        self.span_attributes: int | None = limits.max_span_attributes
        self.span_value_len: int | None = limits.max_span_attribute_length
        self.events: int | None = limits.max_events
        self.links: int | None = limits.max_links
        self.event_attributes: int | None = limits.max_event_attributes
        self.link_attributes: int | None = limits.max_link_attributes
        self.value_len: int | None = limits.max_attribute_length


class SpanOwner:
    """What every span of one tracer shares: resource, instrumentation scope, limits, and where ended spans go."""

    __slots__ = ("instrumentation_scope", "limits", "on_end", "resource")

    def __init__(self, resource: Any, scope: Any, limits: Limits, on_end: Any) -> None:
        self.resource = resource
        self.instrumentation_scope = scope
        self.limits = limits
        self.on_end = on_end  # Callable[[EngineSpan], None]; never raises (the tracer's seam)


def _is_non_custom_str(value: Any) -> bool:
    kind = type(value)
    return kind.__str__ is not object.__str__ or kind.__repr__ is not object.__repr__  # type: ignore[comparison-overlap]


def clean_value(value: Any, max_len: int | None) -> Any:
    """An attribute value as OpenTelemetry's ``BoundedAttributes`` stores it (same rules: sequences become tuples,
    mappings dicts, strings are cut to ``max_len``, anything else its ``str()`` or None)."""
    kind = type(value)
    if kind is str:
        return value if max_len is None or len(value) <= max_len else value[:max_len]
    if kind is bool or kind is int or kind is float or value is None:
        return value
    if isinstance(value, (bool, int, float, bytes)):
        return value
    if isinstance(value, str):
        return value if max_len is None or len(value) <= max_len else value[:max_len]
    if isinstance(value, Sequence):
        return tuple([clean_value(v, max_len) for v in value])
    if isinstance(value, Mapping):
        return clean_mapping(value, max_len)
    if _is_non_custom_str(value):
        return str(value)
    return None


def clean_mapping(value: Mapping[Any, Any], max_len: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw, val in value.items():
        if not raw:
            continue
        if isinstance(raw, str):
            key = raw
        elif _is_non_custom_str(raw):
            key = str(raw)
        else:
            continue
        out[key] = clean_value(val, max_len)
    return out


def bounded(
    attributes: Mapping[Any, Any] | None, maxlen: int | None, max_len: int | None
) -> tuple[dict[str, Any], int]:
    """``attributes`` as a new ``BoundedAttributes`` would hold them: (dict, dropped count)."""
    if not attributes:
        return {}, 0
    if maxlen == 0:
        return {}, len(attributes)
    cleaned = clean_mapping(attributes, max_len)
    dropped = len(attributes) - len(cleaned)
    if maxlen is not None and len(cleaned) > maxlen:
        # Insertion keeps the newest maxlen (each insert past the bound evicts the oldest).
        extra = len(cleaned) - maxlen
        dropped += extra
        cleaned = dict(list(cleaned.items())[extra:])
    return cleaned, dropped


if TYPE_CHECKING:
    _SpanBase = trace.Span
else:
    _SpanBase = object


class EngineSpan(_SpanBase):
    """A recording span. Created by ``_provider.EngineTracer``; read by ``_otlp`` after ``end()``."""

    # Eleven slots (was 22): what every span carries. The rest (events, links, drop counts, a status, a non-INTERNAL
    # kind, the parent's context, the exception options, the SpanContext cache) lives in one ``_Extra`` made on first
    # use; an observe span never makes one. 8 B a slot, for each of up to 8 192 queued records (~0.7 MB at the bound).
    __slots__ = (
        "_attrs",
        "_extra",
        "_flags",
        "_name",
        "_owner",
        "_parent_id",
        "_sid",
        "_state",
        "_t_end",
        "_t_start",
        "_tid",
    )

    def __init__(
        self,
        owner: SpanOwner,
        name: str,
        trace_id: int,
        span_id: int,
        flags: int,
        state: TraceState | None,
        parent_id: int,
        parent_remote: bool,
        parent: SpanContext | None,
        kind: SpanKind,
        attrs: dict[str, Any],
        dropped_attrs: int,
        start: int,
    ) -> None:
        self._owner = owner
        self._name = name
        # The ids and times: plain ints until compact() packs all four into _t_end (read them as _trace_id,
        # _span_id, _start, _end). _t_end is None while recording, whichever form.
        self._tid: int | None = trace_id
        self._sid: int | None = span_id
        self._flags = flags
        self._state = state  # None: the empty TraceState
        self._parent_id = parent_id  # 0: a root span
        self._attrs: Any = attrs  # a dict; a tuple once compact() (after end), read via attr_items()
        self._t_start: int | None = start
        self._t_end: int | None = None
        extra: _Extra | None = None
        if parent_remote or parent is not None or dropped_attrs or kind is not _INTERNAL:
            extra = _Extra()
            extra.parent_remote = parent_remote
            extra.parent = parent  # the parent's SpanContext when we were given one (else built on demand)
            extra.dropped_attrs = dropped_attrs
            extra.kind = kind
        self._extra = extra

    def _x(self) -> _Extra:
        """The extras, made on first use. Made, then checked and stored with no call between (the interpreter
        switches threads only at calls and loop jumps): two threads' first writes never make two."""
        extra = self._extra
        if extra is None:
            made = _Extra()
            extra = self._extra
            if extra is None:
                extra = self._extra = made
        return extra

    # ------------------------------------------------------------------ the OpenTelemetry API
    def get_span_context(self) -> SpanContext:
        extra = self._x()
        ctx = extra.ctx
        if ctx is None:
            ctx = extra.ctx = SpanContext(
                self._trace_id,
                self._span_id,
                False,
                TraceFlags(self._flags),
                self._state if self._state is not None else _EMPTY_STATE,
            )
        return ctx

    def is_recording(self) -> bool:
        return self._t_end is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._t_end is not None:
            logger.warning("Setting attribute on ended span.")
            return
        attrs = self._attrs  # read with the check, no call between: a racing end() leaves us the dict it let go
        limits = self._owner.limits
        maxlen = limits.span_attributes
        if maxlen == 0 or not key or not isinstance(key, str):
            self._x().dropped_attrs += 1
            return
        kind = type(value)
        if kind is not str or limits.span_value_len is not None:
            value = clean_value(value, limits.span_value_len)
        # _put kept inline here: the OpenTelemetry API's hottest call, made per attribute by every instrumentation.
        if key in attrs:
            del attrs[key]  # re-inserted last, as the SDK does
        elif maxlen is not None and len(attrs) >= maxlen:
            del attrs[next(iter(attrs))]  # full: the oldest goes
            self._x().dropped_attrs += 1
        attrs[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._t_end is not None:
            logger.warning("Setting attribute on ended span.")
            return
        attrs = self._attrs  # read with the check (see set_attribute)
        limits = self._owner.limits
        if limits.span_attributes == 0:
            self._x().dropped_attrs += len(attributes)
            return
        cleaned = clean_mapping(attributes, limits.span_value_len)
        if len(cleaned) != len(attributes):
            self._x().dropped_attrs += len(attributes) - len(cleaned)
        for key, value in cleaned.items():
            self._put(attrs, key, value)

    def set_clean_attributes(self, attributes: dict[str, str]) -> None:
        """``set_attributes`` for our own values (string keys and values, built by ``observe``): no cleaning pass
        unless a value length limit applies. Same limits and eviction as ``set_attributes``."""
        if self._t_end is not None or self._owner.limits.span_value_len is not None:
            self.set_attributes(attributes)
            return
        attrs = self._attrs  # read with the check (see set_attribute)
        if self._owner.limits.span_attributes == 0:
            self._x().dropped_attrs += len(attributes)
            return
        for key, value in attributes.items():
            self._put(attrs, key, value)

    def _put(self, attrs: dict[str, Any], key: str, value: Any) -> None:
        maxlen = self._owner.limits.span_attributes
        if key in attrs:
            del attrs[key]
        elif maxlen is not None and len(attrs) >= maxlen:
            del attrs[next(iter(attrs))]
            self._x().dropped_attrs += 1
        attrs[key] = value

    def get_attribute(self, key: str) -> Any:
        """One attribute's value while recording, else None (no read-only mapping built, unlike ``attributes``)."""
        attrs = self._attrs
        return attrs.get(key) if self._t_end is None and type(attrs) is dict else None

    def set_clean_attribute(self, key: str, value: Any) -> None:
        """``set_attribute`` for a value of ours already in stored form (a str, or a tuple of strs): no cleaning
        pass unless a value length limit applies. Same limits and eviction as ``set_attribute``."""
        limits = self._owner.limits
        if self._t_end is not None or limits.span_value_len is not None or not limits.span_attributes:
            self.set_attribute(key, value)
            return
        self._put(self._attrs, key, value)  # the attribute dict read right after the check, as set_attribute does

    def set_internal(self, key: str, value: Any) -> bool:
        """An internal attribute (judgeval's own), outside the count limit. False once ended."""
        if self._t_end is not None:
            return False
        self._attrs[key] = value
        return True

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        limits = self._owner.limits
        attrs, dropped = bounded(attributes, limits.event_attributes, limits.value_len)
        if self._t_end is not None:
            logger.warning("Tried calling %s on an ended span.", "_add_event")
            return
        extra = self._x()
        events = extra.events
        if events is None:
            events = extra.events = []
        maxlen = limits.events
        if maxlen is not None and len(events) >= maxlen:
            extra.dropped_events += 1
            if maxlen == 0:
                return
            del events[0]
        events.append((name, timestamp if timestamp is not None else time_ns(), attrs, dropped))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if not _valid_link(context, attributes):
            return
        if self._t_end is not None:
            logger.warning("Tried calling %s on an ended span.", "_add_link")
            return
        self._append_link(context, attributes)

    def _append_link(self, context: SpanContext, attributes: Mapping[str, Any] | None) -> None:
        limits = self._owner.limits
        attrs, dropped = bounded(attributes, limits.link_attributes, limits.value_len)
        extra = self._x()
        links = extra.links
        if links is None:
            links = extra.links = []
        maxlen = limits.links
        if maxlen is not None and len(links) >= maxlen:
            extra.dropped_links += 1
            if maxlen == 0:
                return
            del links[0]
        links.append((context, attrs, dropped))

    def update_name(self, name: str) -> None:
        if self._t_end is not None:
            logger.warning("Tried calling %s on an ended span.", "update_name")
            return
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._t_end is not None:
            logger.warning("Tried calling %s on an ended span.", "set_status")
            return
        # OK is final; UNSET never overrides (the SDK's rules).
        extra = self._x()
        if extra.status.status_code is _OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`", description
                )
            extra.status = status
        elif isinstance(status, StatusCode):
            if status is StatusCode.UNSET:
                return
            extra.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        stacktrace = "".join(traceback.format_exception(exception))
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        exception_type = f"{module}.{qualname}" if module and module != "builtins" else qualname
        attrs: dict[str, Any] = {
            "exception.type": exception_type,
            "exception.message": str(exception),
            "exception.stacktrace": stacktrace,
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        # The clock is read first so that the check and the store below run with no call between them: the
        # interpreter switches threads only at calls and loop jumps, so two threads ending one span hand it over once.
        now = end_time if end_time is not None else time_ns()
        if self._t_end is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._t_end = now
        self._owner.on_end(self)

    def compact(self) -> None:
        """After ``end()``, for a record that will wait in a deep queue (the processor decides): the attribute dict
        as ``(*values, keys)`` with the keys tuple shared (``_KEYSETS``): observe's 8 attributes cost 112 B so, not
        272 B; and the two ids and two times as one 320-bit int in ``_t_end`` (68 B, not 152 B). ~1.5 µs of the
        caller's time on a loaded 2-core box, so not done for a record the loop will take soon. Never raises."""
        attrs = self._attrs
        end = self._t_end
        if type(attrs) is not dict or end is None:
            return
        attrs = attrs.copy()  # one C call: a set_attribute racing with end() can't split keys from values
        if attrs:
            keys = tuple(attrs)
            shared = _KEYSETS.get(keys)
            if shared is None:
                if len(_KEYSETS) >= _KEYSETS_MAX:
                    _KEYSETS.clear()
                shared = _KEYSETS[keys] = keys
            self._attrs = (*attrs.values(), shared)
        else:
            self._attrs = _NO_ATTRS
        tid, sid, start = self._tid, self._sid, self._t_start
        # Only plain ints that fit their fields (the times are the caller's: any int, or another type; a trace id
        # may come from a remote parent); otherwise all four stay plain. A negative int shifted right stays -1, so
        # one test covers both ends of 0..2**64-1.
        if type(start) is not int or type(end) is not int or type(tid) is not int or type(sid) is not int:
            return
        if (start | end | sid) >> 64 or tid >> 128:
            return
        packed = (tid << 192) | (sid << 128) | (start << 64) | end
        # Packed value first, then the plain ones let go, with no call between (see end()): a reader on another
        # thread (its reads have no call between either) sees one form or the other, never half of each.
        self._t_end = packed
        self._t_start = self._tid = self._sid = None

    def _unpack(self) -> None:
        """Back to plain ids and times (only for a write to ``_start`` / ``_end`` after ``compact()``)."""
        if self._tid is None:
            tid, sid, start, end = self._trace_id, self._span_id, self._start, self._end
            self._tid, self._sid, self._t_start, self._t_end = tid, sid, start, end

    def attr_items(self) -> Iterable[tuple[str, Any]]:
        """The attributes as (key, value) pairs, in order, compacted (a tuple) or not (a dict)."""
        attrs = self._attrs
        return attrs.items() if type(attrs) is dict else zip(attrs[-1], attrs)  # noqa: B905 - keys come last

    def __enter__(self) -> EngineSpan:
        return self

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        if exc_val is not None and self._t_end is None:
            extra = self._extra
            if extra is None or extra.record_exception:
                self.record_exception(exc_val, escaped=True)
            if extra is None or extra.set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def __repr__(self) -> str:
        return f'EngineSpan(name="{self._name}", trace_id=0x{self._trace_id:032x}, span_id=0x{self._span_id:016x})'

    # ------------------------------------------------------------------ ids and times, plain or packed (compact())
    # Each reads its plain slot, else the packed int; compact() stores the packed int before letting the plain ones go.
    @property
    def _trace_id(self) -> int:
        tid = self._tid
        if tid is not None:
            return tid
        packed: Any = self._t_end
        return packed >> 192  # type: ignore[no-any-return]

    @property
    def _span_id(self) -> int:
        sid = self._sid
        if sid is not None:
            return sid
        packed: Any = self._t_end
        return (packed >> 128) & _MAX64  # type: ignore[no-any-return]

    @property
    def _start(self) -> int:
        start = self._t_start
        if start is not None:
            return start
        packed: Any = self._t_end
        return (packed >> 64) & _MAX64  # type: ignore[no-any-return]

    @_start.setter
    def _start(self, value: int) -> None:
        self._unpack()
        self._t_start = value

    @property
    def _end(self) -> int | None:
        end = self._t_end
        return end if self._t_start is not None or end is None else end & _MAX64

    @_end.setter
    def _end(self, value: int | None) -> None:
        self._unpack()
        self._t_end = value

    # ------------------------------------------------------------------ ReadableSpan-like views (processors, tests)
    @property
    def name(self) -> str:
        return self._name

    @property
    def context(self) -> SpanContext:
        return self.get_span_context()

    @property
    def parent(self) -> SpanContext | None:
        if not self._parent_id:
            return None
        extra = self._x()
        if extra.parent is None:
            extra.parent = SpanContext(
                self._trace_id,
                self._parent_id,
                extra.parent_remote,
                TraceFlags(self._flags),
                self._state if self._state is not None else _EMPTY_STATE,
            )
        return extra.parent

    @property
    def kind(self) -> SpanKind:
        return (self._extra or _NO_EXTRA).kind

    @property
    def start_time(self) -> int:
        return self._start

    @property
    def end_time(self) -> int | None:
        return self._end

    @property
    def attributes(self) -> Mapping[str, Any]:
        attrs = self._attrs
        return MappingProxyType(attrs if type(attrs) is dict else dict(zip(attrs[-1], attrs)))  # noqa: B905

    @property
    def events(self) -> tuple[Any, ...]:
        return tuple(_EventView(*e) for e in (self._extra or _NO_EXTRA).events or ())

    @property
    def links(self) -> tuple[Any, ...]:
        return tuple(_LinkView(*link) for link in (self._extra or _NO_EXTRA).links or ())

    @property
    def status(self) -> Status:
        return (self._extra or _NO_EXTRA).status

    @property
    def dropped_attributes(self) -> int:
        return (self._extra or _NO_EXTRA).dropped_attrs

    @property
    def dropped_events(self) -> int:
        return (self._extra or _NO_EXTRA).dropped_events

    @property
    def dropped_links(self) -> int:
        return (self._extra or _NO_EXTRA).dropped_links

    @property
    def resource(self) -> Any:
        return self._owner.resource

    @property
    def instrumentation_scope(self) -> Any:
        return self._owner.instrumentation_scope


class _Extra:
    """What few spans use, kept out of ``EngineSpan``'s slots; made on first use (``EngineSpan._x``)."""

    __slots__ = (
        "ctx",
        "dropped_attrs",
        "dropped_events",
        "dropped_links",
        "events",
        "kind",
        "links",
        "parent",
        "parent_remote",
        "record_exception",
        "set_status_on_exception",
        "status",
    )

    def __init__(self) -> None:
        self.ctx: SpanContext | None = None  # built on first get_span_context()
        self.parent: SpanContext | None = None
        self.parent_remote = False
        self.kind = _INTERNAL
        self.dropped_attrs = 0
        self.events: list[tuple[str, int, dict[str, Any], int]] | None = None
        self.dropped_events = 0
        self.links: list[tuple[SpanContext, dict[str, Any], int]] | None = None
        self.dropped_links = 0
        self.status = _UNSET
        self.record_exception = True
        self.set_status_on_exception = True


# What a span without extras reads (never written: writes go through EngineSpan._x, which makes the span its own).
_NO_EXTRA = _Extra()


class _EventView:
    __slots__ = ("attributes", "dropped_attributes", "name", "timestamp")

    def __init__(self, name: str, timestamp: int, attributes: dict[str, Any], dropped: int) -> None:
        self.name = name
        self.timestamp = timestamp
        self.attributes = MappingProxyType(attributes)
        self.dropped_attributes = dropped


class _LinkView:
    __slots__ = ("attributes", "context", "dropped_attributes")

    def __init__(self, context: SpanContext, attributes: dict[str, Any], dropped: int) -> None:
        self.context = context
        self.attributes = MappingProxyType(attributes)
        self.dropped_attributes = dropped


def _valid_link(context: SpanContext | None, attributes: Mapping[str, Any] | None) -> bool:
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


def valid_links(links: Sequence[Link] | None) -> list[Link]:
    return [link for link in links or () if link and _valid_link(link.context, link.attributes)]


if not TYPE_CHECKING:
    # isinstance(span, opentelemetry.trace.Span) is True (get_current_span, use_span rely on it), without a __dict__.
    trace.Span.register(EngineSpan)
