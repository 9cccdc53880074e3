"""Bounded per-span internal state (seed Problem 3).

Judgeval keeps internal attributes per live span, keyed by (trace_id, span_id), and forgets them only when the span
ends: a span that never ends leaked its entry forever. Here the store is bounded two ways, both enforced on insert,
so no background thread is needed:

- **count**: at most ``max_entries``; inserting one more evicts the least recently *inserted* entry (``lru``);
- **age**: entries older than ``ttl`` seconds are evicted (``ttl``) by the insert that finds them at the front.

Insertion order equals age order, so both checks look only at the front of an ``OrderedDict``: O(1) amortised.
Every eviction is counted by reason. A span whose entry was evicted still exports; it only loses its internal
attributes.

Re-entrance (a signal handler or a GC callback tracing on a thread that is inside this store's lock): the lock is
re-entrant and updates set ``_busy``; a call that finds it set does nothing (its attribute is lost, counted as the
eviction reason ``reentrant``) rather than deadlock or interleave with the interrupted update. Evicted and replaced
values are released after the lock, where their ``__del__`` may run.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["SpanMetadataStore"]

SpanKey = tuple[int, int]


class SpanMetadataStore:
    """Thread-safe, bounded map from a live span to its internal attributes."""

    def __init__(
        self,
        max_entries: int,
        ttl: float,
        on_evict: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._on_evict = on_evict
        self._clock = clock
        self._entries: OrderedDict[SpanKey, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.RLock()
        self._busy = False  # an update is in progress on the thread holding the lock (see the module docstring)

    def __len__(self) -> int:
        return len(self._entries)

    def after_fork_in_child(self) -> None:
        """A lock copied from the parent may be held by a thread that does not exist here: replace it."""
        self._lock = threading.RLock()
        self._busy = False

    def open(self, key: SpanKey) -> None:
        """Create the entry for a span that just started, evicting expired and overflowing entries."""
        self._open(key, None, None)

    def set(self, key: SpanKey, name: str, value: Any, *, create: bool = True) -> bool:
        """Set one internal attribute, creating the span's entry on first use (unless ``create=False``).

        Entries are created lazily, so the common span — one with no internal attributes — costs nothing here.
        Returns False if there is no entry and none was created.
        """
        old: Any = None  # a replaced value, released after the lock
        with self._lock:
            if self._busy:
                reentered = True
            else:
                reentered = False
                try:
                    self._busy = True
                    entry = self._entries.get(key)
                    if entry is not None:
                        old = entry[1].get(name)
                        entry[1][name] = value
                        return True
                finally:
                    self._busy = False
        if reentered:
            self._count("reentrant", 1)
            return False
        del old
        if not create:
            return False
        return self._open(key, name, value)

    def pop(self, key: SpanKey) -> dict[str, Any] | None:
        """Remove and return the span's attributes when it ends (None if it had none or was evicted)."""
        if not self._entries:  # the common case, checked without the lock: no span has internal attributes
            return None
        with self._lock:
            if self._busy:
                entry = None
                reentered = True
            else:
                reentered = False
                try:
                    self._busy = True
                    entry = self._entries.pop(key, None)
                finally:
                    self._busy = False
        if reentered:
            self._count("reentrant", 1)  # the entry stays until the ttl or lru eviction collects it
            return None
        if entry is None or not entry[1]:
            return None
        return entry[1]

    def clear(self) -> None:
        with self._lock:
            busy, self._busy = self._busy, True
            try:
                entries, self._entries = self._entries, OrderedDict()
            finally:
                self._busy = busy
        entries.clear()  # outside the lock: a value's __del__ may trace

    # ------------------------------------------------------------------ internals
    def _open(self, key: SpanKey, name: str | None, value: Any) -> bool:
        now = self._clock()
        evicted: list[tuple[float, dict[str, Any]]] = []  # released after the lock: a value's __del__ may trace
        lru = ttl = 0
        with self._lock:
            if self._busy:
                reentered = True
            else:
                reentered = False
                try:
                    self._busy = True
                    entries = self._entries
                    entry = entries.get(key)
                    if entry is None or name is None:
                        entry = (now, {})
                        if key in entries:
                            evicted.append(entries[key])
                        entries[key] = entry
                        entries.move_to_end(key)  # a re-opened key is the newest: insertion order == age order
                    if name is not None:
                        entry[1][name] = value
                    cutoff = now - self._ttl
                    while entries:
                        first_key = next(iter(entries))
                        if entries[first_key][0] < cutoff:
                            evicted.append(entries.pop(first_key))
                            ttl += 1
                        elif len(entries) > self._max:
                            evicted.append(entries.pop(first_key))
                            lru += 1
                        else:
                            break
                    kept = key in entries
                finally:
                    self._busy = False
        if reentered:
            self._count("reentrant", 1)
            return False
        evicted.clear()
        if lru:
            self._count("lru", lru)
        if ttl:
            self._count("ttl", ttl)
        return kept

    def _count(self, reason: str, n: int) -> None:
        if self._on_evict is not None:
            self._on_evict(reason, n)
