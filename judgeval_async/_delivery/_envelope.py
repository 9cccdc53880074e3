"""One encoded payload and what is needed to send, replay and account for it.

The same object travels through the memory backlog, the disk spool and the sender, so the ``Idempotency-Key``
chosen when the payload was encoded is the one every retry, spill and replay sends (at-least-once delivery: a
backend deduplicates by it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from judgeval_async._span import random_key

__all__ = ["SIGNALS", "Envelope", "new_envelope"]

# The three signals the pipeline carries; a spool record written by a newer version with another name still replays.
SIGNALS = ("spans", "tags", "evals")


@dataclass(frozen=True, slots=True)
class Envelope:
    """An encoded payload (bytes, ready for the wire) with its accounting metadata.

    ``items`` is how many ledger items (spans, tag entries, evaluation runs) the payload carries; ``created`` is
    unix time (it outlives the process, so not a monotonic clock); ``route`` names the API route the payload goes
    to (the pipeline's route table maps it to a URL); ``extra`` holds small string headers such as
    ``Content-Encoding`` that the sender must repeat.
    """

    payload: bytes
    signal: str
    items: int
    idempotency_key: str
    route: str
    created: float
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes this envelope costs a byte budget: the payload (metadata is small and bounded)."""
        return len(self.payload)


def new_envelope(
    payload: bytes,
    *,
    signal: str,
    items: int,
    route: str,
    extra: Mapping[str, str] | None = None,
    created: float | None = None,
    idempotency_key: str | None = None,
) -> Envelope:
    """An envelope with a fresh Idempotency-Key (unless given) and ``created`` = now (unless given)."""
    return Envelope(
        payload=payload,
        signal=signal,
        items=items,
        idempotency_key=idempotency_key or random_key(),
        route=route,
        created=time.time() if created is None else created,
        extra=dict(extra or {}),
    )
