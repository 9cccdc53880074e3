"""Bounded conversion of user values (function inputs and outputs, examples, names, tags) on the caller's thread.

It is the only real work ``observe`` does for the user, so every dimension is capped: depth, total nodes, total
characters and time. Nothing here raises, and nothing here runs the user's code: values are read with the
primitives of ``_introspection`` (the builtin types' own methods, never a subclass's override), so a sleeping
``items()``, ``__iter__``, ``__str__`` or ``__repr__`` is never called. What cannot be read that way becomes a
marker such as ``"<Foo>"`` (no ``repr``: that is user code too); dataclasses
and pydantic-style models keep their declared fields, read from the instance's own storage (properties and
``__getattr__`` are never called). A cycle becomes ``"<cycle>"``, a 100 MB string is cut to ``max_length``
characters (the slice copies only what is kept) and ends with a ``…[truncated N chars]`` marker. Lone surrogates
are replaced, because the OTLP encoder would otherwise reject the whole span later. Each degradation is reported
once per value, by reason.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._introspection import (
    SEQUENCES,
    VIEWS,
    declared_fields,
    field_values,
    key_text,
    placeholder,
    read_items,
    replace_surrogates,
    scalar_text,
    small_int_text,
    stdlib_text,
    str_copy,
    str_item,
    str_len,
    type_name,
)

__all__ = [
    "DEGRADE_REASONS",
    "RateLimitedLog",
    "SerializeLimits",
    "args_json",
    "bounded_text",
    "bounded_texts",
    "fast_json",
    "json_text",
    "safe_data",
    "safe_json",
    "utc_now_iso",
]

logger = logging.getLogger(__name__)

# "replaced": lone surrogates replaced by "?" (they cannot be encoded as UTF-8).
DEGRADE_REASONS = ("truncated", "unserializable", "cyclic", "too_deep", "time_budget", "replaced")
_MIN_PREFIX = 64  # characters every string keeps, however little budget is left
_CHECK_CLOCK_EVERY = 64  # nodes between clock reads: perf_counter is cheap, not free


@dataclass(frozen=True, slots=True)
class SerializeLimits:
    max_length: int = 32_768  # characters in the final string (approximately; markers may add a few)
    max_depth: int = 8
    max_items: int = 1000  # nodes in total, across all containers
    budget: float = 0.005  # seconds of work before the rest is cut


class _Walk:
    __slots__ = ("chars", "deadline", "limits", "nodes", "path", "reasons")

    def __init__(self, limits: SerializeLimits) -> None:
        self.limits = limits
        self.nodes = 0
        self.chars = 0
        self.path: set[int] = set()
        self.reasons: set[str] = set()
        self.deadline = time.perf_counter() + limits.budget

    def over_budget(self) -> bool:
        # Strings are cut individually (see text()); containers stop only past twice the budget, so one huge
        # argument cannot hide the small ones next to it.
        if self.nodes > self.limits.max_items or self.chars > 2 * self.limits.max_length:
            self.reasons.add("truncated")
            return True
        if self.nodes % _CHECK_CLOCK_EVERY == 0 and time.perf_counter() > self.deadline:
            self.reasons.add("time_budget")
            return True
        return False

    def text(self, s: str) -> str:
        """An exact, UTF-8-safe str. One string gets at most half the budget, and at least a short prefix even
        when the budget is spent. ``s`` may be a str subclass: only str's own methods are used."""
        limit = self.limits.max_length
        room = max(_MIN_PREFIX, min(limit // 2, limit - self.chars))
        n = str_len(s)
        if n > room:
            s = str_item(s, slice(0, room)) + f"…[truncated {n - room} chars]"
            self.reasons.add("truncated")
        elif type(s) is not str:
            s = str_copy(s)
        self.chars += len(s)
        s, replaced = replace_surrogates(s)
        if replaced:
            self.reasons.add("replaced")
        return s

    def opaque(self, value: object) -> str:
        self.reasons.add("unserializable")
        return placeholder(value)

    def convert(self, value: Any, depth: int) -> Any:
        self.nodes += 1
        kind = type(value)
        if value is None or kind is bool:
            return value
        if issubclass(kind, str):
            return self.text(value)
        if issubclass(kind, int):
            v = int.__int__(value)  # exact int: an IntEnum or int subclass, without its methods
            if -(2**63) <= v < 2**63:
                return v
            text = small_int_text(v)
            if text is not None:
                return self.text(text)
            self.reasons.add("truncated")
            return f"<int bits={v.bit_length()}>"
        if issubclass(kind, float):
            f = float.__float__(value)
            return f if math.isfinite(f) else float.__repr__(f)
        if issubclass(kind, (bytes, bytearray)):
            size = bytes.__len__(value) if issubclass(kind, bytes) else bytearray.__len__(value)
            return f"<bytes len={size}>"
        if kind is memoryview:
            return f"<bytes len={value.nbytes}>"
        if issubclass(kind, enum.Enum):
            return self.convert(object.__getattribute__(value, "_value_"), depth)
        known = stdlib_text(value, kind)
        if known is not None:
            return self.text(known)
        if depth >= self.limits.max_depth:
            self.reasons.add("too_deep")
            return placeholder(value)
        key = id(value)
        if key in self.path:
            self.reasons.add("cyclic")
            return "<cycle>"
        self.path.add(key)
        try:
            return self._container(value, kind, depth)
        finally:
            self.path.discard(key)

    def _container(self, value: Any, kind: type, depth: int) -> Any:
        if issubclass(kind, dict):
            return self._pairs(dict.items(value), depth)
        for base, iterate in SEQUENCES:
            if issubclass(kind, base):
                return self._sequence(iterate(value), depth)
        if any(kind is view for view in VIEWS):
            return self._sequence(iter(value), depth)
        names = declared_fields(kind)
        if names is not None:
            return self._pairs(field_values(value, kind, names), depth)
        return self.opaque(value)

    def _pairs(self, pairs: Any, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if self.over_budget():
                out["…"] = "[truncated]"
                break
            text = key_text(k)
            out[self.text(text) if text is not None else self.opaque(k)] = self.convert(v, depth + 1)
        return out

    def _sequence(self, it: Any, depth: int) -> list[Any]:
        items: list[Any] = []
        for v in it:
            if self.over_budget():
                items.append("…[truncated]")
                break
            items.append(self.convert(v, depth + 1))
        return items


# One encoder for every call: json.dumps with non-default options builds a new JSONEncoder each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# JSONEncoder.encode builds a new C encoder on every call (a few µs here): one, built once, for data we know is
# acyclic exact builtin types (what fast_json accepts, our own entries). Same output as _ENCODER.encode.
_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)  # the _json accelerator's (not in the stubs)
_C_ENCODE: Callable[[Any, int], Any] | None = (
    None
    if _make_encoder is None
    else _make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
)


_second_text: tuple[int, str] = (-1, "")  # (a Unix second, its "YYYY-MM-DDTHH:MM:SS" in UTC): one tuple, swapped whole


def utc_now_iso() -> str:
    """``datetime.now(timezone.utc).isoformat()``'s text (microseconds, "+00:00"), the date and time of day
    formatted once per second: the full call costs several times more, on every ``async_evaluate``."""
    global _second_text  # noqa: PLW0603 - a cache; the tuple is replaced atomically, any thread
    second, ns = divmod(time.time_ns(), 1_000_000_000)
    cached = _second_text
    if cached[0] != second:
        cached = _second_text = (second, _dt.datetime.fromtimestamp(second, _dt.timezone.utc).isoformat()[:19])
    micros = ns // 1000
    return f"{cached[1]}.{micros:06d}+00:00" if micros else f"{cached[1]}+00:00"


def json_text(value: Any) -> str:
    """Compact JSON of data we built ourselves or checked (exact builtin types, no cycles: no user code runs)."""
    if type(value) is str:
        return json.encoder.encode_basestring(value)
    if _C_ENCODE is None:  # pragma: no cover - CPython without its _json accelerator
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


_FAST_MAX_ITEMS = 16
_INT_MIN, _INT_MAX = -(2**63), 2**63


_encode_str = json.encoder.encode_basestring  # what _ENCODER (ensure_ascii=False) writes for a str


def fast_json(value: Any, limit: int) -> str | None:
    """The common case — a primitive, or a small flat dict/list of primitives and short ASCII strings — encoded
    directly in C. None means "take the bounded walk" (anything that might need a cap or a replacement).
    Exact types only, so no user code runs here either. A dict's keys count against ``limit`` like its strings."""
    kind = type(value)
    if kind is str:
        return _encode_str(value) if len(value) <= limit // 2 and value.isascii() else None
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value) if _INT_MIN <= value < _INT_MAX else None
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else None
    budget = limit
    if kind is dict:
        if len(value) > _FAST_MAX_ITEMS:
            return None
        for k in value:
            if type(k) is not str or not k.isascii():
                return None
            budget -= len(k)
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
        if len(value) > _FAST_MAX_ITEMS:
            return None
    else:
        return None
    for v in items:
        vk = type(v)
        if vk is str:
            budget -= len(v)
            if budget < 0 or not v.isascii():
                return None
        elif vk is int:
            if not _INT_MIN <= v < _INT_MAX:
                return None
        elif vk is float:
            if not math.isfinite(v):
                return None
        elif v is not None and vk is not bool:
            return None
    return json_text(value) if budget >= 0 else None


def args_json(keys: tuple[str, ...], args: tuple[Any, ...], start: int, limit: int) -> str | None:
    """``safe_json(dict(zip(names, args))[start:])``'s text when its fast path applies, without building the dict:
    ``keys`` are the names' JSON texts followed by ":" (each name a short ASCII identifier), ``args`` at most
    ``len(keys)`` values. None means "build the dict and take the general path". Exact types only."""
    parts: list[str] = []
    budget = limit
    for i in range(start, len(args)):
        v = args[i]
        vk = type(v)
        budget -= len(keys[i]) - 3  # the name, as fast_json counts a key ('"name":' is 3 more)
        if vk is str:
            budget -= len(v)
            if budget < 0 or not v.isascii():
                return None
            parts.append(keys[i] + _encode_str(v))
        elif vk is int:
            if not _INT_MIN <= v < _INT_MAX:
                return None
            parts.append(keys[i] + int.__repr__(v))
        elif v is None:
            parts.append(keys[i] + "null")
        elif vk is bool:
            parts.append(keys[i] + ("true" if v else "false"))
        elif vk is float and math.isfinite(v):
            parts.append(keys[i] + float.__repr__(v))
        else:
            return None
    return "{" + ",".join(parts) + "}" if budget >= 0 else None


def _report(reasons: set[str], on_degrade: Callable[[str], None] | None) -> None:
    if on_degrade is not None:
        for reason in reasons:
            on_degrade(reason)


def safe_data(value: Any, limits: SerializeLimits, on_degrade: Callable[[str], None] | None = None) -> Any:
    """``value`` as bounded JSON-ready data of exact builtin types only (dict/list/str/int/float/bool/None), so
    encoding it later (on the loop) runs no user code. Never raises; reports each degradation reason once."""
    walk = _Walk(limits)
    try:
        data = walk.convert(value, 0)
    except Exception as exc:  # e.g. a dict mutated by another thread while we read it
        walk.reasons.add("unserializable")
        data = f"{placeholder(value)[:-1]}: {type_name(type(exc))}>"
    _report(walk.reasons, on_degrade)
    return data


def safe_json(value: Any, limits: SerializeLimits, on_degrade: Callable[[str], None] | None = None) -> str:
    """``value`` as a bounded JSON string. Never raises; reports each degradation reason once."""
    try:
        fast = fast_json(value, limits.max_length)
    except Exception:  # pragma: no cover - exact builtin types only; kept as a guard
        fast = None
    if fast is not None:
        return fast
    walk = _Walk(limits)
    try:
        text = json_text(walk.convert(value, 0))  # exact builtin types, acyclic: the walk built them
    except Exception as exc:  # e.g. a dict mutated by another thread while we read it
        walk.reasons.add("unserializable")
        text = json.dumps(f"{placeholder(value)[:-1]}: {type_name(type(exc))}>")
    _report(walk.reasons, on_degrade)
    return text


def bounded_text(value: object, limit: int, on_degrade: Callable[[str], None] | None = None) -> str:
    """A name, key or tag as an exact str of at most ``limit`` characters, lone surrogates replaced.

    Strings (subclasses too, read with str's own methods), ints, floats, bools, None and enum members become their
    text; anything else becomes ``"<ClassName>"`` (``unserializable``): its ``__str__`` is user code. The cut is
    plain (no marker), so the result never exceeds ``limit``; it is reported ``truncated``.
    """
    if type(value) is str and len(value) <= limit and value.isascii():
        return value
    reasons: set[str] = set()
    try:
        text = scalar_text(value, type(value))
    except Exception:  # pragma: no cover - builtin accessors only
        text = None
    if text is None:
        reasons.add("unserializable")
        text = placeholder(value)
    if len(text) > limit:
        reasons.add("truncated")
        text = text[:limit]
    text, replaced = replace_surrogates(text)
    if replaced:
        reasons.add("replaced")
    _report(reasons, on_degrade)
    return text


def bounded_texts(
    values: object, limit: int, max_count: int, budget: float, on_degrade: Callable[[str], None] | None = None
) -> tuple[str, ...] | None:
    """Up to ``max_count`` texts (each as :func:`bounded_text`) from a str or from what :func:`read_items` reads;
    None if ``values`` cannot be read. Each degradation reason is reported once."""
    kind = type(values)
    if kind is list or kind is tuple:
        # The common case (tag(["web"])): short ASCII exact strs, no more than max_count; the copy is taken first
        # so another thread's mutation cannot slip a non-str past the check.
        copied: tuple[Any, ...] = tuple(values)  # type: ignore[arg-type]
        if len(copied) <= max_count:
            for v in copied:  # a loop, not all(<generator>): one or two tags is the usual call
                if type(v) is not str or len(v) > limit or not v.isascii():
                    break
            else:
                return copied
    reasons: set[str] = set()
    if issubclass(type(values), str):
        out: tuple[str, ...] | None = (bounded_text(values, limit, reasons.add),)
    else:
        items = read_items(values, max_count, budget, reasons.add)
        out = None if items is None else tuple([bounded_text(v, limit, reasons.add) for v in items])
    _report(reasons, on_degrade)
    return out


class RateLimitedLog:
    """Logs a warning at most once per ``interval`` seconds per key, so a hot-path problem cannot flood logs."""

    def __init__(self, log: logging.Logger | None = None, interval: float = 60.0) -> None:
        self._logger = log or logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.RLock()  # a signal handler or __del__ may log from inside warning() (re-entrancy)

    def after_fork_in_child(self) -> None:
        """A lock copied from the parent may be held by a thread that does not exist here: replace it."""
        self._lock = threading.RLock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return
            self._last[key] = now
        self._logger.warning(msg, *args)
