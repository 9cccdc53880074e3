"""What the local server received: request counts, bytes, headers, spans, tags and eval runs, and the
``Idempotency-Key`` of every accepted request, so a redelivery is acknowledged again but recorded once.

Everything goes through one `threading.Condition`, so any thread can read a consistent copy while
the server runs, and `wait_for` wakes on each new record instead of polling.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Header values that must never be kept: the API key travels in Authorization.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key"})
# Idempotency keys remembered (oldest forgotten first): a real backend keeps them for a day or so; a test server
# needs only to outlive a client's retry loop, without growing without bound in a long benchmark.
_KEYS_KEPT = 100_000
# The span attribute that carries evaluations (eval_transport="span"; judgeval's key, kept in step with _span_evals).
PENDING_TRACE_EVAL = "judgment.pending_trace_eval"

# A remembered answer: (status, body, content type, extra headers).
StoredReply = tuple[int, bytes, str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class SpanRecord:
    """One decoded OTLP span; ids are lowercase hex, times are unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    scope_name: str
    project_id: str | None


@dataclass(frozen=True)
class TagCall:
    """One accepted tag call; `project` is the project id (``tags``) or name (``tags_batch``)."""

    endpoint: str
    project: str
    tags_by_trace: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class EvalRecord:
    """One accepted evaluation run; `payload` is the JSON body as sent."""

    project_id: str
    eval_name: str
    trace_id: str
    trace_span_id: str
    payload: dict[str, Any]


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy `headers`, keeping only the scheme of credentials (``Bearer <redacted>``)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS:
            scheme, _, secret = value.partition(" ")
            out[name] = f"{scheme} <redacted>" if secret else "<redacted>"
        else:
            out[name] = value
    return out


