"""The Judgment API routes, in one place: endpoint name (a metric label) -> URL.

Every module that sends asks here; an ``Envelope.route`` is one of these names, so a payload replayed by another
process goes to the URL that process's config gives it.
"""

from __future__ import annotations

import urllib.parse

from ._config import Config

__all__ = ["ROUTES", "route_url"]

# Paths relative to ``api_url`` ("traces" has its own knob, ``otlp_endpoint``).
ROUTES = {
    "resolve": "/v1/projects/resolve/",
    "traces": "/otel/v1/traces",
    "evals": "/v1/projects/{project_id}/eval-queue/examples",
    "tags_batch": "/traces/tags/add_batch",
    "tags": "/v1/projects/{project_id}/traces/{trace_id}/tags",
}


def route_url(config: Config, route: str, **params: str) -> str:
    """The URL of ``route`` (a key of ``ROUTES``) with its path parameters filled in (URL-quoted)."""
    if route == "traces":
        return config.traces_url
    path = ROUTES[route].format(**{k: urllib.parse.quote(v, safe="") for k, v in params.items()})
    return config.api_url.rstrip("/") + path
