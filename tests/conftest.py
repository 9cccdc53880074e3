"""Shared fixtures: the embedded local Judgment-API server and tracers wired to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer
from judgeval_async.testing.fixtures import local_server, local_server_factory

__all__ = ["local_server", "local_server_factory"]


@pytest.fixture(autouse=True)
def _private_spool_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and its subprocesses) spools into its own directory, never the user's cache."""
    monkeypatch.setenv("JUDGMENT_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))


@pytest.fixture
def make_tracer(local_server: LocalJudgmentServer) -> Iterator[Callable[..., Tracer]]:
    """Build tracers pointed at the local server (zero-backoff retry by default); all shut down afterwards."""
    tracers: list[Tracer] = []

    def make(server: LocalJudgmentServer | None = None, **kwargs: Any) -> Tracer:
        srv = server or local_server
        options: dict[str, Any] = {
            "project_name": "test-project",
            "api_key": srv.api_key,
            "organization_id": srv.org_id,
            "api_url": srv.url,
            "retry_testing": True,
            "schedule_delay": 0.05,
            "tag_flush_interval": 0.05,
        }
        options.update(kwargs)
        tracer = Tracer(**options)
        tracers.append(tracer)
        return tracer

    yield make
    for tracer in tracers:
        tracer.shutdown(timeout=5.0)