class Recorder:
    """Thread-safe store of everything received; readers get copies, never live containers."""

    def __init__(self, headers_kept: int = 50) -> None:
        self._cond = threading.Condition()
        self._headers_kept = headers_kept
        self._init()

    def _init(self) -> None:
        self._connections = 0
        self._requests: Counter[tuple[str, str]] = Counter()
        self._wire_bytes: Counter[str] = Counter()
        self._decoded_bytes: Counter[str] = Counter()
        self._headers: dict[str, deque[dict[str, str]]] = {}
        self._raw_spans: list[SpanRecord] = []
        self._spans: dict[tuple[str, str], SpanRecord] = {}
        self._tag_calls: list[TagCall] = []
        self._tags: dict[str, set[str]] = {}
        self._raw_evals: list[EvalRecord] = []
        self._evals: dict[str, EvalRecord] = {}
        self._answered: OrderedDict[tuple[str, str], StoredReply] = OrderedDict()
        self._duplicates: Counter[str] = Counter()

    # -- writers (the server's loop thread) ---------------------------------------------------

    def count_connection(self) -> None:
        """Count one accepted TCP connection (keep-alive makes this smaller than requests)."""
        with self._cond:
            self._connections += 1

    def count(self, endpoint: str, outcome: str | int, *, wire: int = 0, decoded: int = 0) -> None:
        """Count one finished request; `outcome` is a status code, "blackhole" or "reset"."""
        with self._cond:
            self._requests[endpoint, str(outcome)] += 1
            self._wire_bytes[endpoint] += wire
            self._decoded_bytes[endpoint] += decoded
            self._cond.notify_all()

    def note_headers(self, endpoint: str, headers: Mapping[str, str]) -> None:
        """Keep the redacted headers of one request (the last `headers_kept` per endpoint)."""
        kept = redact_headers(headers)
        with self._cond:
            self._headers.setdefault(endpoint, deque(maxlen=self._headers_kept)).append(kept)

    def add_spans(self, spans: Iterable[SpanRecord]) -> None:
        """Record spans; a repeated (trace_id, span_id) lands in the raw view only."""
        with self._cond:
            for span in spans:
                self._raw_spans.append(span)
                self._spans.setdefault((span.trace_id, span.span_id), span)
            self._cond.notify_all()

    def add_tags(self, call: TagCall) -> None:
        """Record a tag call and merge its tags into the per-trace view."""
        with self._cond:
            self._tag_calls.append(call)
            for trace_id, tags in call.tags_by_trace.items():
                self._tags.setdefault(trace_id, set()).update(tags)
            self._cond.notify_all()

    def add_eval(self, record: EvalRecord) -> None:
        """Record an eval run; an identical payload (a redelivery) lands in the raw view only."""
        key = json.dumps([record.project_id, record.payload], sort_keys=True, default=str)
        with self._cond:
            self._raw_evals.append(record)
            self._evals.setdefault(key, record)
            self._cond.notify_all()

    def answered(self, endpoint: str, key: str) -> StoredReply | None:
        """The reply already given to `key` on `endpoint`, counting this request as a duplicate; else None."""
        with self._cond:
            reply = self._answered.get((endpoint, key))
            if reply is not None:
                self._duplicates[endpoint] += 1
            return reply

    def remember(self, endpoint: str, key: str, reply: StoredReply) -> None:
        """Keep the reply to an accepted request, so a redelivery of `key` gets it again without a new record."""
        with self._cond:
            self._answered[endpoint, key] = reply
            if len(self._answered) > _KEYS_KEPT:
                self._answered.popitem(last=False)

    def reset(self) -> None:
        """Forget everything recorded so far (idempotency keys included)."""
        with self._cond:
            self._init()
            self._cond.notify_all()

    # -- readers (any thread) -----------------------------------------------------------------

    @property
    def spans(self) -> dict[tuple[str, str], SpanRecord]:
        """Distinct spans keyed by (trace_id, span_id), in first-seen order."""
        with self._cond:
            return dict(self._spans)

    @property
    def raw_spans(self) -> list[SpanRecord]:
        """Every span received, duplicates included."""
        with self._cond:
            return list(self._raw_spans)

    @property
    def tags(self) -> dict[str, set[str]]:
        """trace_id -> tags, merged across the per-trace and batch endpoints."""
        with self._cond:
            return {trace_id: set(tags) for trace_id, tags in self._tags.items()}

    @property
    def tag_calls(self) -> list[TagCall]:
        """Every accepted tag call, duplicates included."""
        with self._cond:
            return list(self._tag_calls)

    @property
    def evals(self) -> list[EvalRecord]:
        """Distinct eval runs (identical redeliveries collapsed), in first-seen order."""
        with self._cond:
            return list(self._evals.values())

    @property
    def span_evals(self) -> list[dict[str, Any]]:
        """Evaluations carried on distinct spans (``judgment.pending_trace_eval``, judgeval's wire format), decoded;
        an attribute that is not a JSON list of objects is skipped."""
        with self._cond:
            spans = list(self._spans.values())
        found: list[dict[str, Any]] = []
        for span in spans:
            text = span.attributes.get(PENDING_TRACE_EVAL)
            if not isinstance(text, str):
                continue
            try:
                entries = json.loads(text)
            except ValueError:
                continue
            if isinstance(entries, list):
                found.extend(e for e in entries if isinstance(e, dict))
        return found

    @property
    def raw_evals(self) -> list[EvalRecord]:
        """Every eval run received, duplicates included."""
        with self._cond:
            return list(self._raw_evals)

    def headers_seen(self, endpoint: str) -> list[dict[str, str]]:
        """The last requests' headers on `endpoint`, oldest first, credentials redacted."""
        with self._cond:
            return list(self._headers.get(endpoint, ()))

    def bytes_received(self, endpoint: str) -> tuple[int, int]:
        """(wire, decoded) body bytes of the requests the API answered on `endpoint`."""
        with self._cond:
            return self._wire_bytes[endpoint], self._decoded_bytes[endpoint]

    def duplicates(self, endpoint: str | None = None) -> int:
        """Redeliveries (a repeated ``Idempotency-Key``) acknowledged without a new record, on one endpoint or all."""
        with self._cond:
            return self._duplicates[endpoint] if endpoint is not None else sum(self._duplicates.values())

    def request_count(self, endpoint: str, status: int | str | None = None) -> int:
        """Requests finished on `endpoint`, all of them or only those with one outcome."""
        with self._cond:
            return self._count_locked(endpoint, status)

    def _count_locked(self, endpoint: str, status: int | str | None) -> int:
        if status is not None:
            return self._requests[endpoint, str(status)]
        return sum(n for (ep, _), n in self._requests.items() if ep == endpoint)

    def stats(self) -> dict[str, Any]:
        """A JSON-ready summary: requests by endpoint and outcome, bytes, and record counts."""
        with self._cond:
            requests: dict[str, dict[str, int]] = {}
            for (endpoint, outcome), n in sorted(self._requests.items()):
                requests.setdefault(endpoint, {})[outcome] = n
            endpoints = sorted(set(self._wire_bytes) | set(self._decoded_bytes))
            return {
                "connections": self._connections,
                "requests": requests,
                "bytes": {ep: {"wire": self._wire_bytes[ep], "decoded": self._decoded_bytes[ep]} for ep in endpoints},
                "spans": len(self._spans),
                "raw_spans": len(self._raw_spans),
                "tag_traces": len(self._tags),
                "tag_calls": len(self._tag_calls),
                "evals": len(self._evals),
                "raw_evals": len(self._raw_evals),
                "duplicates": dict(sorted(self._duplicates.items())),
            } | {"span_evals": len(self.span_evals)}

    def wait_for(
        self,
        *,
        spans: int | None = None,
        evals: int | None = None,
        tag_traces: int | None = None,
        requests: Mapping[str, int] | None = None,
        timeout: float,
    ) -> bool:
        """Block until every given threshold is reached (distinct records, finished requests).

        Returns False if `timeout` seconds pass first. Woken by each record, so no polling.
        """

        def reached() -> bool:
            return (
                (spans is None or len(self._spans) >= spans)
                and (evals is None or len(self._evals) >= evals)
                and (tag_traces is None or len(self._tags) >= tag_traces)
                and all(self._count_locked(ep, None) >= n for ep, n in (requests or {}).items())
            )

        with self._cond:
            return self._cond.wait_for(reached, timeout=timeout)
