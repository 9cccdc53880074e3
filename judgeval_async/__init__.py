"""judgeval_async: tracing for LLM-agent services that never blocks the application, never loses data silently,
and reports its own health."""

from __future__ import annotations

from ._config import Config
from ._errors import (
    ConfigError,
    JudgevalAsyncError,
    LoopThreadError,
    MetricsServerError,
    RuntimeClosedError,
)
from ._health import HealthSnapshot
from ._metrics import DROP_REASONS
from ._retry import RetryPolicy
from ._spans import JudgmentSpanProcessor
from ._tracer import Tracer

__all__ = [
    "DROP_REASONS",
    "Config",
    "ConfigError",
    "HealthSnapshot",
    "JudgevalAsyncError",
    "JudgmentSpanProcessor",
    "LoopThreadError",
    "MetricsServerError",
    "RetryPolicy",
    "RuntimeClosedError",
    "Tracer",
]

__version__ = "0.1.0.dev0"
