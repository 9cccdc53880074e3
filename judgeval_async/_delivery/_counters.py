"""The spool's counters and their snapshot, ``SpoolStats``: what the ledger needs (items per signal and event).

Not thread-safe on its own: ``Spool`` changes and reads it under its lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["SpoolCounters", "SpoolStats"]


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool's counters. Item counts are ledger items (spans, tag entries, evaluation runs).

    On disk now: ``items`` / ``bytes`` (payload bytes) / ``records`` not yet settled, ``disk_bytes`` (every spool
    file of this process and of the spools it adopted, including settled records not yet reclaimed). Since start:
    ``appended`` + ``adopted`` = ``items`` + ``replayed`` + ``dropped`` + ``expired`` + ``corrupt`` exactly;
    ``refused`` items were never stored (the caller still holds them). ``corrupt_records`` counts damaged records
    including those whose header was unreadable (their items are unknown, so not in ``corrupt``). ``by_signal``
    maps a signal to its counts per event, plus ``spooled`` (its items on disk now).
    """

    available: bool
    unavailable_reason: str
    items: int
    bytes: int
    records: int
    disk_bytes: int
    appended: int
    adopted: int
    replayed: int
    dropped: int
    expired: int
    corrupt: int
    refused: int
    corrupt_records: int
    write_errors: int
    adopted_processes: int
    oldest_created: float | None
    by_signal: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


class SpoolCounters:
    """Items and bytes on disk now, and items per (signal, event) since start."""

    def __init__(self) -> None:
        self.items = 0
        self.bytes = 0
        self.records = 0
        self.disk_bytes = 0
        self.corrupt_records = 0
        self.adopted_processes = 0
        self._events: Counter[tuple[str, str]] = Counter()
        self._pending: Counter[str] = Counter()

    def stored(self, signal: str, items: int, payload_bytes: int, records: int, event: str) -> None:
        """Records now on disk and unsettled (``event``: appended or adopted)."""
        self.items += items
        self.bytes += payload_bytes
        self.records += records
        self._pending[signal] += items
        self._events[signal, event] += items

    def settled(self, signal: str, items: int, payload_bytes: int, event: str) -> None:
        """One record left the disk's unsettled set (``event``: replayed, dropped, expired or corrupt)."""
        self.items -= items
        self.bytes -= payload_bytes
        self.records -= 1
        self._pending[signal] -= items
        if self._pending[signal] <= 0:
            del self._pending[signal]
        self._events[signal, event] += items

    def event(self, signal: str, items: int, event: str) -> None:
        """Items that never were unsettled on disk (refused; a torn record found adopted and corrupt at once)."""
        self._events[signal, event] += items

    def snapshot(
        self, *, available: bool, unavailable_reason: str, write_errors: int, oldest_created: float | None
    ) -> SpoolStats:
        by_signal: dict[str, dict[str, int]] = {}
        totals: Counter[str] = Counter()
        for (signal, event), n in self._events.items():
            by_signal.setdefault(signal, {})[event] = n
            totals[event] += n
        for signal, n in self._pending.items():
            by_signal.setdefault(signal, {})["spooled"] = n
        return SpoolStats(
            available=available,
            unavailable_reason=unavailable_reason,
            items=self.items,
            bytes=self.bytes,
            records=self.records,
            disk_bytes=self.disk_bytes,
            appended=totals["appended"],
            adopted=totals["adopted"],
            replayed=totals["replayed"],
            dropped=totals["dropped"],
            expired=totals["expired"],
            corrupt=totals["corrupt"],
            refused=totals["refused"],
            corrupt_records=self.corrupt_records,
            write_errors=write_errors,
            adopted_processes=self.adopted_processes,
            oldest_created=oldest_created,
            by_signal=by_signal,
        )
