"""The web service `web.py` drives: uvicorn + Starlette, one traced endpoint, in its own process.

    python benchmarks/_web_app.py SUBJECT --url URL [--api-key K --org-id O]

SUBJECT is ``untraced``, ``judgeval_async``, ``otel`` or ``judgeval`` (the PyPI SDK; run with the interpreter of
``.venv-judgeval``, see ``_judgeval_env.py``). Prints ``port <n>`` once it listens on 127.0.0.1. Besides ``GET /work``
(the endpoint under load) it serves ``GET /_bench/stats`` (this process's CPU time, garbage collections by generation,
spans made, the tracer's health) and ``POST /_bench/flush``. Standalone on purpose: it must import with nothing but
Starlette, uvicorn and the subject's SDK installed, so the judgeval venv needs neither judgeval_async nor ``_common``.

The request: an observed ``handle`` span, inside it a sync ``retrieve`` span (~100 µs of CPU) and an async
``generate`` span (yields to the loop once, ~100 µs of CPU), then one ``tag()`` and one ``async_evaluate()``
(for stock OpenTelemetry, which has neither: a span attribute and a span event). Three spans per request.
"""

# Each subject imports its SDK lazily: one interpreter (the judgeval venv) has only one of them installed.
# ruff: noqa: PLC0415
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

SPANS_PER_REQUEST = 3
WORK_N = 400  # iterations of _spin: ~100 µs here


def _spin(n: int) -> int:
    acc = 0
    for i in range(n):
        acc += i * i
    return acc


class GcCounter:
    """Collections per generation since start, from ``gc.callbacks`` (every thread of this process)."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.cpu_ns = 0
        self._t0 = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.thread_time_ns()
        else:
            self.counts[info["generation"]] += 1
            self.cpu_ns += time.thread_time_ns() - self._t0


class Subject:
    """The endpoint's handler plus flush/health for one tracing SDK."""

    def __init__(self) -> None:
        self.spans = 0
        self.handler: Callable[[str], Any] = self._untraced()
        self.flush: Callable[[float], bool] = lambda timeout: True
        self.health: Callable[[], dict[str, Any]] = dict

    def _untraced(self) -> Callable[[str], Any]:
        def retrieve(q: str) -> int:
            return _spin(WORK_N)

        async def generate(n: int) -> str:
            await asyncio.sleep(0)
            return str(_spin(WORK_N) + n)

        async def handle(q: str) -> str:
            return await generate(retrieve(q))

        return handle


def make_burn(subject: Subject, args: argparse.Namespace) -> None:
    """The untraced handlers plus ``--burn-us`` of plain CPU per request, in the request (a control: a tracer whose
    only cost were that much CPU on the request path, with no GIL hand-off to another thread and no GC pressure)."""
    iterations = _calibrate(args.burn_us)
    handle = subject.handler

    async def burning(q: str) -> Any:
        _spin(iterations)
        return await handle(q)

    subject.handler = burning


def _calibrate(micros: float) -> int:
    """Iterations of ``_spin`` taking ``micros`` of CPU here (best of several timings)."""
    n = 10_000
    best = min(_timed(n) for _ in range(20))
    return max(1, round(n * micros / (best * 1e6)))


def _timed(n: int) -> float:
    t0 = time.thread_time()
    _spin(n)
    return time.thread_time() - t0


def make_judgeval_async(subject: Subject, args: argparse.Namespace) -> None:
    from judgeval_async import Tracer

    # Settings under test (eval_transport, batch size, ...) come from JUDGMENT_* variables (web.py's variants).
    tracer = Tracer(project_name="bench-web", api_key=args.api_key, organization_id=args.org_id, api_url=args.url)

    @tracer.observe
    def retrieve(q: str) -> int:
        return _spin(WORK_N)

    @tracer.observe
    async def generate(n: int) -> str:
        await asyncio.sleep(0)
        return str(_spin(WORK_N) + n)

    @tracer.observe
    async def handle(q: str) -> str:
        out = await generate(retrieve(q))
        tracer.tag(["web"])
        tracer.async_evaluate("faithfulness", {"input": q, "actual_output": out})
        return out

    subject.handler = handle
    subject.flush = lambda timeout: tracer.force_flush(timeout=timeout)
    subject.health = tracer.get_health_metrics
    if free_export_requested():
        _free_export(tracer)


