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
from typing import Any

from ._config import Config
from ._metrics import Metrics
from ._pipeline import QueueService
from ._project import ProjectResolver
from ._serialize import RateLimitedLog
from ._transport import AsyncTransport

__all__ = ["EvalDispatcher"]

logger = logging.getLogger(__name__)

EvalRun = dict[str, Any]  # JSON-ready builtin values; "examples" holds JSON texts


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

    async def _consume(self) -> None:
        h = self.handoff
        while True:
            batch = await h.take_batch(self._config.eval_batch_size, 0.05)
            for run in batch:
                await self._spawn(self._post(run), self._config.max_concurrent_requests)
            if not batch and h.closed and not len(h):
                await self._join_spawned()
                return

    async def _post(self, run: EvalRun) -> None:
        led = self.ledger
        try:
            project_id = await self._resolver.get(self._config.project_resolve_wait)
            if project_id is None:
                led.settle_dropped("retries_exhausted", 1)
                return
            try:
                body = self._encode(run, project_id)
            except Exception as exc:
                led.settle_dropped("serialization_error", 1)
                self._log.warning(
                    "encode",
                    "judgeval_async: dropped an evaluation that cannot be encoded: %r",
                    exc,
                )
                return
            url = f"{self._config.api_url.rstrip('/')}/v1/projects/{project_id}/eval-queue/examples"
            result = await self._transport.send("evals", url, body)
            if result.ok:
                led.settle_delivered(1)
            else:
                led.settle_dropped(result.status.value, 1)
                self._log.warning(
                    "send:" + result.status.value,
                    "judgeval_async: dropped an evaluation (%s, HTTP %s)",
                    result.status.value,
                    result.http_status,
                )
        finally:
            self._notify()

    def _encode(self, run: EvalRun, project_id: str) -> bytes:
        rest = {k: v for k, v in run.items() if k != "examples"}
        rest["project_id"] = project_id
        # '{"examples":[<texts>],' + the rest's members: the examples are never parsed or re-encoded here.
        tail = json.dumps(rest, ensure_ascii=False)
        body = '{"examples":[' + ",".join(run["examples"]) + "]," + tail[1:]
        return body.encode("utf-8", "replace")
