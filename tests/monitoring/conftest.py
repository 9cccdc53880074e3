"""Fixtures for the monitoring-asset tests: the external binaries they shell out to."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest


def require_binary(*names: str) -> str:
    """Return the path of the first of ``names`` on PATH.

    When none is installed the test is skipped, except under CI (``CI=true``), where a missing
    binary fails the test: CI is expected to install them, and a silent skip would hide that.
    """
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    reason = (
        f"{' / '.join(names)} not found on PATH (Debian/Ubuntu: apt-get install prometheus prometheus-alertmanager)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(name="require_binary")
def _require_binary_fixture() -> Callable[..., str]:
    """The require_binary helper, for tests of the helper itself."""
    return require_binary


@pytest.fixture
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture
def amtool() -> str:
    return require_binary("amtool")


@pytest.fixture
def prometheus_binary() -> str:
    return require_binary("prometheus")


@pytest.fixture
def alertmanager_binary() -> str:
    # Debian packages Alertmanager as "prometheus-alertmanager".
    return require_binary("alertmanager", "prometheus-alertmanager")
