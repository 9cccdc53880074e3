"""The Judgment API wire protocol as the local server speaks it: routes, auth, bodies, replies.

Pure request -> reply logic with no sockets, so the HTTP layer and the fault layer stay separate.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from judgeval_async.testing._records import EvalRecord, Recorder, SpanRecord, TagCall

# The client uses these exact strings as metric labels.
ENDPOINTS: tuple[str, ...] = ("resolve", "traces", "tags", "tags_batch", "evals")
CONTROL = "control"
UNKNOWN = "unknown"

# Any path prefix is accepted, because the client joins its configurable api_url with these paths.
_PREFIX = r"^(?:/[^?#]*?)?"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("resolve", re.compile(_PREFIX + r"/v1/projects/resolve/?$")),
    ("traces", re.compile(_PREFIX + r"/otel/v1/traces/?$")),
    (
        "tags",
        re.compile(_PREFIX + r"/v1/projects/(?P<project_id>[^/]+)/traces/(?P<trace_id>[^/]+)/tags/?$"),
    ),
    ("tags_batch", re.compile(_PREFIX + r"/traces/tags/add_batch/?$")),
    ("evals", re.compile(_PREFIX + r"/v1/projects/(?P<project_id>[^/]+)/eval-queue/examples/?$")),
)
_PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})


@dataclass(frozen=True)
class Route:
    """Where a request goes: an endpoint from `ENDPOINTS`, `CONTROL` or `UNKNOWN`."""

    endpoint: str
    params: dict[str, str] = field(default_factory=dict)
    method_allowed: bool = True


@dataclass(frozen=True)
class Request:
    """One fully read request; header names are lowercase, repeated headers joined by ", "."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """One response to write."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, obj: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON response."""
    return Reply(status, json.dumps(obj).encode(), "application/json", headers)


def error_reply(status: int, detail: str) -> Reply:
    """A FastAPI-style ``{"detail": ...}`` error response."""
    return json_reply(status, {"detail": detail})


def route(method: str, target: str) -> Route:
    """Map a request line to an endpoint; only POST (GET for control stats) is served."""
    path = target.split("?", 1)[0]
    if path.startswith("/_control/"):
        return Route(CONTROL, {"action": path.removeprefix("/_control/").strip("/")})
    for endpoint, pattern in _ROUTES:
        match = pattern.match(path)
        if match:
            return Route(endpoint, match.groupdict(), method_allowed=method == "POST")
    return Route(UNKNOWN)


def project_id_for(name: str) -> str:
    """The deterministic id the server resolves a project name to."""
    return "proj-" + hashlib.sha1(name.encode()).hexdigest()[:16]


