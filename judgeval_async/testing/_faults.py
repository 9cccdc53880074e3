"""Fault injection: the `Fault` vocabulary and the thread-safe table that applies it per request.

A scope is either one endpoint or the whole server (`None`). A scope holds at most one fault of each
kind, so "latency on every endpoint" and "503 on traces" coexist. For a request, each kind is looked
up in the endpoint's scope first and then in the global scope; the delays (`latency`, `slow_body`)
all apply, a `body_limit` refuses an oversized body once it is read, and otherwise the first terminal
kind in `TERMINAL_ORDER` decides the answer.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, cast, get_args

FaultKind = Literal["latency", "status", "ratio", "blackhole", "reset", "refuse", "slow_body", "body_limit"]
RatioMode = Literal["status", "timeout", "reset"]
Action = Literal["pass", "status", "blackhole", "reset"]

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
RATIO_MODES: tuple[str, ...] = get_args(RatioMode)
# Only one terminal fault can answer a request; the harshest wins.
TERMINAL_ORDER: tuple[FaultKind, ...] = ("blackhole", "reset", "status", "ratio")
_CONSULT_ORDER: tuple[FaultKind, ...] = ("latency", "slow_body", "body_limit", *TERMINAL_ORDER)
_RATIO_ACTIONS: dict[str, Action] = {"status": "status", "timeout": "blackhole", "reset": "reset"}


def format_retry_after(value: str | float | None) -> str | None:
    """Render a Retry-After value: seconds as a number become an integer-looking header if whole."""
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour; `kind` says which, and only the fields listed for it matter.

    - ``latency``: sleep ``seconds`` before answering, or a uniform draw from ``range=(lo, hi)``.
      Stacks with every other kind.
    - ``status``: answer ``status`` (429, 500, 503, 413, ...) with ``body`` (default: a JSON
      ``{"detail": ...}``) of ``content_type``, plus ``Retry-After: retry_after`` if given. The
      request is not recorded as data.
    - ``ratio``: a fraction ``ratio`` of requests fails, one RNG draw per request. ``mode="status"``
      answers like ``status`` does (default 503), ``"timeout"`` black-holes, ``"reset"`` resets.
    - ``blackhole``: read the whole request and never answer; the connection stays open until the
      client gives up or the server stops, so the client hits its read timeout.
    - ``reset``: read the whole request, then abort the connection with a TCP RST.
    - ``refuse`` (global only): close the listening socket and drop open connections, so connects
      fail with ECONNREFUSED; the same port is reopened when the fault is cleared or recovers.
      It sees no requests, so it accepts only ``recover_after_seconds``.
    - ``slow_body``: read the body ``chunk_size`` bytes at a time and sleep ``chunk_delay`` per
      chunk; stacks with every other kind. A body larger than the socket buffers also stalls the
      client's upload.
    - ``body_limit``: a receiver's request size limit (nginx's ``client_max_body_size``): a body of more
      than ``max_bytes`` bytes, as sent (compressed, if it was), is answered 413 as soon as it is read,
      before any delay or terminal kind; smaller ones go on as if the fault were absent.

    Recovery, for every kind: ``recover_after_requests=N`` applies the fault to the next N
    requests it is consulted on (a request counts even when another terminal fault answered it),
    then removes it; ``recover_after_seconds=T`` removes it T seconds after it was set. The first
    to trigger wins.
    """

    kind: FaultKind
    seconds: float = 0.0
    range: tuple[float, float] | None = None
    status: int = 503
    retry_after: str | None = None
    body: str | None = None
    content_type: str = "application/json"
    ratio: float = 0.0
    mode: RatioMode = "status"
    chunk_delay: float = 0.0
    chunk_size: int = 1024
    max_bytes: int = 0
    recover_after_requests: int | None = None
    recover_after_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind: expected one of {FAULT_KINDS}, got {self.kind!r}")
        if self.kind == "latency":
            if self.range is not None:
                lo, hi = self.range
                if not 0 <= lo <= hi:
                    raise ValueError(f"range: expected 0 <= lo <= hi, got {self.range!r}")
            elif not self.seconds > 0:
                raise ValueError(f"seconds: latency needs seconds > 0, got {self.seconds!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status: expected an HTTP status 100-599, got {self.status!r}")
        if self.kind == "ratio" and not 0 <= self.ratio <= 1:
            raise ValueError(f"ratio: expected 0 <= ratio <= 1, got {self.ratio!r}")
        if self.mode not in RATIO_MODES:
            raise ValueError(f"mode: expected one of {RATIO_MODES}, got {self.mode!r}")
        if self.kind == "slow_body" and not self.chunk_delay > 0:
            raise ValueError(f"chunk_delay: slow_body needs chunk_delay > 0, got {self.chunk_delay!r}")
        if self.kind == "body_limit" and not self.max_bytes >= 1:
            raise ValueError(f"max_bytes: body_limit needs max_bytes >= 1, got {self.max_bytes!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size: expected >= 1, got {self.chunk_size!r}")
        if self.recover_after_requests is not None:
            if self.kind == "refuse":
                raise ValueError("recover_after_requests: a refused connect is never a request")
            if self.recover_after_requests < 1:
                raise ValueError(f"recover_after_requests: expected >= 1, got {self.recover_after_requests!r}")
        if self.recover_after_seconds is not None and not self.recover_after_seconds > 0:
            raise ValueError(f"recover_after_seconds: expected > 0, got {self.recover_after_seconds!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from JSON data (the control endpoint); bad or unknown keys: ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault fields: {unknown}")
        try:
            values = dict(data)
            if values.get("range") is not None:
                lo, hi = values["range"]
                values["range"] = (float(lo), float(hi))
            if "retry_after" in values:
                values["retry_after"] = format_retry_after(values["retry_after"])
            return cls(**values)
        except TypeError as exc:  # a missing `kind`, or a field of the wrong type
            raise ValueError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults, for stats and logs."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "kind" and value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Decision:
    """What the server does to one request: delays first, then `action`."""

    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_size: int = 0
    max_body_bytes: int = 0  # a body_limit fault: bodies over this many bytes get a 413 (0: no limit)
    action: Action = "pass"
    status: int = 0
    retry_after: str | None = None
    body: str | None = None
    content_type: str = "application/json"


