"""Bounded conversion of user values (function inputs and outputs, examples, names, tags) on the caller's thread.

It is the only real work ``observe`` does for the user, so every dimension is capped: depth, total nodes, total
characters and time. Nothing here raises, and nothing here runs the user's code: a value is read only through the
builtin types' own methods (``dict.items(d)``, ``list.__iter__(v)``, ``str.__getitem__(s, ...)``), never through
methods a subclass may override, so a sleeping ``items()``, ``__iter__``, ``__str__`` or ``__repr__`` is never called.
What cannot be read that way becomes a marker such as ``"<Foo>"`` (no ``repr``: that is user code too); dataclasses
and pydantic-style models keep their declared fields, read from the instance's own storage (properties and
``__getattr__`` are never called). A cycle becomes ``"<cycle>"``, a 100 MB string is cut to ``max_length``
characters (the slice copies only what is kept) and ends with a ``…[truncated N chars]`` marker. Lone surrogates
are replaced, because the OTLP encoder would otherwise reject the whole span later. Each degradation is reported
once per value, by reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import itertools
import json
import logging
import math
import pathlib
import threading
import time
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEGRADE_REASONS",
    "RateLimitedLog",
    "SerializeLimits",
    "bounded_text",
    "bounded_texts",
    "placeholder",
    "read_items",
    "safe_data",
    "safe_json",
    "stored_attributes",
]

logger = logging.getLogger(__name__)

# "replaced": lone surrogates replaced by "?" (they cannot be encoded as UTF-8).
DEGRADE_REASONS = ("truncated", "unserializable", "cyclic", "too_deep", "time_budget", "replaced")
_MIN_PREFIX = 64  # characters every string keeps, however little budget is left
_CHECK_CLOCK_EVERY = 64  # nodes between clock reads: perf_counter is cheap, not free
_TYPE_NAME_MAX = 128  # characters of a class name in a "<Foo>" marker (type("x" * 10**8, (), {}) exists)
_KEY_REPR_MAX = 4096  # a tuple key is rendered only if its strings are this short in total

# The builtin types' own accessors: calling these never dispatches to a subclass override.
_type_name = type.__dict__["__name__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_ns = type.__dict__["__dict__"].__get__
_str_len = str.__len__
_str_copy = str.__str__  # an exact str with the same characters, for a str subclass
_str_item = str.__getitem__
_dict_items = dict.items
_NoneType = type(None)


@dataclass(frozen=True, slots=True)
class SerializeLimits:
    max_length: int = 32_768  # characters in the final string (approximately; markers may add a few)
    max_depth: int = 8
    max_items: int = 1000  # nodes in total, across all containers
    budget: float = 0.005  # seconds of work before the rest is cut


def placeholder(value: object) -> str:
    """``"<ClassName>"`` for any value, without calling its code (name capped, surrogates replaced)."""
    try:
        name = _type_name(type(value))
        if _str_len(name) > _TYPE_NAME_MAX:
            name = _str_item(name, slice(0, _TYPE_NAME_MAX))
        return "<" + _replace_surrogates(name)[0] + ">"
    except Exception:  # pragma: no cover - a type always has a str __name__
        return "<object>"


def _replace_surrogates(s: str) -> tuple[str, bool]:
    """(``s`` with lone surrogates replaced by "?", whether any was). ``s`` must be an exact str."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8"), True
    return s, False


def _small_int_text(v: int) -> str | None:
    # str() of an int past 4300 digits raises (CPython's int/str DoS guard), and is quadratic below it.
    return str(v) if v.bit_length() < 4096 else None


def _safe_str_of(value: object, kind: type) -> str | None:
    """The text of a scalar whose str() is builtin code (an exact str, never a subclass's), else None."""
    if issubclass(kind, str):
        return value if kind is str else _str_copy(value)  # type: ignore[return-value]
    if kind is bool or value is None:
        return str(value)
    if issubclass(kind, int):
        return _small_int_text(int.__int__(value))  # type: ignore[arg-type]
    if issubclass(kind, float):
        return float.__repr__(value)
    if issubclass(kind, enum.Enum):
        return f"{_type_name(kind)}.{object.__getattribute__(value, '_name_')}"
    return None


