"""SIGTERM guard (_signals): what a process holds is delivered before the signal ends it, the signal is never
swallowed, and handlers installed by others keep working. Each scenario runs in its own interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from judgeval_async import Config
from judgeval_async.testing import LocalJudgmentServer

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signals"),
    pytest.mark.timeout(90),
]

# Spans, a tag and an evaluation per item, held in memory (long intervals) until something flushes them.
PRELUDE = """
import os, signal, sys, time
from judgeval_async import Tracer

tracer = Tracer(project_name="sig", schedule_delay=60.0, tag_flush_interval=60.0, exit_timeout=5.0)

def produce(n):
    for i in range(n):
        with tracer.span(f"s{i}"):
            tracer.tag("t")
            tracer.async_evaluate("faithfulness", {"input": "q", "actual_output": "a"})

def ready():
    print("ready", flush=True)
"""


def _spawn(server: LocalJudgmentServer, body: str, **env: str) -> subprocess.Popen[str]:
    environ = dict(
        os.environ,
        JUDGMENT_API_URL=server.url,
        JUDGMENT_API_KEY=server.api_key,
        JUDGMENT_ORG_ID=server.org_id,
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _terminate_when_ready(proc: subprocess.Popen[str]) -> tuple[int, float, str, str]:
    """Wait for "ready", send SIGTERM, return (exit status, seconds from signal to exit, stdout, stderr)."""
    with proc:  # closes the pipes whatever happens
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                proc.kill()
                _, err = proc.communicate()
                raise AssertionError(f"no ready line: {line!r}\n{err}")
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            return proc.returncode, time.monotonic() - sent, out, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _assert_all_delivered(server: LocalJudgmentServer, n: int) -> None:
    assert server.wait_for(spans=n, timeout=10.0)
    assert len(server.spans) == n
    assert len(server.tags) == n
    assert len(server.evals) == n


def test_plain_process_delivers_everything_then_dies_by_the_signal(local_server: LocalJudgmentServer) -> None:
    """No handler anywhere: SIGTERM flushes what is held, then the process still dies by SIGTERM (status -15)."""
    proc = _spawn(
        local_server,
        """
        produce(20)
        ready()
        time.sleep(60)
        """,
    )
    status, elapsed, _, err = _terminate_when_ready(proc)
    assert status == -signal.SIGTERM, err
    assert "Traceback" not in err
    _assert_all_delivered(local_server, 20)
    assert elapsed < 5.0 + 15.0  # exit_timeout plus interpreter slack on a loaded machine


def test_server_that_restores_default_and_reraises_is_covered(local_server: LocalJudgmentServer) -> None:
    """uvicorn's pattern (own handler installed before the Tracer, graceful stop, restore SIG_DFL, raise_signal):
    the re-raised signal is held until the exit flush ran, then ends the process with status -15."""
    proc = _spawn(
        local_server,
        """
        stop = []
        signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
        tracer2 = Tracer(project_name="sig2")  # built after the server's handler, like an app imported by uvicorn
        ready()
        while not stop:
            time.sleep(0.01)
        produce(15)  # in-flight requests finishing during the graceful shutdown
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        print("after-raise", flush=True)  # the server's own code after its re-raise still runs
        """,
    )
    status, _, out, err = _terminate_when_ready(proc)
    assert status == -signal.SIGTERM, err
    assert "after-raise" in out
    _assert_all_delivered(local_server, 15)


def test_handler_reset_after_the_tracer_is_rearmed_on_next_span(local_server: LocalJudgmentServer) -> None:
    """gunicorn's worker resets SIGTERM to SIG_DFL after the Tracer exists: the next span end re-arms the guard."""
    proc = _spawn(
        local_server,
        """
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        produce(12)
        ready()
        time.sleep(60)
        """,
    )
    status, _, _, err = _terminate_when_ready(proc)
    assert status == -signal.SIGTERM, err
    _assert_all_delivered(local_server, 12)


def test_handler_that_reraises_at_once_still_ends_the_process(local_server: LocalJudgmentServer) -> None:
    """A chained handler that restores SIG_DFL and re-raises inside the handler: flush, then die right there."""
    proc = _spawn(
        local_server,
        """
        def die_now(signum, frame):
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        signal.signal(signal.SIGTERM, die_now)
        produce(6)  # re-arms in front of die_now
        ready()
        time.sleep(60)
        print("continued", flush=True)
        """,
    )
    status, _, out, err = _terminate_when_ready(proc)
    assert status == -signal.SIGTERM, err
    assert "continued" not in out
    _assert_all_delivered(local_server, 6)


