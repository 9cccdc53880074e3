"""Resolves the project name to its id on the loop, asynchronously, with retry; never caches a failure.

When it fails, :attr:`ProjectResolver.failure_reason` is the drop reason for the items that needed the id: the
cause (``auth_error`` for a 401/403, ``non_retryable_status`` for a 405, ...), never a blanket ``retries_exhausted``
that would point on-call at the backend when the credentials are wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging

from ._config import Config
from ._routes import route_url
from ._transport import AsyncTransport, SendResult, SendStatus

__all__ = ["ProjectResolver"]

logger = logging.getLogger(__name__)


class ProjectResolver:
    """``await get(timeout)`` returns the project id or None. Concurrent callers share one resolve request.

    A tracer built with an explicit ``project_id`` never calls the API. A failed resolve is forgotten, so the next
    ``get`` tries again (each attempt already retries with backoff inside the transport).
    """

    def __init__(self, config: Config, transport: AsyncTransport) -> None:
        self._config = config
        self._transport = transport
        self._project_id: str | None = config.project_id or None
        self._pending: asyncio.Task[str | None] | None = None
        self._failures_logged = False
        self._last_failure = SendStatus.EXHAUSTED.value
        self._failure_reason = SendStatus.EXHAUSTED.value

    @property
    def project_id(self) -> str | None:
        return self._project_id

    @property
    def failure_reason(self) -> str:
        """Why the last ``get`` returned None: a drop reason from ``DROP_REASONS``. Read it right after ``get``."""
        return self._failure_reason

    def forget_after_fork(self) -> None:
        self._pending = None

    async def get(self, timeout: float) -> str | None:
        if self._project_id is not None:
            return self._project_id
        task = self._pending
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._resolve())
            self._pending = task
        try:
            # shield: one waiter timing out must not cancel the resolve other waiters share.
            project_id = await asyncio.wait_for(asyncio.shield(task), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            # Still retrying: the backend is slow or failing (retryable), so far as we know.
            self._failure_reason = SendStatus.EXHAUSTED.value
            return None
        if project_id is None:
            self._failure_reason = self._last_failure
        return project_id

    async def _resolve(self) -> str | None:
        url = route_url(self._config, "resolve")
        body = json.dumps({"project_name": self._config.project_name}).encode()
        result = await self._transport.send("resolve", url, body)
        if result.ok:
            try:
                project_id = str(result.json()["project_id"])
            except (ValueError, KeyError, TypeError):
                logger.error("judgeval_async: the project resolve response had no project_id")
                # A backend that answers 2xx without an id will not do better on a resend of the same request.
                self._last_failure = SendStatus.REJECTED.value
                return None
            self._project_id = project_id
            return project_id
        self._last_failure = _reason(result)
        if not self._failures_logged:
            self._failures_logged = True
            logger.warning(
                "judgeval_async: could not resolve project %r (%s); will retry",
                self._config.project_name,
                result.status.value,
            )
        return None


def _reason(result: SendResult) -> str:
    """The drop reason for items whose project could not be resolved because of ``result``."""
    if result.status is SendStatus.UNACKNOWLEDGED:
        # The resolve call timed out; the items themselves were never sent, so nothing is ambiguous about them.
        return SendStatus.EXHAUSTED.value
    if result.status is SendStatus.TOO_LARGE:
        return SendStatus.REJECTED.value  # a tiny JSON body refused as too large: the backend is misconfigured
    return str(result.status.value)