def _key_text(key: object) -> str | None:
    """A mapping key as text, as ``str(key)`` would give it, but only where that runs no user code."""
    kind = type(key)
    text = _safe_str_of(key, kind)
    if text is not None or kind is not tuple:
        return text
    total = 0
    for e in key:  # type: ignore[attr-defined]  # an exact tuple: builtin iteration
        ek = type(e)
        if ek is str:
            total += len(e)
        elif ek is int:
            if e.bit_length() >= 4096:
                return None
        elif ek not in (float, bool, _NoneType):
            return None
    return repr(key) if total <= _KEY_REPR_MAX else None


def _tz_safe(value: datetime.datetime | datetime.time) -> Any:
    # isoformat() calls tzinfo.utcoffset(): user code unless the tzinfo is the stdlib's own.
    tz = value.tzinfo
    if tz is None or type(tz) is datetime.timezone or type(tz).__module__ == "zoneinfo":
        return value
    return value.replace(tzinfo=None)


# Types whose text is stdlib code, rendered by exact type only (a subclass may override __str__).
_STR_SAFE: dict[type, Callable[[Any], str]] = {
    datetime.datetime: lambda v: datetime.datetime.isoformat(_tz_safe(v)),
    datetime.date: datetime.date.isoformat,
    datetime.time: lambda v: datetime.time.isoformat(_tz_safe(v)),
    datetime.timedelta: datetime.timedelta.__str__,
    decimal.Decimal: decimal.Decimal.__str__,
    uuid.UUID: uuid.UUID.__str__,
    complex: complex.__repr__,
    pathlib.PurePosixPath: pathlib.PurePath.__str__,
    pathlib.PureWindowsPath: pathlib.PurePath.__str__,
    pathlib.PosixPath: pathlib.PurePath.__str__,
    pathlib.WindowsPath: pathlib.PurePath.__str__,
}
_SEQUENCES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (list, list.__iter__),
    (tuple, tuple.__iter__),
    (set, set.__iter__),
    (frozenset, frozenset.__iter__),
    (deque, deque.__iter__),
)
_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))  # exact types: builtin iteration
# Looked up by id: hashing or comparing a user class could run its metaclass's __hash__/__eq__.
_STR_SAFE_BY_ID = {id(k): f for k, f in _STR_SAFE.items()}

# Field names of model-like classes, per class (by identity: hashing a class may run a metaclass's __hash__).
_FIELDS_CACHE: dict[int, tuple[type, tuple[str, ...] | None]] = {}
_FIELDS_CACHE_MAX = 512


def _class_attr(kind: type, name: str) -> Any:
    """``name`` as found in the class namespaces along the MRO, without running descriptors or __getattr__."""
    for klass in _type_mro(kind):
        ns = _type_ns(klass)
        if name in ns:
            return ns[name]
    return None


def _declared_fields(kind: type) -> tuple[str, ...] | None:
    """The field names of a dataclass or pydantic (v1/v2) model class, else None. Reads class namespaces only."""
    hit = _FIELDS_CACHE.get(id(kind))
    if hit is not None and hit[0] is kind:
        return hit[1]
    names: tuple[str, ...] | None = None
    try:
        dc = _class_attr(kind, "__dataclass_fields__")
        if type(dc) is dict:
            names = tuple(f.name for f in dataclasses.fields(kind))
        else:
            for attr in ("__pydantic_fields__", "__fields__"):
                declared = _class_attr(kind, attr)
                if type(declared) is dict:
                    names = tuple(k for k in declared if type(k) is str)
                    break
    except Exception:
        names = None
    if len(_FIELDS_CACHE) >= _FIELDS_CACHE_MAX:
        _FIELDS_CACHE.clear()
    _FIELDS_CACHE[id(kind)] = (kind, names)
    return names


