"""Bounded per-span internal state (seed Problem 3).

Judgeval keeps internal attributes per live span, keyed by (trace_id, span_id), and forgets them only when the span
ends: a span that never ends leaked its entry forever. Here the store is bounded two ways, both enforced on insert,
so no background thread is needed:

- **count**: at most ``max_entries``; inserting one more evicts the least recently *inserted* entry (``lru``);
- **age**: entries older than ``ttl`` seconds are evicted (``ttl``) by the insert that finds them at the front.

Insertion order equals age order, so both checks look only at the front of an ``OrderedDict``: O(1) amortised.
Every eviction is counted by reason. A span whose entry was evicted still exports; it only loses its internal
attributes.
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
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def open(self, key: SpanKey) -> None:
        """Create the entry for a span that just started, evicting expired and overflowing entries."""
        now = self._clock()
        lru = ttl = 0
        with self._lock:
            entries = self._entries
            entries[key] = (now, {})
            entries.move_to_end(key)  # a re-opened key is the newest: keeps insertion order == age order
            cutoff = now - self._ttl
            while entries:
                first_key = next(iter(entries))
                if entries[first_key][0] < cutoff:
                    del entries[first_key]
                    ttl += 1
                elif len(entries) > self._max:
                    del entries[first_key]
                    lru += 1
                else:
                    break
        if self._on_evict is not None:
            if lru:
                self._on_evict("lru", lru)
            if ttl:
                self._on_evict("ttl", ttl)

    def set(self, key: SpanKey, name: str, value: Any, *, create: bool = True) -> bool:
        """Set one internal attribute, creating the span's entry on first use (unless ``create=False``).

        Entries are created lazily, so the common span — one with no internal attributes — costs nothing here.
        Returns False if there is no entry and none was created.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[1][name] = value
                return True
        if not create:
            return False
        self.open(key)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:  # pragma: no cover - evicted between the two locks by a flood of newer spans
                return False
            entry[1][name] = value
            return True

    def pop(self, key: SpanKey) -> dict[str, Any] | None:
        """Remove and return the span's attributes when it ends (None if it had none or was evicted)."""
        if not self._entries:  # the common case, checked without the lock: no span has internal attributes
            return None
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None or not entry[1]:
            return None
        return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