def test_held_signal_is_released_if_the_process_keeps_running(local_server: LocalJudgmentServer) -> None:
    """A re-raised signal is held only until the exit flush: if the process goes on producing spans instead of
    exiting, the next span flushes and lets the signal end the process."""
    proc = _spawn(
        local_server,
        """
        stop = []
        signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
        produce(7)
        ready()
        while not stop:
            time.sleep(0.01)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        print("after-raise", flush=True)
        with tracer.span("late"):  # ended (so created) before the check at its end releases the signal
            pass
        print("still-running", flush=True)
        time.sleep(60)
        """,
    )
    status, _, out, err = _terminate_when_ready(proc)
    assert status == -signal.SIGTERM, err
    assert "after-raise" in out and "still-running" not in out
    assert local_server.wait_for(spans=8, timeout=10.0)
    assert (len(local_server.spans), len(local_server.tags), len(local_server.evals)) == (8, 7, 7)


def test_application_handler_still_runs_and_decides(local_server: LocalJudgmentServer) -> None:
    """An application's own SIGTERM handler is still called; when it exits normally the status is its own."""
    proc = _spawn(
        local_server,
        """
        calls = []
        signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
        produce(5)  # re-arms in front of the application's handler
        ready()
        while not calls:
            time.sleep(0.01)
        print("handler-called", calls, flush=True)
        sys.exit(3)
        """,
    )
    status, _, out, err = _terminate_when_ready(proc)
    assert status == 3, err
    assert "handler-called [15]" in out
    _assert_all_delivered(local_server, 5)


def test_ignored_signal_stays_ignored(local_server: LocalJudgmentServer) -> None:
    """SIG_IGN set by the application is respected: SIGTERM does not end the process or flush early."""
    proc = _spawn(
        local_server,
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        produce(3)
        ready()
        time.sleep(1.0)
        print("alive", tracer.get_health_metrics()["spans_exported"], flush=True)
        """,
    )
    status, _, out, err = _terminate_when_ready(proc)
    assert status == 0, err
    # The process outlived the ignored signal (a quiet tracer exports partial batches after ~0.2 s anyway, so what
    # was exported before the exit says nothing about the signal).
    assert "alive" in out
    _assert_all_delivered(local_server, 3)


def test_black_holed_backend_keeps_the_exit_deadline(local_server: LocalJudgmentServer) -> None:
    """With a backend that never answers, SIGTERM still ends the process within exit_timeout (plus slack)."""
    local_server.set_fault(None, kind="blackhole")
    proc = _spawn(
        local_server,
        """
        tracer.force_flush(timeout=0.01)
        produce(10)
        ready()
        time.sleep(60)
        """,
        JUDGMENT_READ_TIMEOUT="60",
    )
    status, elapsed, _, err = _terminate_when_ready(proc)
    assert status == -signal.SIGTERM, err
    assert elapsed < 5.0 + 15.0  # the backend would hold the process 60 s
    assert len(local_server.spans) == 0


def test_signal_inside_sdk_code_is_reposted_until_it_returns(local_server: LocalJudgmentServer) -> None:
    """A signal that lands while the main thread runs SDK code (maybe holding a lock) is re-posted, then flushes."""
    proc = _spawn(
        local_server,
        """
        from judgeval_async._signals import signal_guard
        produce(4)
        # A frame that looks like SDK code, as if SIGTERM had interrupted it.
        frame = eval("__import__('sys')._getframe()", {"__name__": "judgeval_async._handoff"})
        ready()
        signal_guard.handle(signal.SIG_DFL, signal.SIGTERM, frame)
        time.sleep(60)  # the re-posted signal runs at the interpreter's next check, outside the "SDK frame"
        """,
    )
    with proc:
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == -signal.SIGTERM, err
    assert "Traceback" not in err and "RecursionError" not in err
    _assert_all_delivered(local_server, 4)


def test_forked_child_does_not_inherit_a_held_signal(local_server: LocalJudgmentServer) -> None:
    """While a SIGTERM is held for the exit flush, a forked child starts with SIGTERM unblocked."""
    proc = _spawn(
        local_server,
        """
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        got = []
        signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
        produce(1)
        ready()
        while not got:
            time.sleep(0.01)
        held = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        pid = os.fork()
        if pid == 0:
            os._exit(1 if signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []) else 0)
        _, code = os.waitpid(pid, 0)
        print("parent-held", held, "child", os.waitstatus_to_exitcode(code), flush=True)
        """,
    )
    status, _, out, err = _terminate_when_ready(proc)
    assert status == 0, err
    assert "parent-held True child 0" in out


def test_knob_off_installs_nothing(local_server: LocalJudgmentServer) -> None:
    """install_signal_handlers=False (or JUDGMENT_INSTALL_SIGNAL_HANDLERS=0) leaves SIGTERM's handler alone."""
    proc = _spawn(
        local_server,
        """
        produce(1)
        print("default", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
        """,
        JUDGMENT_INSTALL_SIGNAL_HANDLERS="0",
    )
    with proc:
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "default True" in out
    assert Config(install_signal_handlers=False).install_signal_handlers is False
    assert Config.from_env({"JUDGMENT_INSTALL_SIGNAL_HANDLERS": "false"}).install_signal_handlers is False
    assert Config().install_signal_handlers is True


