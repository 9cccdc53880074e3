"""OTLP/HTTP traces on the local server: the stock OpenTelemetry exporter, and hand-built bodies."""

from __future__ import annotations

import gzip

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.timeout(60)

TRACES = "/otel/v1/traces"
PROJECT = "proj-123"


def export_spans(srv: LocalJudgmentServer, compression: Compression = Compression.NoCompression):
    """Export a parent and a child span through the stock exporter; return their SDK spans."""
    exporter = OTLPSpanExporter(
        endpoint=f"{srv.url}{TRACES}",
        headers={**srv.auth_headers(), "x-project-id": PROJECT},
        compression=compression,
        timeout=10,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "agent", "deploy": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test-scope")
    try:
        with tracer.start_as_current_span("parent") as parent:
            parent.set_attributes(
                {
                    "s": "text",
                    "i": 42,
                    "f": 1.5,
                    "b": True,
                    "ls": ["a", "b"],
                    "li": [1, 2, 3],
                    "lb": [True, False],
                }
            )
            with tracer.start_as_current_span("child") as child:
                child.set_status(Status(StatusCode.ERROR, "boom"))
    finally:
        provider.shutdown()  # closes the exporter's HTTP session
    return parent, child


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_stock_exporter_spans_arrive_decoded(local_server, compression):
    """Spans from OTLPSpanExporter arrive with their real ids, parentage and typed attributes."""
    parent, child = export_spans(local_server, compression)
    assert local_server.wait_for(spans=2, timeout=10)
    ctx_p, ctx_c = parent.get_span_context(), child.get_span_context()
    spans = local_server.spans
    p = spans[(format(ctx_p.trace_id, "032x"), format(ctx_p.span_id, "016x"))]
    c = spans[(format(ctx_c.trace_id, "032x"), format(ctx_c.span_id, "016x"))]
    assert (p.name, c.name) == ("parent", "child")
    assert p.parent_span_id is None
    assert c.parent_span_id == p.span_id == format(ctx_p.span_id, "016x")
    assert c.trace_id == p.trace_id
    assert p.attributes == {
        "s": "text",
        "i": 42,
        "f": 1.5,
        "b": True,
        "ls": ["a", "b"],
        "li": [1, 2, 3],
        "lb": [True, False],
    }
    assert p.resource_attributes["service.name"] == "agent"
    assert p.resource_attributes["deploy"] == 3
    assert p.scope_name == "test-scope"
    assert p.project_id == PROJECT
    assert c.status_code == 2 and c.status_message == "boom"  # STATUS_CODE_ERROR
    assert 0 < p.start_time_unix_nano <= c.start_time_unix_nano <= c.end_time_unix_nano
    assert c.end_time_unix_nano <= p.end_time_unix_nano
    assert local_server.request_count("traces", 200) == 2  # SimpleSpanProcessor: one per span


def test_gzip_export_is_smaller_on_the_wire(local_server):
    """With gzip, the exporter sends Content-Encoding: gzip and wire bytes < decoded bytes."""
    export_spans(local_server, Compression.Gzip)
    assert local_server.wait_for(spans=2, timeout=10)
    headers = local_server.headers_seen("traces")
    assert all(h["content-encoding"] == "gzip" for h in headers)
    assert all(h["content-type"] == "application/x-protobuf" for h in headers)
    wire, decoded = local_server.bytes_received("traces")
    assert 0 < wire < decoded


def build_request(trace_id: bytes = b"\x01" * 16, span_id: bytes = b"\x02" * 8) -> bytes:
    """A one-span ExportTraceServiceRequest with a nested kvlist attribute."""
    nested = AnyValue()
    nested.kvlist_value.values.append(KeyValue(key="k", value=AnyValue(string_value="v")))
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        name="hand-built",
        attributes=[KeyValue(key="nested", value=nested), KeyValue(key="empty", value=AnyValue())],
    )
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    return request.SerializeToString()


def post_traces(srv: LocalJudgmentServer, body: bytes, **headers: str) -> httpx.Response:
    base = {**srv.auth_headers(), "Content-Type": "application/x-protobuf", "x-project-id": "p"}
    with httpx.Client(base_url=srv.url, timeout=5.0) as c:
        return c.post(TRACES, content=body, headers={**base, **headers})


def test_reply_is_an_empty_export_response(local_server):
    """A good export gets 200 with an (empty) protobuf ExportTraceServiceResponse."""
    r = post_traces(local_server, build_request())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    response = ExportTraceServiceResponse()
    response.ParseFromString(r.content)
    assert not response.HasField("partial_success")
    (span,) = local_server.spans.values()
    assert span.attributes == {"nested": {"k": "v"}, "empty": None}
    assert (span.trace_id, span.span_id) == ("01" * 16, "02" * 8)


def test_duplicate_delivery_shows_only_in_raw_spans(local_server):
    """The same span exported twice is one distinct span and two raw ones."""
    body = build_request()
    assert post_traces(local_server, body).status_code == 200
    assert post_traces(local_server, gzip.compress(body), **{"Content-Encoding": "gzip"}).status_code == 200
    assert len(local_server.spans) == 1
    assert len(local_server.raw_spans) == 2


def test_missing_project_id_is_400_unless_optional(local_server_factory):
    """Traces without x-project-id are a 400, unless the server was built not to require it."""
    strict = local_server_factory()
    with httpx.Client(base_url=strict.url, timeout=5.0) as c:
        headers = {**strict.auth_headers(), "Content-Type": "application/x-protobuf"}
        assert c.post(TRACES, content=build_request(), headers=headers).status_code == 400
    lenient = local_server_factory(require_project_id=False)
    with httpx.Client(base_url=lenient.url, timeout=5.0) as c:
        headers = {**lenient.auth_headers(), "Content-Type": "application/x-protobuf"}
        assert c.post(TRACES, content=build_request(), headers=headers).status_code == 200
    (span,) = lenient.spans.values()
    assert span.project_id is None


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff", build_request(trace_id=b"\x01" * 3), build_request(span_id=b"")],
    ids=["garbage", "short-trace-id", "empty-span-id"],
)
def test_undecodable_or_invalid_export_is_400(local_server, body):
    """A body that is not a valid ExportTraceServiceRequest is a 400."""
    assert post_traces(local_server, body).status_code == 400
    assert local_server.raw_spans == []


def test_non_protobuf_content_type_is_415(local_server):
    """OTLP/JSON is not served: a JSON content type on traces is a 415."""
    r = post_traces(local_server, b"{}", **{"Content-Type": "application/json"})
    assert r.status_code == 415


def test_traces_require_auth(local_server):
    """Traces without the API key are a 401."""
    with httpx.Client(base_url=local_server.url, timeout=5.0) as c:
        r = c.post(
            TRACES,
            content=build_request(),
            headers={"Content-Type": "application/x-protobuf", "x-project-id": "p"},
        )
    assert r.status_code == 401


def test_exporter_sees_injected_status_fault(local_server):
    """A non-retryable injected status reaches the stock exporter as a failed export."""
    local_server.set_fault("traces", kind="status", status=400)
    export_spans(local_server)
    assert local_server.request_count("traces", 400) == 2
    assert local_server.spans == {}
