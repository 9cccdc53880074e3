"""Resolves the project name to its id on the loop, asynchronously, with retry; never caches a failure."""

from __future__ import annotations

import asyncio
import json
import logging

from ._config import Config
from ._transport import AsyncTransport

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

    @property
    def project_id(self) -> str | None:
        return self._project_id

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
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return None

    async def _resolve(self) -> str | None:
        url = self._config.api_url.rstrip("/") + "/v1/projects/resolve/"
        body = json.dumps({"project_name": self._config.project_name}).encode()
        result = await self._transport.send("resolve", url, body)
        if result.ok:
            try:
                project_id = str(result.json()["project_id"])
            except (ValueError, KeyError, TypeError):
                logger.error("judgeval_async: the project resolve response had no project_id")
                return None
            self._project_id = project_id
            return project_id
        if not self._failures_logged:
            self._failures_logged = True
            logger.warning(
                "judgeval_async: could not resolve project %r (%s); will retry",
                self._config.project_name,
                result.status.value,
            )
        return None
