"""The Judgment API routes, in one place: endpoint name (a metric label) -> URL.

Every module that sends asks here; an ``Envelope.route`` is one of these names, so a payload replayed by another
process goes to the URL that process's config gives it.
"""

from __future__ import annotations

import urllib.parse
from typing import Literal

from ._config import Config

__all__ = ["ROUTES", "eval_transport", "judgment_api", "route_url", "traces_to_judgment"]

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


def _canonical(url: str) -> tuple[str, str, str]:
    # Scheme and host compare case-insensitively; a trailing slash on the path is not a different endpoint.
    parts = urllib.parse.urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def traces_to_judgment(config: Config) -> bool:
    """Whether span export targets the Judgment API: ``otlp_endpoint`` is unset, or is exactly ``api_url``'s own
    traces URL (``{api_url}/otel/v1/traces``; scheme and host case-insensitive, a trailing slash ignored).

    Only then are spans sent with the Judgment credentials and the resolved ``x-project-id``; any other URL (a
    Collector, Phoenix, Langfuse, even a proxy in front of Judgment) is a third party: no project resolve, no
    Judgment headers, only ``otlp_headers``.
    """
    if not config.otlp_endpoint:
        return True
    return _canonical(config.otlp_endpoint) == _canonical(config.api_url.rstrip("/") + ROUTES["traces"])


def judgment_api(config: Config) -> bool:
    """Whether a Judgment API is there to take tags and evaluations: spans go to it, or an ``api_key`` is set (spans
    to a third-party ``otlp_endpoint``, tags and evaluations to ``api_url``). Otherwise ``tag()`` and
    ``async_evaluate()`` are counted no-ops (``calls_ignored``, reason ``no_judgment_api``)."""
    return bool(config.api_key) or traces_to_judgment(config)


def eval_transport(config: Config) -> Literal["api", "span"]:
    """How evaluations travel: ``config.eval_transport``, with ``"auto"`` resolved to ``"span"`` when spans go to the
    Judgment API (an evaluation then rides on its span, no request of its own: one POST per ``async_evaluate()``
    cost ~3x a request's three spans in ``benchmarks/web.py``) and to ``"api"`` when they go to a third party,
    which would ignore an evaluation carried on a span."""
    if config.eval_transport == "auto":
        return "span" if traces_to_judgment(config) else "api"
    return config.eval_transport
