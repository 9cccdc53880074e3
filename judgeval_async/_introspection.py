"""Reading user objects without running their code: the primitives ``_serialize`` and the tracer build on.

A value handed to the SDK is read only through the builtin types' own methods (``dict.__iter__(d)``,
``list.__iter__(v)``, ``str.__getitem__(s, ...)``, the C descriptors of ``__dict__`` and ``__slots__``), never through
methods a subclass or class may define: a sleeping or raising ``items()``, ``__iter__``, ``__str__``, ``__repr__``,
``__getattr__`` or property is never called. What cannot be read that way is described by its class name
(:func:`placeholder`). The one deliberate exception is :func:`read_items` on a generator: its body is the caller's
own code by design, bounded by count and time.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import itertools
import pathlib
import time
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "SEQUENCES",
    "VIEWS",
    "declared_fields",
    "field_values",
    "key_text",
    "placeholder",
    "read_items",
    "replace_surrogates",
    "scalar_text",
    "small_int_text",
    "stdlib_text",
    "stored_attributes",
    "str_copy",
    "str_item",
    "str_len",
    "type_name",
]

_TYPE_NAME_MAX = 128  # characters of a class name in a "<Foo>" marker (type("x" * 10**8, (), {}) exists)
_KEY_REPR_MAX = 4096  # a tuple key is rendered only if its strings are this short in total

# The builtin types' own accessors: calling these never dispatches to a subclass override.
type_name = type.__dict__["__name__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_ns = type.__dict__["__dict__"].__get__
str_len = str.__len__
str_copy = str.__str__  # an exact str with the same characters, for a str subclass
str_item = str.__getitem__
_NoneType = type(None)


def placeholder(value: object) -> str:
    """``"<ClassName>"`` for any value, without calling its code (name capped, surrogates replaced)."""
    try:
        name = type_name(type(value))
        if str_len(name) > _TYPE_NAME_MAX:
            name = str_item(name, slice(0, _TYPE_NAME_MAX))
        return "<" + replace_surrogates(name)[0] + ">"
    except Exception:  # pragma: no cover - a type always has a str __name__
        return "<object>"


def replace_surrogates(s: str) -> tuple[str, bool]:
    """(``s`` with lone surrogates replaced by "?", whether any was). ``s`` must be an exact str."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8"), True
    return s, False


def small_int_text(v: int) -> str | None:
    # str() of an int past 4300 digits raises (CPython's int/str DoS guard), and is quadratic below it.
    return str(v) if v.bit_length() < 4096 else None


def scalar_text(value: object, kind: type) -> str | None:
    """The text of a scalar whose str() is builtin code (an exact str, never a subclass's), else None."""
    if issubclass(kind, str):
        return value if kind is str else str_copy(value)  # type: ignore[return-value]
    if kind is bool or value is None:
        return str(value)
    if issubclass(kind, int):
        return small_int_text(int.__int__(value))  # type: ignore[arg-type]
    if issubclass(kind, float):
        return float.__repr__(value)
    if issubclass(kind, enum.Enum):
        return f"{type_name(kind)}.{object.__getattribute__(value, '_name_')}"
    return None


def key_text(key: object) -> str | None:
    """A mapping key as text, as ``str(key)`` would give it, but only where that runs no user code."""
    kind = type(key)
    text = scalar_text(key, kind)
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
SEQUENCES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (list, list.__iter__),
    (tuple, tuple.__iter__),
    (set, set.__iter__),
    (frozenset, frozenset.__iter__),
    (deque, deque.__iter__),
)
VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))  # exact types: builtin iteration
# Looked up by id: hashing or comparing a user class could run its metaclass's __hash__/__eq__.
_STR_SAFE_BY_ID = {id(k): f for k, f in _STR_SAFE.items()}


def stdlib_text(value: object, kind: type) -> str | None:
    """The usual text of a datetime/Decimal/UUID/path/complex (exact types: stdlib code only), else None."""
    render = _STR_SAFE_BY_ID.get(id(kind))
    return None if render is None else render(value)


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


def declared_fields(kind: type) -> tuple[str, ...] | None:
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


def field_values(value: object, kind: type, names: tuple[str, ...]) -> list[tuple[str, Any]]:
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
        for base, iterate in SEQUENCES:
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


def stored_attributes(value: object, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes ``names`` of ``value`` that are plain stored data: in the instance ``__dict__`` or a slot,
    else a str/int/float/bool class attribute. Properties, descriptors and ``__getattr__`` are never called."""
    kind = type(value)
    found = dict(field_values(value, kind, names))
    for name in names:
        if name not in found:
            v = _class_attr(kind, name)
            if type(v) in (str, int, float, bool):
                found[name] = v
    return found
