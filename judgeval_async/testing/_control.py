"""The ``/_control/`` endpoints: drive faults and read records of a server in another process.

No auth (it only ever listens on loopback), never faulted, never counted in the stats.
"""

from __future__ import annotations

import json
from typing import Any

from judgeval_async.testing._faults import Fault, FaultTable
from judgeval_async.testing._protocol import ENDPOINTS, Api, Reply, Request, error_reply, json_reply
from judgeval_async.testing._records import Recorder


def check_endpoint(endpoint: str | None) -> None:
    """Raise ValueError unless `endpoint` is None (all) or one of `ENDPOINTS`."""
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint: expected None or one of {ENDPOINTS}, got {endpoint!r}")


class Control:
    """Answers ``/_control/{fault,clear,stats,reset,batch_tags}``."""

    def __init__(self, faults: FaultTable, recorder: Recorder, api: Api) -> None:
        self._faults = faults
        self._recorder = recorder
        self._api = api

    def stats(self) -> dict[str, Any]:
        """Recorder stats plus the active faults and the batch-tags switch."""
        stats = self._recorder.stats()
        stats["faults"] = {scope: [f.to_dict() for f in faults] for scope, faults in self._faults.snapshot().items()}
        stats["batch_tags_enabled"] = self._api.batch_tags_enabled
        return stats

    def handle(self, action: str, request: Request) -> tuple[Reply, bool]:
        """Answer one control request; the flag says the listener may need to close or reopen."""
        if action == "stats":
            if request.method != "GET":
                return error_reply(405, "use GET"), False
            return json_reply(200, self.stats()), False
        if action not in ("fault", "clear", "reset", "batch_tags"):
            return error_reply(404, f"unknown control action {action!r}"), False
        if request.method != "POST":
            return error_reply(405, "use POST"), False
        try:
            data = json.loads(request.body) if request.body.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("body: expected a JSON object")
            return self._act(action, data)
        except ValueError as exc:
            return error_reply(422, str(exc)), False

    def _act(self, action: str, data: dict[str, Any]) -> tuple[Reply, bool]:
        if action == "reset":
            self._recorder.reset()
            return json_reply(200, {"ok": True}), False
        if action == "batch_tags":
            enabled = data.get("enabled")
            if not isinstance(enabled, bool):
                raise ValueError("enabled: expected true or false")
            self._api.set_batch_tags_enabled(enabled)
            return json_reply(200, {"ok": True, "batch_tags_enabled": enabled}), False
        endpoint = data.pop("endpoint", None)
        check_endpoint(endpoint)
        if action == "clear":
            self._faults.clear(endpoint)
            return json_reply(200, {"ok": True}), endpoint is None
        fault = Fault.from_mapping(data)
        if fault.kind == "refuse" and fault.recover_after_seconds is None:
            # Refusing without a timer would leave no way to reach this endpoint again.
            raise ValueError("refuse: over HTTP it needs recover_after_seconds")
        self._faults.set(endpoint, fault)
        return json_reply(200, {"ok": True, "fault": fault.to_dict()}), fault.kind == "refuse"
