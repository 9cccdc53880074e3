"""Exceptions raised by judgeval_async.

Only *blocking, opt-in* calls raise; the hot path (``observe``, span end, ``tag``, ``async_evaluate``) never does::

    JudgevalAsyncError
     ├── ConfigError (also a ValueError)   invalid configuration, raised at construction
     ├── LoopThreadError (also a RuntimeError)  a blocking call was made on the SDK's own loop thread
     ├── RuntimeClosedError                the runtime was shut down and accepts no more work
     └── MetricsServerError                start_metrics_server could not bind its port
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "JudgevalAsyncError",
    "LoopThreadError",
    "MetricsServerError",
    "RuntimeClosedError",
]


class JudgevalAsyncError(Exception):
    """Base class of every exception judgeval_async raises."""


class ConfigError(JudgevalAsyncError, ValueError):
    """A configuration value is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class LoopThreadError(JudgevalAsyncError, RuntimeError):
    """A blocking call was made on the SDK's loop thread, where it would deadlock."""


class RuntimeClosedError(JudgevalAsyncError):
    """The runtime has been stopped."""


class MetricsServerError(JudgevalAsyncError, OSError):
    """The Prometheus ``/metrics`` server could not start (for example, the port is taken)."""