_MISSING = object()


def _field_values(value: object, kind: type, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(name, stored value) for each declared field, read from the instance ``__dict__`` or a ``__slots__`` member
    through the C descriptors; a field behind anything else (a property, ``__getattr__``) is left out."""
    descr = _class_attr(kind, "__dict__")
    storage = descr.__get__(value, kind) if type(descr) is types.GetSetDescriptorType else None
    if type(storage) is not dict:
        storage = None
    out = []
    for name in names:
        v = storage.get(name, _MISSING) if storage is not None else _MISSING
        if v is _MISSING:
            slot = _class_attr(kind, name)
            if type(slot) is types.MemberDescriptorType:
                try:
                    v = slot.__get__(value, kind)
                except AttributeError:  # an unset slot
                    continue
            else:
                continue
        out.append((name, v))
    return out


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
        n = _str_len(s)
        if n > room:
            s = _str_item(s, slice(0, room)) + f"…[truncated {n - room} chars]"
            self.reasons.add("truncated")
        elif type(s) is not str:
            s = _str_copy(s)
        self.chars += len(s)
        s, replaced = _replace_surrogates(s)
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
            text = _small_int_text(v)
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
        safe_str = _STR_SAFE_BY_ID.get(id(kind))
        if safe_str is not None:
            return self.text(safe_str(value))
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
            return self._pairs(_dict_items(value), depth)
        for base, iterate in _SEQUENCES:
            if issubclass(kind, base):
                return self._sequence(iterate(value), depth)
        if any(kind is view for view in _VIEWS):
            return self._sequence(iter(value), depth)
        names = _declared_fields(kind)
        if names is not None:
            return self._pairs(_field_values(value, kind, names), depth)
        return self.opaque(value)

    def _pairs(self, pairs: Any, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if self.over_budget():
                out["…"] = "[truncated]"
                break
            text = _key_text(k)
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
_FAST_MAX_ITEMS = 16
_INT_MIN, _INT_MAX = -(2**63), 2**63


def _fast_json(value: Any, limit: int) -> str | None:
    """The common case — a primitive, or a small flat dict/list of primitives and short ASCII strings — encoded
    directly in C. None means "take the bounded walk" (anything that might need a cap or a replacement).
    Exact types only, so no user code runs here either."""
    kind = type(value)
    if kind is str:
        return _ENCODER.encode(value) if len(value) <= limit // 2 and value.isascii() else None
    if value is None or kind is bool:
        return _ENCODER.encode(value)
    if kind is int:
        return str(value) if _INT_MIN <= value < _INT_MAX else None
    if kind is float:
        return repr(value) if math.isfinite(value) else None
    if kind is dict:
        items = value.values()
        if len(value) > _FAST_MAX_ITEMS or not all(type(k) is str and k.isascii() for k in value):
            return None
    elif kind is list or kind is tuple:
        items = value
        if len(value) > _FAST_MAX_ITEMS:
            return None
    else:
        return None
    budget = limit
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
    return _ENCODER.encode(value)


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
        data = f"{placeholder(value)[:-1]}: {_type_name(type(exc))}>"
    _report(walk.reasons, on_degrade)
    return data


def safe_json(value: Any, limits: SerializeLimits, on_degrade: Callable[[str], None] | None = None) -> str:
    """``value`` as a bounded JSON string. Never raises; reports each degradation reason once."""
    try:
        fast = _fast_json(value, limits.max_length)
    except Exception:  # pragma: no cover - exact builtin types only; kept as a guard
        fast = None
    if fast is not None:
        return fast
    walk = _Walk(limits)
    try:
        text = _ENCODER.encode(walk.convert(value, 0))
    except Exception as exc:  # e.g. a dict mutated by another thread while we read it
        walk.reasons.add("unserializable")
        text = json.dumps(f"{placeholder(value)[:-1]}: {_type_name(type(exc))}>")
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
        text = _safe_str_of(value, type(value))
    except Exception:  # pragma: no cover - builtin accessors only
        text = None
    if text is None:
        reasons.add("unserializable")
        text = placeholder(value)
    if len(text) > limit:
        reasons.add("truncated")
        text = text[:limit]
    text, replaced = _replace_surrogates(text)
    if replaced:
        reasons.add("replaced")
    _report(reasons, on_degrade)
    return text


_BUILTIN_CODE = (types.WrapperDescriptorType, types.MethodDescriptorType, types.BuiltinFunctionType)


def read_items(
    values: object, max_count: int, budget: float, on_degrade: Callable[[str], None] | None = None
) -> list[Any] | None:
    """At most ``max_count`` items of ``values``, never reading more than one past that (``itertools.count()``
    included); the cut is reported ``truncated``. None if ``values`` cannot be read without running user code.

    A list/tuple/set/frozenset/dict/deque (subclasses too) is read by its base type's own iterator. An iterator or
    iterable of a builtin type (a generator, ``map``, ``itertools.count``, ...) is read with ``next()``: a generator's
    body is the caller's own code by design, so it is bounded by count and, between items, by ``budget`` seconds
    (``time_budget``). Anything else (a class with its own ``__iter__``) is not iterated.
    """
    kind = type(values)
    deadline = -1.0
    it: Iterator[Any] | None = None
    if issubclass(kind, dict):
        it = dict.__iter__(values)  # type: ignore[arg-type]
    else:
        for base, iterate in _SEQUENCES:
            if issubclass(kind, base):
                it = iterate(values)
                break
    if it is None:
        if type(_class_attr(kind, "__iter__")) not in _BUILTIN_CODE:
            if on_degrade is not None:
                on_degrade("unserializable")
            return None
        it = iter(values)  # type: ignore[call-overload]
        if type(_class_attr(type(it), "__next__")) not in _BUILTIN_CODE:
            if on_degrade is not None:
                on_degrade("unserializable")
            return None
        deadline = time.perf_counter() + budget
    out: list[Any] = []
    for v in itertools.islice(it, max_count + 1):
        if len(out) == max_count:
            if on_degrade is not None:
                on_degrade("truncated")
            break
        out.append(v)
        if deadline >= 0 and time.perf_counter() > deadline:
            if on_degrade is not None:
                on_degrade("time_budget")
            break
    return out


def bounded_texts(
    values: object, limit: int, max_count: int, budget: float, on_degrade: Callable[[str], None] | None = None
) -> tuple[str, ...] | None:
    """Up to ``max_count`` texts (each as :func:`bounded_text`) from a str or from what :func:`read_items` reads;
    None if ``values`` cannot be read. Each degradation reason is reported once."""
    reasons: set[str] = set()
    if issubclass(type(values), str):
        out: tuple[str, ...] | None = (bounded_text(values, limit, reasons.add),)
    else:
        items = read_items(values, max_count, budget, reasons.add)
        out = None if items is None else tuple([bounded_text(v, limit, reasons.add) for v in items])
    _report(reasons, on_degrade)
    return out


def stored_attributes(value: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes ``names`` of ``value`` that are plain stored data: in the instance ``__dict__`` or a slot,
    else a str/int/float/bool class attribute. Properties, descriptors and ``__getattr__`` are never called."""
    kind = type(value)
    found = dict(_field_values(value, kind, names))
    for name in names:
        if name not in found:
            v = _class_attr(kind, name)
            if type(v) in (str, int, float, bool):
                found[name] = v
    return found


class RateLimitedLog:
    """Logs a warning at most once per ``interval`` seconds per key, so a hot-path problem cannot flood logs."""

    def __init__(self, log: logging.Logger | None = None, interval: float = 60.0) -> None:
        self._logger = log or logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return
            self._last[key] = now
        self._logger.warning(msg, *args)
