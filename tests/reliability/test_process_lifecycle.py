"""Fork and interpreter exit: the child gets a fresh loop and counts what it inherited; exit keeps its deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _wait_child(pid: int, timeout: float) -> int:
    """Wait for a child with a deadline; kill it (and fail) if it hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)  # polling a child process's exit, not the code under test
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("child process hung")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a multi-threaded process warns on 3.12+
def test_fork_child_and_parent_both_keep_sending(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """After os.fork() the child discards what it inherited (counted) and can send; the parent still can."""
    tracer = make_tracer(schedule_delay=30.0)
    with tracer.span("before-fork"):
        pass
    assert tracer.force_flush(timeout=10.0)
    # Queue a span in the parent that the child will inherit but must not send.
    with tracer.span("inherited"):
        pass
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            health = tracer.get_health_metrics()
            ok = health["spans_dropped_by_reason"] == {"fork_discard": 1} and health["ledger_balanced"]
            with tracer.span("from-child"):
                pass
            ok = ok and tracer.force_flush(timeout=10.0)
            ok = ok and tracer.get_health_metrics()["spans_exported"] == 1
            tracer.shutdown(timeout=2.0)
            code = 0 if ok else 3
        finally:
            os._exit(code)
    assert _wait_child(pid, 30.0) == 0
    with tracer.span("after-fork-parent"):
        pass
    assert tracer.force_flush(timeout=10.0)
    names = sorted(r.name for r in local_server.spans.values())
    assert names == ["after-fork-parent", "before-fork", "from-child", "inherited"]
    health = tracer.get_health_metrics()
    assert health["spans_exported"] == 3 and health["ledger_balanced"]


def _run_script(body: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc, time.monotonic() - started


def test_exit_with_black_holed_backend_keeps_its_deadline(local_server: LocalJudgmentServer) -> None:
    """An interpreter exiting with spans queued and a black-holing backend exits within the exit deadline."""
    local_server.set_fault(None, kind="blackhole")
    proc, elapsed = _run_script(
        f"""
        from judgeval_async import Tracer
        t = Tracer(project_name="p", api_key="{local_server.api_key}", organization_id="{local_server.org_id}",
                   api_url="{local_server.url}", exit_timeout=1.0, read_timeout=60.0, export_timeout=120.0)
        for _ in range(100):
            with t.span("s"):
                t.tag("x")
        t.force_flush(timeout=0.2)  # starts sending into the black hole
        """,
        timeout=60.0,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    # The request really went into the black hole (the server records it once the client hangs up).
    assert local_server.wait_for(requests={"resolve": 1}, timeout=10.0)
    assert local_server.request_count("resolve", "blackhole") >= 1
    # Interpreter start-up and imports take seconds on a loaded CI box; the backend would hold us 60 s+.
    assert elapsed < 20.0


def test_shutdown_cancels_tasks_left_on_the_sdk_loop(make_tracer: Callable[..., Tracer]) -> None:
    """A task still pending on the SDK loop at shutdown (a resolve or send waiting on a dead backend) is cancelled
    before the loop closes, as asyncio.run does: none is left for asyncio to report as "Task was destroyed but it
    is pending!" on the application's stderr."""
    tracer = make_tracer()
    with tracer.span("s"):
        pass
    assert tracer.force_flush(timeout=10.0)  # the loop is running
    loop = tracer._runtime.loop
    assert loop is not None

    async def wait_forever() -> None:
        await asyncio.sleep(3600)

    started = concurrent.futures.Future[asyncio.Task[None]]()
    loop.call_soon_threadsafe(lambda: started.set_result(loop.create_task(wait_forever())))
    task = started.result(timeout=10)
    tracer.shutdown(timeout=5.0)
    assert task.cancelled()
    assert not [t for t in asyncio.all_tasks(loop) if not t.done()]


def test_exit_flushes_queued_spans_when_backend_is_healthy(local_server: LocalJudgmentServer) -> None:
    """Spans still queued at exit are delivered by the atexit hook when the backend answers."""
    proc, _ = _run_script(
        f"""
        from judgeval_async import Tracer
        t = Tracer(project_name="p", api_key="{local_server.api_key}", organization_id="{local_server.org_id}",
                   api_url="{local_server.url}", schedule_delay=60.0)
        for i in range(10):
            with t.span(f"s{{i}}"):
                pass
        """,
        timeout=60.0,
    )
    assert proc.returncode == 0, proc.stderr
    assert local_server.wait_for(spans=10, timeout=10.0)


def _queue_items(tracer: Tracer, n: int) -> None:
    for i in range(n):
        with tracer.span(f"s{i}"):
            tracer.tag("t")
            tracer.async_evaluate("faithfulness", {"i": i})


def _summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "shut down with items not delivered" in r.getMessage()]


def test_shutdown_logs_one_summary_of_what_it_could_not_deliver(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown that leaves items undelivered logs exactly one WARNING line with the counts by signal and reason."""
    local_server.set_fault(None, kind="blackhole")
    tracer = make_tracer(read_timeout=60.0, export_timeout=120.0)
    _queue_items(tracer, 12)
    with caplog.at_level(logging.WARNING, logger="judgeval_async"):
        assert tracer.shutdown(timeout=0.5) is False
        tracer.shutdown(timeout=0.5)  # idempotent: no second line
    [record] = _summaries(caplog)
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    health = tracer.get_health_metrics()
    assert health["ledger_balanced"]
    # Encoded items are persisted to the spool at shutdown (replayed by the next process); the rest are counted.
    assert health["spans_dropped_by_reason"].get("shutdown_deadline", 0) + health["spans_spooled"] == 12
    assert "spans=12 [" in message
    assert "evaluations=12 [" in message
    assert "tags=12 [" in message
    assert "(delivered: spans=0 evaluations=0 tags=0)" in message


def test_shutdown_logs_nothing_when_everything_was_delivered(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer], caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown that delivered everything logs no warning at all."""
    tracer = make_tracer()
    _queue_items(tracer, 12)
    with caplog.at_level(logging.WARNING, logger="judgeval_async"):
        assert tracer.shutdown(timeout=10.0)
    assert local_server.wait_for(spans=12, evals=12, tag_traces=12, timeout=5.0)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_exit_flush_resolves_a_host_name(local_server: LocalJudgmentServer) -> None:
    """At interpreter exit, spans queued for a host-name URL (localhost) are delivered, without a traceback."""
    url = local_server.url.replace("127.0.0.1", "localhost")
    proc, _ = _run_script(
        f"""
        from judgeval_async import Tracer
        t = Tracer(project_name="p", api_key="{local_server.api_key}", organization_id="{local_server.org_id}",
                   api_url="{url}", schedule_delay=60.0)
        for i in range(100):
            with t.span(f"s{{i}}"):
                pass
        """,
        timeout=60.0,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert local_server.wait_for(spans=100, timeout=10.0), len(local_server.spans)


def test_run_exit_flush_called_early_then_atexit_is_a_no_op(local_server: LocalJudgmentServer) -> None:
    """run_exit_flush() (the entry point for a SIGTERM path) flushes within the exit budget; atexit adds nothing."""
    local_server.set_fault("evals", kind="blackhole")
    proc, _ = _run_script(
        f"""
        from judgeval_async import Tracer
        from judgeval_async._runtime import run_exit_flush
        t = Tracer(project_name="p", api_key="{local_server.api_key}", organization_id="{local_server.org_id}",
                   api_url="{local_server.url}", schedule_delay=60.0, exit_timeout=1.0, read_timeout=60.0)
        for i in range(10):
            with t.span(f"s{{i}}"):
                t.async_evaluate("faithfulness", {{"i": i}})
        print(run_exit_flush())
        with t.span("after"):
            pass  # offered after the exit flush: counted as dropped (shutdown), not sent
        print(t.get_health_metrics()["spans_dropped_by_reason"])
        """,
        timeout=60.0,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == ["False", "{'shutdown': 1}"]
    assert local_server.wait_for(spans=10, timeout=10.0)
    assert proc.stderr.count("shut down with items not delivered") == 1, proc.stderr
    assert "evaluations=10 [" in proc.stderr  # persisted to the spool (spooled=) or counted shutdown_deadline


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a multi-threaded process warns on 3.12+
def test_child_of_a_shut_down_tracer_stays_shut_down(make_tracer: Callable[..., Tracer]) -> None:
    """A child forked after shutdown neither restarts the loop nor queues: its offers count ``shutdown``."""
    tracer = make_tracer()
    with tracer.span("before"):
        pass
    assert tracer.shutdown(timeout=10.0)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            with tracer.span("in-child"):
                pass
            health = tracer.get_health_metrics()
            ok = health["spans_dropped_by_reason"].get("shutdown") == 1 and health["ledger_balanced"]
            ok = ok and not tracer._runtime.running and tracer._runtime.loop is None
            code = 0 if ok else 3
        finally:
            os._exit(code)
    assert _wait_child(pid, 30.0) == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a multi-threaded process warns on 3.12+
def test_fork_with_held_metric_locks_does_not_hang_the_child(make_tracer: Callable[..., Tracer]) -> None:
    """A fork while another thread holds the metrics' and metadata locks: the child still records and ends spans."""
    tracer = make_tracer()
    m = tracer.metrics
    held = [m.export_duration._lock, m.observe_overhead._lock, m.calls_ignored._lock, m.values_degraded._lock]
    held += [tracer._metadata._lock, tracer._degrade_log._lock]
    acquired = threading.Event()
    release = threading.Event()

    def hold() -> None:
        for lock in held:
            lock.acquire()
        acquired.set()
        release.wait(30)
        for lock in reversed(held):
            lock.release()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert acquired.wait(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child process
        code = 1
        try:
            signal.alarm(20)  # a lock copied in the held state would hang here for ever
            with tracer.span("child") as span:
                tracer.set_input({"k": 1})
                span.set_attribute("n", 1)
            m.calls_ignored.inc("probe", "x")
            m.values_degraded.inc("probe")
            code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
