"""Evaluations (seed Problem 1): ``async_evaluate`` offers a run to a bounded queue; the loop posts it with retry.

The caller builds the ``ExampleEvaluationRun`` as a plain dict of builtin values, its example already serialized to
bounded JSON text (on the caller, under the same caps as span inputs): no user code ever runs on the loop, where a
slow ``__repr__`` would stall every export. Here the example texts are spliced into the request body as they are.
Overflow drops the *oldest* queued run by default (the seed's policy: recent evaluations matter more), counted
``queue_full``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from ._config import Config
from ._delivery._envelope import Envelope, new_envelope
from ._introspection import placeholder, read_items, stored_attributes
from ._metrics import Metrics
from ._pipeline import QueueService
from ._project import ProjectResolver
from ._routes import route_url
from ._sender import Lane
from ._serialize import RateLimitedLog, SerializeLimits, bounded_text, safe_data
from ._transport import AsyncTransport, SendResult, SendStatus

__all__ = ["EvalDispatcher", "scorer_configs"]

logger = logging.getLogger(__name__)

EvalRun = dict[str, Any]  # JSON-ready builtin values; "examples" holds JSON texts
SCORER_TEXT_MAX = 256  # characters of a scorer's name or score type
SCORERS_MAX = 32  # scorers per async_evaluate call
_SCORER_LIMITS = SerializeLimits(max_length=4096, max_depth=4, max_items=100)  # a scorer given as a dict


class EvalDispatcher(QueueService[EvalRun]):
    """Posts evaluation runs to ``/v1/projects/{id}/eval-queue/examples``; one ledger entry per run."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        transport: AsyncTransport,
        resolver: ProjectResolver,
    ) -> None:
        super().__init__(metrics.evaluations, config.eval_queue_size, config.eval_overflow)
        self._config = config
        self._transport = transport
        self._resolver = resolver
        self._log = RateLimitedLog(logger)
        self.lane = Lane("evaluations", EvalExporter(config, transport, resolver), metrics.evaluations, metrics, config)

    async def _consume(self) -> None:
        h = self.handoff
        while True:
            batch = await h.take_batch(self._config.eval_batch_size, 0.05)
            for run in batch:
                await self._submit(run)
            if batch:
                self._notify()
            if not batch and h.closed and not len(h):
                return

    async def _submit(self, run: EvalRun) -> None:
        """Encode one run and hand it to the lane, which settles it. The project id is added at send time: a
        project not resolved yet (the backend down at start) holds the run like any failed send, never drops it."""
        led = self.ledger
        try:
            body = _encode(run)
        except Exception as exc:
            led.settle_dropped("serialization_error", 1)
            self._log.warning("encode", "judgeval_async: dropped an evaluation that cannot be encoded: %r", exc)
            return
        assert self.lane is not None
        self.lane.submit(new_envelope(body, signal="evals", items=1, route="evals"))


def _encode(run: EvalRun) -> bytes:
    """The run's JSON object without its closing brace's ``project_id`` member (``EvalExporter`` adds it)."""
    rest = {k: v for k, v in run.items() if k not in ("examples", "project_id")}
    # '{"examples":[<texts>],' + the rest's members: the examples are never parsed or re-encoded here.
    tail = json.dumps(rest, ensure_ascii=False)
    body = '{"examples":[' + ",".join(run["examples"]) + "]" + ("," + tail[1:-1] if rest else "") + "}"
    return body.encode("utf-8", "replace")


def _with_project(body: bytes, project_id: str) -> bytes:
    return body[:-1] + b',"project_id":' + json.dumps(project_id).encode() + b"}"


class EvalExporter:
    """The evaluations' exporter seam: one POST per run to the project's eval queue."""

    endpoint = "evals"

    def __init__(self, config: Config, transport: AsyncTransport, resolver: ProjectResolver) -> None:
        self._config = config
        self._transport = transport
        self._resolver = resolver

    async def send(self, envelope: Envelope) -> SendResult:
        payload = envelope.payload
        project_id = envelope.extra.get("x-project-id")  # a payload spooled by a version that encoded the id
        if project_id is None:
            project_id = await self._resolver.get(self._config.project_resolve_wait)
            if project_id is None:
                # The backend unreachable: held like any failure; a final answer (auth, 4xx): dropped with it.
                reason = self._resolver.failure_reason
                return SendResult(SendStatus(reason) if reason in _STATUSES else SendStatus.EXHAUSTED)
            payload = _with_project(payload, project_id)
        url = route_url(self._config, envelope.route, project_id=project_id)
        return await self._transport.send("evals", url, payload, retry=False, idempotency_key=envelope.idempotency_key)

    async def split(self, envelope: Envelope) -> list[Envelope] | None:
        return None  # one run per payload: nothing smaller to send


_STATUSES = frozenset(s.value for s in SendStatus)


def _number(value: object, default: float, degraded: Callable[[str], None]) -> float:
    """A finite threshold from an int/float (subclasses read with the base type's own methods), else ``default``."""
    kind = type(value)
    if kind is not bool and issubclass(kind, (int, float)):
        number = float.__float__(value) if issubclass(kind, float) else int.__int__(value)  # type: ignore[arg-type]
        try:
            number = float(number)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    degraded("unserializable")
    return default


def scorer_configs(
    scorer: Any, scorers: Any, threshold: object, budget: float, degraded: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Scorer configs, bounded, read without running the scorers' code: a str is a score type, a dict is a config
    (bounded like a value), an object gives its stored ``name``/``score_type``/``threshold`` (properties and
    ``__getattr__`` are not called; the class name stands in for a missing name). At most ``SCORERS_MAX``."""
    default = 0.5 if threshold is None else _number(threshold, 0.5, degraded)
    items = [scorer]
    if scorers is not None:
        items.extend(read_items(scorers, SCORERS_MAX - 1, budget, degraded) or ())
    judgment: list[dict[str, Any]] = []
    custom: list[dict[str, Any]] = []
    for s in items:
        kind = type(s)
        if s is None:
            continue
        if issubclass(kind, str):
            text = bounded_text(s, SCORER_TEXT_MAX, degraded)
            judgment.append({"score_type": text, "name": text, "threshold": default})
        elif issubclass(kind, dict):
            conf = safe_data(s, _SCORER_LIMITS, degraded)
            judgment.append(conf if type(conf) is dict else {"config": conf})
        else:
            found = stored_attributes(s, ("name", "score_type", "threshold"))
            name: object = found.get("name")
            if name is None or (type(name) is str and not name):
                name = placeholder(s)[1:-1]  # the class name, as before
            conf = {
                "name": bounded_text(name, SCORER_TEXT_MAX, degraded),
                "threshold": _number(found["threshold"], default, degraded) if "threshold" in found else default,
            }
            score_type = found.get("score_type")
            if score_type is not None:
                judgment.append({"score_type": bounded_text(score_type, SCORER_TEXT_MAX, degraded), **conf})
            else:
                custom.append(conf)
    return judgment, custom
