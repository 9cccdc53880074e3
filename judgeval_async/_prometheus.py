"""Prometheus exposition: a collector that reads the loss ledger at scrape time, and a ``/metrics`` server.

Nothing is counted twice: the ledger (``_metrics``) is the only place events are counted, and this module only
reads it when scraped. The collector is registered on a registry of our own, never on prometheus_client's global
``REGISTRY``; a user who wants the metrics in their registry registers :meth:`Tracer.metrics_collector` there, or
mounts ``prometheus_client.make_asgi_app(registry=...)`` in their ASGI app (docs/metrics.md).
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from ._errors import MetricsServerError
from ._multiprocess import CATALOGUE, MetricSpec, MetricsSource, Values, aggregate, collect_values, metrics_dir
from ._multiprocess import write_values as _write_values
from ._runtime import app_signals_blocked

__all__ = ["FROM_ENV", "JudgevalCollector", "MetricsServer", "start_metrics_server"]

logger = logging.getLogger(__name__)

_THREAD_NAME = "judgeval-metrics-server"


class _FromEnv(enum.Enum):
    TOKEN = "from-env"


# Default of ``multiprocess_dir``: read JUDGEVAL_METRICS_DIR / PROMETHEUS_MULTIPROC_DIR when the collector is built.
FROM_ENV = _FromEnv.TOKEN


def _family(spec: MetricSpec) -> Metric:
    labels = list(spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=labels)
    return HistogramMetricFamily(spec.name, spec.help, labels=labels)


def render(values: Values) -> Iterator[Metric]:
    """One metric family per catalogue entry, with the samples found in ``values`` (sorted, for stable output)."""
    for spec in CATALOGUE:
        family = _family(spec)
        if isinstance(family, HistogramMetricFamily):
            les = [*(repr(float(b)) for b in spec.buckets), "+Inf"]  # as prometheus_client spells le
            for labels, (buckets, total) in sorted(values.histograms.get(spec.name, {}).items()):
                family.add_metric(list(labels), list(zip(les, buckets, strict=True)), total)
        else:
            assert isinstance(family, (CounterMetricFamily, GaugeMetricFamily))
            for labels, value in sorted(values.scalars.get(spec.name, {}).items()):
                family.add_metric(list(labels), value)
        yield family


class JudgevalCollector(Collector):
    """Reads one tracer's ledger at each scrape. Register it on any ``CollectorRegistry``.

    With a multi-process directory (``multiprocess_dir``, by default from ``JUDGEVAL_METRICS_DIR`` or
    ``PROMETHEUS_MULTIPROC_DIR``), each scrape also writes this process's file and merges every process's file
    (see ``_multiprocess``). ``multiprocess_dir=None`` forces single-process mode.

    ``describe()`` lists every metric name, so registering two of these on one registry raises ``ValueError``
    instead of serving duplicate series.
    """

    def __init__(
        self, source: MetricsSource, *, multiprocess_dir: str | os.PathLike[str] | _FromEnv | None = FROM_ENV
    ) -> None:
        self._source = source
        if isinstance(multiprocess_dir, _FromEnv):
            self.multiprocess_dir = metrics_dir()
        else:
            self.multiprocess_dir = None if multiprocess_dir is None else Path(multiprocess_dir)

    def collect(self) -> Iterator[Metric]:
        values = collect_values(self._source)
        directory = self.multiprocess_dir
        if directory is not None:
            try:
                _write_values(values, directory)
                values = aggregate(directory, own=values)
            except Exception:
                # A broken directory must not take the scrape down: serve this process's own numbers.
                logger.warning("judgeval_async cannot aggregate metrics in %s", directory, exc_info=True)
        yield from render(values)

    def describe(self) -> Iterator[Metric]:
        for spec in CATALOGUE:
            yield _family(spec)


class MetricsServer:
    """A running ``/metrics`` HTTP server. ``close()`` is idempotent and bounded; also a context manager."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread, addr: str, registry: CollectorRegistry) -> None:
        self._httpd = httpd
        self._thread = thread
        self._lock = threading.Lock()
        self._closed = False
        self.registry = registry
        self.addr = addr
        self.port: int = httpd.server_port

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving, close the socket, and join the server thread for at most ``timeout`` seconds."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            # socketserver's shutdown() sets this flag and then waits, unbounded, for serve_forever to notice it at
            # its next 0.5 s poll. We set the flag, wake the poll at once with a throw-away connection, and wait
            # only as long as our caller's deadline allows.
            self._httpd._BaseServer__shutdown_request = True  # type: ignore[attr-defined]
            self._wake()
            self._thread.join(timeout)
        self._httpd.server_close()

    def _wake(self) -> None:
        host = "127.0.0.1" if self.addr in ("", "0.0.0.0") else ("::1" if self.addr == "::" else self.addr)
        try:
            with socket.create_connection((host, self.port), timeout=0.2):
                pass
        except OSError:
            pass  # the poll ends within 0.5 s anyway

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"MetricsServer(url={self.url!r}, {state})"


def start_metrics_server(source: MetricsSource, port: int = 9464, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``source``'s metrics at ``http://addr:port/metrics`` from a daemon thread; ``port=0`` picks a free port.

    Binds to loopback unless ``addr`` says otherwise. Raises ``ValueError`` for an impossible port and
    ``MetricsServerError`` (an ``OSError``) if the address cannot be bound; the tracer is unaffected either way.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port: must be an int from 0 to 65535, got {port!r}")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JudgevalCollector(source))
    try:
        with app_signals_blocked():  # its thread must never take SIGTERM/SIGINT from the application's thread
            httpd, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise MetricsServerError(
            f"cannot serve Prometheus metrics on {addr}:{port}: {exc.strerror or exc} "
            "(is another process, or another worker, already using this port?)"
        ) from exc
    thread.name = _THREAD_NAME
    server = MetricsServer(httpd, thread, addr, registry)
    logger.info("judgeval_async serving Prometheus metrics at %s", server.url)
    return server