PASS = Decision()


@dataclass
class _Armed:
    fault: Fault
    expires_at: float | None
    served: int = 0


class FaultTable:
    """Per-scope faults with their recovery counters; every method is thread-safe.

    With a `seed`, the RNG draws are reproducible: per request, one `uniform(lo, hi)` for a
    latency range, then one `random() < ratio` for a ratio fault, in arrival order.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._scopes: dict[str | None, dict[str, _Armed]] = {}

    def set(self, endpoint: str | None, fault: Fault) -> None:
        """Install `fault` in a scope, replacing the one of the same kind there."""
        if fault.kind == "refuse" and endpoint is not None:
            raise ValueError("refuse: only a global fault (endpoint=None) can refuse connects")
        after = fault.recover_after_seconds
        armed = _Armed(fault, None if after is None else time.monotonic() + after)
        with self._lock:
            self._scopes.setdefault(endpoint, {})[fault.kind] = armed

    def clear(self, endpoint: str | None = None) -> None:
        """Remove the faults of one endpoint's scope, or of every scope when `endpoint` is None."""
        with self._lock:
            if endpoint is None:
                self._scopes.clear()
            else:
                self._scopes.pop(endpoint, None)

    def snapshot(self) -> dict[str, list[Fault]]:
        """Active faults by scope; the global scope is keyed ``"*"``."""
        now = time.monotonic()
        with self._lock:
            return {
                "*" if scope is None else scope: [a.fault for a in kinds.values() if _live(a, now)]
                for scope, kinds in self._scopes.items()
                if any(_live(a, now) for a in kinds.values())
            }

    def refuse_state(self) -> tuple[bool, float | None]:
        """Whether connects must be refused now, and the seconds until that recovers (if timed)."""
        now = time.monotonic()
        with self._lock:
            armed = self._lookup(None, "refuse", now)
            if armed is None:
                return False, None
            return True, None if armed.expires_at is None else max(0.0, armed.expires_at - now)

    def decide(self, endpoint: str) -> Decision:
        """Consult (and count) every fault that applies to one request on `endpoint`."""
        now = time.monotonic()
        chosen: dict[str, Fault] = {}
        with self._lock:
            for kind in _CONSULT_ORDER:
                armed = self._lookup(endpoint, kind, now)
                if armed is None:
                    continue
                armed.served += 1
                limit = armed.fault.recover_after_requests
                if limit is not None and armed.served >= limit:
                    self._remove(armed)
                chosen[kind] = armed.fault
            if not chosen:
                return PASS
            delay = 0.0
            latency = chosen.get("latency")
            if latency is not None:
                bounds = latency.range
                delay = latency.seconds if bounds is None else self._rng.uniform(*bounds)
            ratio = chosen.get("ratio")
            ratio_hit = ratio is not None and self._rng.random() < ratio.ratio
        slow = chosen.get("slow_body")
        body_limit = chosen.get("body_limit")
        decision = Decision(
            delay=delay,
            chunk_delay=0.0 if slow is None else slow.chunk_delay,
            chunk_size=0 if slow is None else slow.chunk_size,
            max_body_bytes=0 if body_limit is None else body_limit.max_bytes,
        )
        for kind in TERMINAL_ORDER:
            fault = chosen.get(kind)
            if fault is None or (kind == "ratio" and not ratio_hit):
                continue
            action: Action = cast(Action, kind) if kind != "ratio" else _RATIO_ACTIONS[fault.mode]
            return Decision(
                delay=decision.delay,
                chunk_delay=decision.chunk_delay,
                chunk_size=decision.chunk_size,
                max_body_bytes=decision.max_body_bytes,
                action=action,
                status=fault.status,
                retry_after=fault.retry_after,
                body=fault.body,
                content_type=fault.content_type,
            )
        return decision

    def _lookup(self, endpoint: str | None, kind: str, now: float) -> _Armed | None:
        # Caller holds the lock. Expired faults are dropped here, so the global one shows through.
        for scope in (endpoint, None) if endpoint is not None else (None,):
            armed = self._scopes.get(scope, {}).get(kind)
            if armed is None:
                continue
            if _live(armed, now):
                return armed
            self._remove(armed)
        return None

    def _remove(self, armed: _Armed) -> None:
        for scope, kinds in list(self._scopes.items()):
            if kinds.get(armed.fault.kind) is armed:
                del kinds[armed.fault.kind]
                if not kinds:
                    del self._scopes[scope]


def _live(armed: _Armed, now: float) -> bool:
    return armed.expires_at is None or now < armed.expires_at


def chunk_count(size: int, chunk_size: int) -> int:
    """How many `chunk_size` pieces a `size`-byte read is paced as."""
    return max(1, math.ceil(size / chunk_size))
