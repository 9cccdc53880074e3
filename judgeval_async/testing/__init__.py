"""A local Judgment API server with fault injection, for tests, demos and benchmarks.

Standalone by design: nothing here imports the rest of `judgeval_async`, so it can judge the client
from the outside. `judgeval_async.testing.fixtures` holds the pytest fixtures;
``python -m judgeval_async.testing.server`` runs it as a separate process.
"""

from __future__ import annotations

from judgeval_async.testing._faults import FAULT_KINDS, Fault, FaultKind, RatioMode
from judgeval_async.testing._protocol import ENDPOINTS, project_id_for
from judgeval_async.testing._records import EvalRecord, SpanRecord, TagCall
from judgeval_async.testing._server import LocalJudgmentServer

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "EvalRecord",
    "Fault",
    "FaultKind",
    "LocalJudgmentServer",
    "RatioMode",
    "SpanRecord",
    "TagCall",
    "project_id_for",
]