def test_sdk_threads_never_take_the_signal(local_server: LocalJudgmentServer) -> None:
    """The loop and resolver threads start with SIGTERM and SIGINT blocked, the main thread's mask is unchanged: a
    process-directed SIGTERM always reaches an application thread, which wakes a main thread asleep in a call (an
    SDK thread that took it only set a flag, and the process slept on: the flaky hang of this file)."""
    proc = _spawn(
        local_server,
        """
        import asyncio
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        produce(1)
        assert tracer.force_flush(timeout=10.0)  # the loop and a resolver thread (name resolution) exist

        async def masks():
            here = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            loop = asyncio.get_running_loop()
            resolver = await loop.run_in_executor(None, signal.pthread_sigmask, signal.SIG_BLOCK, [])
            return here, resolver

        loop_mask, resolver_mask = tracer._runtime.run(masks(), timeout=10.0)
        for name, mask in (("loop", loop_mask), ("resolver", resolver_mask)):
            print(name, signal.SIGTERM in mask, signal.SIGINT in mask, flush=True)
        print("main-unchanged", signal.pthread_sigmask(signal.SIG_BLOCK, []) == before, flush=True)
        """,
    )
    with proc:
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "loop True True" in out
    assert "resolver True True" in out
    assert "main-unchanged True" in out


def test_signal_in_application_code_under_an_observed_function_flushes_at_once(
    local_server: LocalJudgmentServer,
) -> None:
    """An application whose main function is wrapped by observe (our wrapper is on its stack all along) still flushes
    and dies by SIGTERM: only the innermost code counts as "inside the SDK" (this used to recurse until a
    RecursionError and exit 1)."""
    proc = _spawn(
        local_server,
        """
        @tracer.observe
        def main():
            produce(3)
            ready()
            time.sleep(60)
            print("continued", flush=True)
        main()
        """,
    )
    status, elapsed, out, err = _terminate_when_ready(proc)
    assert status == -signal.SIGTERM, err
    assert "RecursionError" not in err and "Traceback" not in err
    assert "continued" not in out
    assert elapsed < 5.0 + 15.0  # exit_timeout plus slack for a loaded machine, not the 60 s sleep
    # The three spans (main is still open when the process dies: never ended, so never created), their evaluations,
    # and the tag of their one trace (main's).
    assert local_server.wait_for(spans=3, evals=3, tag_traces=1, timeout=10.0)
    assert (len(local_server.spans), len(local_server.evals), len(local_server.tags)) == (3, 3, 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads thread signal masks from /proc (Linux)")
def test_metrics_server_thread_never_takes_the_signal(local_server: LocalJudgmentServer) -> None:
    """prometheus_client's server thread (started for start_metrics_server) has SIGTERM and SIGINT blocked too."""
    from judgeval_async import Tracer
    from judgeval_async._prometheus import _THREAD_NAME

    tracer = Tracer(
        project_name="sig",
        api_url=local_server.url,
        api_key=local_server.api_key,
        organization_id=local_server.org_id,
        install_signal_handlers=False,
    )
    try:
        tracer.start_metrics_server(port=0)
        import threading

        (thread,) = [t for t in threading.enumerate() if t.name == _THREAD_NAME]
        with open(f"/proc/self/task/{thread.native_id}/status") as status:
            blocked = int(next(line for line in status if line.startswith("SigBlk:")).split()[1], 16)
        for sig in (signal.SIGTERM, signal.SIGINT):
            assert blocked & (1 << (sig - 1)), sig
    finally:
        tracer.shutdown(timeout=5.0)
