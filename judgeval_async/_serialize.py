"""Bounded conversion of user values (function inputs and outputs) to a JSON string, on the caller's thread.

It is the only real work ``observe`` does for the user, so every dimension is capped: depth, total nodes, total
characters and time. Nothing here raises: a value that cannot be represented becomes a marker such as
``"<Foo>"``, a cycle becomes ``"<cycle>"``, a 100 MB string is cut to ``max_length`` characters (the slice copies
only what is kept) and ends with a ``…[truncated N chars]`` marker. Lone surrogates are replaced, because the OTLP
encoder would otherwise reject the whole span later. Each degradation is reported once per value, by reason.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEGRADE_REASONS", "RateLimitedLog", "SerializeLimits", "safe_json"]

logger = logging.getLogger(__name__)

DEGRADE_REASONS = ("truncated", "unserializable", "cyclic", "too_deep", "time_budget")
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
        # One string gets at most half the budget, and at least a short prefix even when the budget is spent.
        limit = self.limits.max_length
        room = max(_MIN_PREFIX, min(limit // 2, limit - self.chars))
        if len(s) > room:
            cut = len(s) - room
            s = s[:room] + f"…[truncated {cut} chars]"
            self.reasons.add("truncated")
        self.chars += len(s)
        return _clean_surrogates(s)

    def convert(self, value: Any, depth: int) -> Any:
        self.nodes += 1
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if -(2**63) <= value < 2**63:
                return value
            # str() of an int past 4300 digits raises (CPython's int/str DoS guard); never format a huge one.
            return self.text(str(value)) if value.bit_length() < 4096 else f"<int bits={value.bit_length()}>"
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<bytes len={len(value)}>"
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth)
        if depth >= self.limits.max_depth:
            self.reasons.add("too_deep")
            return f"<{type(value).__name__}>"
        is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
        if isinstance(value, (Mapping, list, tuple, set, frozenset)) or is_instance:
            key = id(value)
            if key in self.path:
                self.reasons.add("cyclic")
                return "<cycle>"
            self.path.add(key)
            try:
                return self._container(value, depth)
            finally:
                self.path.discard(key)
        self.reasons.add("unserializable")
        return f"<{type(value).__name__}>"

    def _container(self, value: Any, depth: int) -> Any:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if self.over_budget():
                    out["…"] = "[truncated]"
                    break
                key = self.text(k if isinstance(k, str) else str(k)[:256])
                out[key] = self.convert(v, depth + 1)
            return out
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out = {}
            for f in dataclasses.fields(value):
                if self.over_budget():
                    out["…"] = "[truncated]"
                    break
                out[f.name] = self.convert(getattr(value, f.name, None), depth + 1)
            return out
        items: list[Any] = []
        for v in value:
            if self.over_budget():
                items.append("…[truncated]")
                break
            items.append(self.convert(v, depth + 1))
        return items


def _clean_surrogates(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")
    return s


# One encoder for every call: json.dumps with non-default options builds a new JSONEncoder each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_FAST_MAX_ITEMS = 16
_INT_MIN, _INT_MAX = -(2**63), 2**63


def _fast_json(value: Any, limit: int) -> str | None:
    """The common case — a primitive, or a small flat dict/list of primitives and short ASCII strings — encoded
    directly in C. None means "take the bounded walk" (anything that might need a cap or a replacement)."""
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


def safe_json(value: Any, limits: SerializeLimits, on_degrade: Callable[[str], None] | None = None) -> str:
    """``value`` as a bounded JSON string. Never raises; reports each degradation reason once."""
    try:
        fast = _fast_json(value, limits.max_length)
    except Exception:  # a misbehaving subclass: the bounded walk handles it
        fast = None
    if fast is not None:
        return fast
    walk = _Walk(limits)
    try:
        data = walk.convert(value, 0)
        text = _ENCODER.encode(data)
    except Exception as exc:  # a user __eq__/__iter__/__len__ can raise anything; never let it reach the caller
        walk.reasons.add("unserializable")
        text = json.dumps(f"<{type(value).__name__}: {type(exc).__name__}>")
    if on_degrade is not None:
        for reason in walk.reasons:
            on_degrade(reason)
    return text


class RateLimitedLog:
    """Logs a warning at most once per ``interval`` seconds per key, so a hot-path problem cannot flood logs."""

    def __init__(self, log: logging.Logger | None = None, interval: float = 60.0) -> None:
        self._logger = log or logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.RLock()  # a signal handler or __del__ may log from inside warning() (re-entrancy)

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return
            self._last[key] = now
        self._logger.warning(msg, *args)