def free_export_requested(env: Mapping[str, str] = os.environ) -> bool:
    """BENCH_WEB_FREE_EXPORT in ``env``: "1" on, unset/""/"0" off; anything else is an error naming the variable.
    web.py reads a variant's environment with it too, to leave such a variant out of its no-loss check."""
    raw = env.get("BENCH_WEB_FREE_EXPORT", "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"BENCH_WEB_FREE_EXPORT: expected 1 or 0, got {raw!r}")
    return raw == "1"


def _free_export(tracer: Any) -> None:
    """An experiment knob (docs/performance.md, "If export were free"): every span, tag and evaluation is discarded
    where it would be handed to the SDK's loop, so the loop thread has nothing to encode or send and the backend
    nothing to decode, while the caller does all its usual work: the tail of the caller's tracing alone, a floor for
    any design that moves export out of the process. The backend receives nothing (web.py does not count it)."""
    for service in (tracer._spans, tracer._tags, tracer._evals):  # the three pipelines' producer side
        service.offer = lambda item: True


def make_otel(subject: Subject, args: argparse.Namespace) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from judgeval_async.testing import project_id_for

    exporter = OTLPSpanExporter(
        endpoint=f"{args.url}/otel/v1/traces",
        headers={
            "Authorization": f"Bearer {args.api_key}",
            "X-Organization-Id": args.org_id,
            "x-project-id": project_id_for("bench-web"),
        },
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-web"}), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    otel = provider.get_tracer("bench")

    def retrieve(q: str) -> int:
        with otel.start_as_current_span("retrieve"):
            return _spin(WORK_N)

    async def generate(n: int) -> str:
        with otel.start_as_current_span("generate"):
            await asyncio.sleep(0)
            return str(_spin(WORK_N) + n)

    async def handle(q: str) -> str:
        with otel.start_as_current_span("handle") as span:
            out = await generate(retrieve(q))
            span.set_attribute("tags", ["web"])
            span.add_event("evaluate", {"scorer": "faithfulness", "input": q, "actual_output": out})
            return out

    subject.handler = handle
    subject.flush = lambda timeout: bool(provider.force_flush(int(timeout * 1000)))


def make_judgeval(subject: Subject, args: argparse.Namespace) -> None:
    """judgeval from PyPI; it reads JUDGMENT_API_URL/KEY/ORG_ID, which web.py points at the local server."""
    from judgeval.trace import Tracer as JTracer  # type: ignore[import-not-found]

    JTracer.init(project_name="bench-web")

    @JTracer.observe(span_type="tool")
    def retrieve(q: str) -> int:
        return _spin(WORK_N)

    @JTracer.observe(span_type="llm")
    async def generate(n: int) -> str:
        await asyncio.sleep(0)
        return str(_spin(WORK_N) + n)

    @JTracer.observe
    async def handle(q: str) -> str:
        out = await generate(retrieve(q))
        JTracer.tag(["web"])
        JTracer.async_evaluate("faithfulness", {"input": q, "actual_output": out})
        return out

    subject.handler = handle
    subject.flush = lambda timeout: bool(JTracer.force_flush(int(timeout * 1000)))


def build_app(subject: Subject, gcc: GcCounter) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def work(request: Request) -> Response:
        out = await subject.handler(request.query_params.get("q", "hello"))
        subject.spans += SPANS_PER_REQUEST
        return PlainTextResponse(out)

    async def stats(request: Request) -> Response:
        try:
            health = subject.health()
        except Exception as exc:  # the benchmark must report, not crash
            health = {"error": repr(exc)}
        body = {
            "cpu_s": time.process_time(),
            # This handler runs on the thread that serves every request: its CPU apart from the SDK's own threads.
            "request_thread_cpu_s": time.thread_time(),
            "gc": gcc.counts,
            "gc_cpu_s": gcc.cpu_ns / 1e9,
            "spans": subject.spans,
            "health": health,
            "rss_kb": _rss_kb(),
            "switch_interval": sys.getswitchinterval(),  # BENCH_WEB_SWITCH_INTERVAL, e.g. from a variant's env
        }
        return Response(json.dumps(body, default=str), media_type="application/json")

    async def flush(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, subject.flush, 30.0)
        return Response(json.dumps({"flushed": bool(ok)}), media_type="application/json")

    return Starlette(
        routes=[Route("/work", work), Route("/_bench/stats", stats), Route("/_bench/flush", flush, methods=["POST"])]
    )


def _rss_kb() -> int:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _deprioritize_sdk_threads(how: str) -> None:
    """An experiment knob (not used by default): run every thread but the main one (the SDK's) at the kernel's idle
    policy ("idle") or at a nice value ("nice:19"), so the SDK's CPU goes to otherwise idle core time. Threads the
    SDK's loop thread starts later inherit it (Linux copies a thread's policy and nice value to those it starts).
    Not done by the SDK itself: on a saturated machine it stalls the app behind a starved thread holding the GIL
    (docs/performance.md, "The SDK thread's priority")."""
    if not how:
        return
    main_tid = threading.main_thread().native_id
    for thread in threading.enumerate():
        tid = thread.native_id
        if tid is None or tid == main_tid:
            continue
        if how == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif how.startswith("nice:"):
            os.setpriority(os.PRIO_PROCESS, tid, int(how[5:]))
        else:
            raise ValueError(f"BENCH_WEB_SDK_THREAD_SCHED: expected 'idle' or 'nice:N', got {how!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subject", choices=("untraced", "burn", "judgeval_async", "otel", "judgeval"))
    parser.add_argument("--url", default="")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--org-id", default="test-org")
    parser.add_argument("--burn-us", type=float, default=0.0, help="burn: CPU µs added to each request")
    args = parser.parse_args()

    import uvicorn

    # An experiment knob (not used by default): a shorter GIL switch interval shows how much of the tail is a
    # request waiting for the GIL held by another thread (sys.getswitchinterval() is 5 ms).
    switch = os.environ.get("BENCH_WEB_SWITCH_INTERVAL")
    if switch:
        sys.setswitchinterval(float(switch))
    gcc = GcCounter()
    subject = Subject()
    makers = {"burn": make_burn, "judgeval_async": make_judgeval_async, "otel": make_otel, "judgeval": make_judgeval}
    if args.subject in makers:
        makers[args.subject](subject, args)
    _deprioritize_sdk_threads(os.environ.get("BENCH_WEB_SDK_THREAD_SCHED", ""))
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listener says TCP; without it
    # Nagle holds every response body back for the client's delayed ACK (~40 ms per keep-alive request).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)  # connections queue until uvicorn serves, so the port is usable once printed
    print(f"port {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        build_app(subject, gcc),
        loop="asyncio",
        http="h11",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=256,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    subject.flush(5.0)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