class _Invalid(Exception):
    """A request the API rejects; carries the reply."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.reply = error_reply(status, detail)


@dataclass(frozen=True)
class ApiSettings:
    """Server-wide protocol knobs fixed at construction."""

    api_key: str
    org_id: str
    require_project_id: bool = True


class Api:
    """Answers the five endpoints, records what they accept, and counts every answer."""

    def __init__(
        self, settings: ApiSettings, recorder: Recorder, *, batch_tags: bool, idempotency: bool = True
    ) -> None:
        self._settings = settings
        self._recorder = recorder
        self._lock = threading.Lock()
        self._batch_tags = batch_tags
        self._idempotency = idempotency

    @property
    def batch_tags_enabled(self) -> bool:
        """Whether `tags_batch` exists (False -> 404, like an older backend)."""
        with self._lock:
            return self._batch_tags

    def set_batch_tags_enabled(self, enabled: bool) -> None:
        """Switch the batch tag endpoint on or off; takes effect on the next request."""
        with self._lock:
            self._batch_tags = enabled

    def handle(self, rt: Route, request: Request) -> Reply:
        """Answer one request on an API endpoint (or `UNKNOWN`) and count it."""
        decoded = 0
        try:
            if rt.endpoint == UNKNOWN or (rt.endpoint == "tags_batch" and not self.batch_tags_enabled):
                raise _Invalid(404, "Not Found")
            if not rt.method_allowed:
                raise _Invalid(405, "Method Not Allowed")
            self._authorize(request.headers)
            body = _decode_content(request.headers, request.body)
            decoded = len(body)
            reply = self._dispatch_once(rt, request.headers, body)
        except _Invalid as exc:
            reply = exc.reply
        self._recorder.count(rt.endpoint, reply.status, wire=len(request.body), decoded=decoded)
        return reply

    def _dispatch_once(self, rt: Route, headers: Mapping[str, str], body: bytes) -> Reply:
        """Dispatch, unless this ``Idempotency-Key`` was already accepted: then answer the same again, record nothing.

        That is what a backend must do for an at-least-once client (docs/reliability.md, "Delivery semantics"): a
        request whose answer was lost (the client's read timed out) is sent again under the same key. Only accepted
        (2xx) requests are remembered, so a redelivery of a refused one is judged afresh. Requests run one at a
        time on the server's loop, so checking and remembering cannot race.
        """
        key = headers.get("idempotency-key", "").strip()
        if not key or not self._idempotency:
            return self._dispatch(rt, headers, body)
        stored = self._recorder.answered(rt.endpoint, key)
        if stored is not None:
            return Reply(*stored)
        reply = self._dispatch(rt, headers, body)
        if 200 <= reply.status < 300:
            self._recorder.remember(rt.endpoint, key, (reply.status, reply.body, reply.content_type, reply.headers))
        return reply

    def _authorize(self, headers: Mapping[str, str]) -> None:
        if headers.get("authorization") != f"Bearer {self._settings.api_key}":
            raise _Invalid(401, "Invalid or missing API key")
        if headers.get("x-organization-id") != self._settings.org_id:
            raise _Invalid(401, "Invalid or missing organization id")

    def _dispatch(self, rt: Route, headers: Mapping[str, str], body: bytes) -> Reply:
        if rt.endpoint == "traces":
            return self._traces(headers, body)
        data = _json_object(body)
        if rt.endpoint == "resolve":
            name = data.get("project_name")
            if not isinstance(name, str) or not name:
                raise _Invalid(422, "project_name: expected a non-empty string")
            return json_reply(200, {"project_id": project_id_for(name)})
        if rt.endpoint == "tags":
            tags = _str_list(data.get("tags"), "tags")
            trace_id = rt.params["trace_id"]
            self._recorder.add_tags(TagCall("tags", rt.params["project_id"], {trace_id: tags}))
            return json_reply(200, {"success": True})
        if rt.endpoint == "tags_batch":
            project = data.get("project_name")
            by_trace = data.get("tags_by_trace")
            if not isinstance(project, str) or not isinstance(by_trace, dict):
                raise _Invalid(422, "expected project_name: str and tags_by_trace: {trace_id: [str]}")
            merged = {str(tid): _str_list(tags, f"tags_by_trace[{tid}]") for tid, tags in by_trace.items()}
            self._recorder.add_tags(TagCall("tags_batch", project, merged))
            return json_reply(200, {"success": True})
        return self._evals(rt.params["project_id"], data)

    def _evals(self, project_id: str, data: dict[str, Any]) -> Reply:
        for name in ("eval_name", "trace_id", "trace_span_id"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise _Invalid(422, f"{name}: expected a non-empty string")
        for name in ("examples", "judgment_scorers", "custom_scorers"):
            if not isinstance(data.get(name, []), list):
                raise _Invalid(422, f"{name}: expected a list")
        if "examples" not in data:
            raise _Invalid(422, "examples: field required")
        record = EvalRecord(project_id, data["eval_name"], data["trace_id"], data["trace_span_id"], data)
        self._recorder.add_eval(record)
        message = f"Evaluation run {data['eval_name']!r} queued"
        return json_reply(200, {"success": True, "status": "queued", "message": message})

    def _traces(self, headers: Mapping[str, str], body: bytes) -> Reply:
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in _PROTOBUF_TYPES:
            raise _Invalid(415, f"expected application/x-protobuf, got {content_type!r}")
        project_id = headers.get("x-project-id") or None
        if project_id is None and self._settings.require_project_id:
            raise _Invalid(400, "missing x-project-id header")
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise _Invalid(400, f"undecodable ExportTraceServiceRequest: {exc}") from None
        self._recorder.add_spans(_decode_spans(request, project_id))
        return Reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


def _decode_content(headers: Mapping[str, str], body: bytes) -> bytes:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise _Invalid(415, f"unsupported content-encoding {encoding!r}")
    try:
        return gzip.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise _Invalid(400, f"bad gzip body: {exc}") from None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Invalid(400, f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Invalid(422, "body: expected a JSON object")
    return data


def _str_list(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(422, f"{name}: expected a list of strings")
    return tuple(value)


def _decode_spans(request: ExportTraceServiceRequest, project_id: str | None) -> list[SpanRecord]:
    spans: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    raise _Invalid(400, "span with an invalid trace_id or span_id length")
                spans.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=span.kind,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        attributes=_attributes(span.attributes),
                        resource_attributes=resource,
                        scope_name=scope_spans.scope.name,
                        project_id=project_id,
                    )
                )
    return spans


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in pairs}


def _any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)
