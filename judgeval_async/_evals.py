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
from ._serialize import RateLimitedLog, SerializeLimits, bounded_text, json_text, safe_data
from ._transport import AsyncTransport, SendResult, SendStatus

__all__ = ["PACK_MAX_BYTES", "EvalDispatcher", "scorer_configs", "unpacked"]

logger = logging.getLogger(__name__)

EvalRun = dict[str, Any]  # JSON-ready builtin values; "examples" holds JSON texts
SCORER_TEXT_MAX = 256  # characters of a scorer's name or score type
SCORERS_MAX = 32  # scorers per async_evaluate call
_SCORER_LIMITS = SerializeLimits(max_length=4096, max_depth=4, max_items=100)  # a scorer given as a dict
PACK_MAX_BYTES = 256 * 1024  # a packed envelope's run bodies (EvalDispatcher._submit_packed); a larger run goes alone


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
            if len(batch) > 1 and self._resolver.project_id is None:
                self._submit_packed(batch)
            else:
                for run in batch:
                    self._submit(run)
            if batch:
                self._notify()
            if not batch and h.closed and not len(h):
                return

    def _encoded(self, run: EvalRun) -> bytes | None:
        """The run's body (see ``_encode``); None, counted ``serialization_error``, if it cannot be encoded."""
        try:
            return _encode(run)
        except Exception as exc:
            self.ledger.settle_dropped("serialization_error", 1)
            self._log.warning("encode", "judgeval_async: dropped an evaluation that cannot be encoded: %r", exc)
            return None

    def _submit(self, run: EvalRun) -> None:
        """Encode one run and hand it to the lane, which settles it. The project id is added at send time: a
        project not resolved yet (the backend down at start) holds the run like any failed send, never drops it."""
        body = self._encoded(run)
        if body is not None:
            self._submit_bodies([body])

    def _submit_packed(self, runs: list[EvalRun]) -> None:
        """The project id unknown (the backend down since start, or its first moments): the runs of one look go to
        the lane as one packed envelope (a JSON array of their bodies, up to ``PACK_MAX_BYTES``), so an outage costs
        one backlog entry and one spool record per look instead of one per run. ``EvalExporter.unpack`` turns it
        back into one envelope per run once the id is known; each run is then sent, retried and settled alone."""
        bodies: list[bytes] = []
        size = 0
        for run in runs:
            body = self._encoded(run)
            if body is None:
                continue
            if bodies and size + len(body) > PACK_MAX_BYTES:
                self._submit_bodies(bodies)
                bodies, size = [], 0
            bodies.append(body)
            size += len(body) + 1
        if bodies:
            self._submit_bodies(bodies)

    def _submit_bodies(self, bodies: list[bytes]) -> None:
        payload = bodies[0] if len(bodies) == 1 else b"[" + b",".join(bodies) + b"]"
        assert self.lane is not None
        self.lane.submit(new_envelope(payload, signal="evals", items=len(bodies), route="evals"))


def _encode(run: EvalRun) -> bytes:
    """The run's JSON object without its closing brace's ``project_id`` member (``EvalExporter`` adds it)."""
    # '{"examples":[<texts>]' + the other members: the examples are never parsed or re-encoded here.
    parts = ['{"examples":[', ",".join(run["examples"]), "]"]
    for key, value in run.items():
        if key not in _SPLICED:
            parts.append("," + json_text(key) + ":" + _member_text(value))
    parts.append("}")
    return "".join(parts).encode("utf-8", "replace")


# The JSON text of scorer config lists, by identity: a plain score type's configs are built once and shared by every
# run that names it (Tracer._scorer_sets, never mutated), and encoding them was most of a run's encoding. The list is
# held with its text, so its id is not reused by another list while the entry lives.
_LIST_TEXTS: dict[int, tuple[list[Any], str]] = {}
_LIST_TEXTS_MAX = 64
_SPLICED = frozenset({"examples", "project_id"})  # members _encode writes itself, or EvalExporter adds


def _member_text(value: Any) -> str:
    if type(value) is list:
        hit = _LIST_TEXTS.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        text = json_text(value)
        if len(_LIST_TEXTS) >= _LIST_TEXTS_MAX:
            _LIST_TEXTS.clear()  # per-call lists (scorer objects) churn through; the shared ones come back
        _LIST_TEXTS[id(value)] = (value, text)
        return text
    return json_text(value)


def unpacked(payload: bytes) -> list[bytes] | None:
    """A packed payload's run bodies, byte for byte (see ``EvalDispatcher._submit_packed``); None if ``payload`` is
    not a packed one or does not parse (our own bytes always do; one that did not would be held, never posted, until
    it is dropped ``poison`` or ``expired``)."""
    if not payload.startswith(b"["):
        return None
    try:
        text = payload.decode("utf-8")
        decoder = _DECODER
        bodies: list[bytes] = []
        end = len(text) - 1  # the closing bracket
        i = 1
        while i < end:
            _, j = decoder.raw_decode(text, i)
            bodies.append(text[i:j].encode("utf-8"))
            i = j + 1  # past the comma (our own compact JSON: no whitespace between members)
    except ValueError:
        return None
    return bodies if i == end + 1 and text.endswith("]") else None


_DECODER = json.JSONDecoder()


def _with_project(body: bytes, project_id: str) -> bytes:
    return body[:-1] + b',"project_id":' + json.dumps(project_id).encode() + b"}"


class EvalExporter:
    """The evaluations' exporter seam: one POST per run to the project's eval queue."""

    endpoint = "evals"

    def __init__(self, config: Config, transport: AsyncTransport, resolver: ProjectResolver) -> None:
        self._config = config
        self._transport = transport
        self._resolver = resolver

    async def unpack(self, envelope: Envelope) -> list[Envelope] | None:
        """A packed envelope's runs, one envelope each, once the project id is known (until then None: ``send``
        holds it like a single run). Their keys derive from the packed one's, so a replay repeats them."""
        if not envelope.payload.startswith(b"["):
            return None
        if await self._resolver.get(self._config.project_resolve_wait) is None:
            return None
        bodies = unpacked(envelope.payload)
        if bodies is None:
            return None
        key, created = envelope.idempotency_key, envelope.created
        return [
            new_envelope(
                body, signal="evals", items=1, route=envelope.route, created=created, idempotency_key=f"{key}-{i}"
            )
            for i, body in enumerate(bodies)
        ]

    async def send(self, envelope: Envelope) -> SendResult:
        payload = envelope.payload
        project_id = envelope.extra.get("x-project-id")  # a payload spooled by a version that encoded the id
        if project_id is None:
            project_id = await self._resolver.get(self._config.project_resolve_wait)
            if project_id is None:
                # The backend unreachable: held like any failure; a final answer (auth, 4xx): dropped with it.
                reason = self._resolver.failure_reason
                return SendResult(SendStatus(reason) if reason in _STATUSES else SendStatus.EXHAUSTED)
            if payload.startswith(b"["):
                # Packed, and the id came while this send waited for it (unpack found none a moment ago): held as
                # a failed attempt, unpacked on its next turn. Never posted as an array.
                return SendResult(SendStatus.EXHAUSTED)
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
