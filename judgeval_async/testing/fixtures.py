"""pytest fixtures for the local server; the only module of the package that imports pytest.

In a conftest: ``from judgeval_async.testing.fixtures import local_server, local_server_factory``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from judgeval_async.testing._server import LocalJudgmentServer

__all__ = ["local_server", "local_server_factory"]


@pytest.fixture
def local_server() -> Iterator[LocalJudgmentServer]:
    """A started server on a free port with default credentials, stopped after the test."""
    with LocalJudgmentServer() as server:
        yield server


@pytest.fixture
def local_server_factory() -> Iterator[Callable[..., LocalJudgmentServer]]:
    """Start servers with custom settings (`LocalJudgmentServer` kwargs); all stopped afterwards."""
    servers: list[LocalJudgmentServer] = []

    def make(**kwargs: Any) -> LocalJudgmentServer:
        server = LocalJudgmentServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in reversed(servers):
        server.stop()
