"""Fork at any moment: every forked child's tracer delivers its own items.

Each scenario runs in a fresh interpreter (a driver script), because the bug lived in the *first* lazy import of
the SDK loop thread, which the pytest process has long done. Children report through their exit status; every wait
on a child has a watchdog, so a hung child fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from judgeval_async import Tracer
from judgeval_async.testing import LocalJudgmentServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# Shared by the drivers: wait for a child with a deadline, kill it if it hangs.
_WAIT_CHILD = """
import os, time
def wait_child(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)  # polling a child's exit status
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"
"""


def _driver(
    tmp_path: Path, name: str, body: str, *args: object, timeout: float = 90.0, prelude: str = ""
) -> dict[str, Any]:
    """Run ``prelude`` + ``body`` as a script in a fresh interpreter; return the JSON of its last stdout line."""
    script = tmp_path / f"{name}.py"
    script.write_text(prelude + textwrap.dedent(body))
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _url(server: LocalJudgmentServer, host: str = "127.0.0.1") -> str:
    return server.url.replace("127.0.0.1", host)


def test_first_sends_import_nothing_on_sdk_threads(local_server: LocalJudgmentServer, tmp_path: Path) -> None:
    """After Tracer() returns, no SDK thread imports a module: not on a first send of any kind, nor on retries."""
    # First requests fail once per endpoint, so the retry and error paths run too.
    local_server.set_fault("traces", kind="status", status=503, recover_after_requests=1)
    local_server.set_fault("evals", kind="status", status=429, retry_after=0.1, recover_after_requests=1)
    local_server.set_fault("tags_batch", kind="reset", recover_after_requests=1)
    out = _driver(
        tmp_path,
        "imports",
        """
        import importlib.abc, json, sys, threading
        from judgeval_async import Tracer

        url, key, org = sys.argv[1:4]
        t = Tracer(project_name="p", api_key=key, organization_id=org, api_url=url, retry_testing=True,
                   schedule_delay=0.05, tag_flush_interval=0.05)
        seen = []

        class Spy(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if threading.current_thread().name.startswith("judgeval-async"):
                    seen.append(name)
                return None

        sys.meta_path.insert(0, Spy())
        for i in range(50):
            with t.span("s" + "x" * 2000):  # large enough to be gzipped
                t.tag(["a", "b"])
                t.async_evaluate("faithfulness", {"input": "x" * 3000, "i": i})
                t.set_attribute("k", {"x": [1, 2]})
        ok = t.force_flush(30)
        t.shutdown(5)
        print(json.dumps({"ok": ok, "imports": sorted(set(seen))}))
        """,
        _url(local_server, "localhost"),  # a host name: resolution runs on the runtime's resolver thread
        local_server.api_key,
        local_server.org_id,
    )
    assert out["ok"]
    assert out["imports"] == []
    assert local_server.request_count("traces", 503) == 1  # the error paths really ran


def test_fork_while_the_loop_thread_is_importing_still_delivers(
    local_server: LocalJudgmentServer, tmp_path: Path
) -> None:
    """A fork that lands while the SDK loop thread imports (held here for a second) leaves a child that delivers."""
    out = _driver(
        tmp_path,
        "mid_import",
        """
        import importlib.abc, json, sys, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running, on 3.12+
        from judgeval_async import Tracer

        url, key, org = sys.argv[1:4]
        t = Tracer(project_name="p", api_key=key, organization_id=org, api_url=url, retry_testing=True,
                   schedule_delay=0.01)
        importing = threading.Event()

        class Stall(importlib.abc.MetaPathFinder):
            # Holds the loop thread's first import (and that module's import lock) for a second.
            def find_spec(self, name, path=None, target=None):
                if threading.current_thread().name.startswith("judgeval-async") and not importing.is_set():
                    importing.set()
                    time.sleep(1.0)
                return None

        sys.meta_path.insert(0, Stall())
        with t.span("parent"):
            pass
        importing.wait(1.0)  # the old code imports httpcore on its first send: fork in the middle of it
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                with t.span("child"):
                    pass
                code = 0 if t.force_flush(10) else 2
            finally:
                os._exit(code)
        child = wait_child(pid, 30)
        t.shutdown(5)
        print(json.dumps({"child": child, "forked_mid_import": importing.is_set()}))
        """,
        _url(local_server),
        local_server.api_key,
        local_server.org_id,
        prelude=_WAIT_CHILD,
    )
    assert out["child"] == 0, out
    assert out["forked_mid_import"] is False  # the loop thread no longer imports at all
    assert "child" in {r.name for r in local_server.spans.values()}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_storm_every_child_delivers(local_server: LocalJudgmentServer, tmp_path: Path) -> None:
    """50 forks at random moments (loop starting, exports in flight, producers busy): every child delivers."""
    forks, per_child = 50, 3
    seed = random.randrange(1 << 30)
    local_server.set_fault("traces", kind="latency", seconds=0.03)  # exports are in flight when forks land
    out = _driver(
        tmp_path,
        "storm",
        """
        import json, random, sys, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running, on 3.12+
        from judgeval_async import Tracer

        url, key, org, forks, per_child, seed = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
        rng = random.Random(seed)
        t = Tracer(project_name="storm", api_key=key, organization_id=org, api_url=url, retry_testing=True,
                   schedule_delay=0.02, tag_flush_interval=0.02, max_export_batch_size=32)
        stop = threading.Event()

        def produce(n):
            i = 0
            while not stop.is_set():
                with t.span(f"parent-{n}-{i}"):
                    t.tag("parent")
                    if i % 10 == 0:
                        t.async_evaluate("faithfulness", {"i": i})
                i += 1
                time.sleep(0.001)

        producers = [threading.Thread(target=produce, args=(n,)) for n in range(3)]
        for p in producers:
            p.start()
        time.sleep(rng.uniform(0.0, 0.15))  # the first fork lands while the loop thread starts up
        children, codes = {}, {}
        for n in range(forks):
            while len(children) >= 4:  # a few children at once: a CI box has two cores
                for pid in list(children):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
                time.sleep(0.005)
            pid = os.fork()
            if pid == 0:
                code = 3
                try:
                    for j in range(per_child):
                        with t.span(f"child-{n}-{j}"):
                            t.tag(f"child-{n}")
                    ok = t.force_flush(20)
                    code = 0 if ok and t.get_health_metrics()["ledger_balanced"] else 2
                finally:
                    os._exit(code)
            children[pid] = n
            time.sleep(rng.uniform(0.0, 0.03))
        for pid, n in children.items():
            codes[n] = wait_child(pid, 40)
        stop.set()
        for p in producers:
            p.join()
        parent_ok = t.force_flush(20)
        t.shutdown(5)
        print(json.dumps({"codes": {str(k): v for k, v in codes.items()}, "parent_ok": parent_ok}))
        """,
        _url(local_server),
        local_server.api_key,
        local_server.org_id,
        forks,
        per_child,
        seed,
        timeout=150.0,
        prelude=_WAIT_CHILD,
    )
    failed = {n: code for n, code in out["codes"].items() if code != 0}
    assert len(out["codes"]) == forks
    assert not failed, f"children that did not deliver (seed {seed}): {failed}"
    assert out["parent_ok"]
    names = {r.name for r in local_server.spans.values()}
    missing = [f"child-{n}-{j}" for n in range(forks) for j in range(per_child) if f"child-{n}-{j}" not in names]
    assert not missing, f"seed {seed}"


@pytest.mark.slow
def test_multiprocessing_fork_pool_with_tracer_built_at_import(
    local_server: LocalJudgmentServer, tmp_path: Path
) -> None:
    """A 'fork' Pool made right after a module built its Tracer at import: every worker of the first round delivers."""
    (tmp_path / "traced_app.py").write_text(
        textwrap.dedent(
            """
            import importlib.abc, os, sys, threading, time
            from judgeval_async import Tracer

            tracer = Tracer(project_name="pool", api_key=os.environ["JT_KEY"], organization_id=os.environ["JT_ORG"],
                            api_url=os.environ["JT_URL"], retry_testing=True, schedule_delay=0.01)
            importing = threading.Event()

            class Stall(importlib.abc.MetaPathFinder):
                # Makes the race certain: holds the loop thread's first import (if it makes one) for a second.
                def find_spec(self, name, path=None, target=None):
                    if threading.current_thread().name.startswith("judgeval-async") and not importing.is_set():
                        importing.set()
                        time.sleep(1.0)
                    return None

            sys.meta_path.insert(0, Stall())
            with tracer.span("imported"):
                pass  # starts the loop thread, which makes its first send
            importing.wait(1.0)  # the pool forks its workers in the middle of that first send

            def work(i):
                with tracer.span(f"task-{i}"):
                    tracer.tag(f"task-{i}")
                return os.getpid(), tracer.force_flush(20)
            """
        )
    )
    os.environ.update(JT_KEY=local_server.api_key, JT_ORG=local_server.org_id, JT_URL=local_server.url)
    try:
        out = _driver(
            tmp_path,
            "pool",
            """
            import json, multiprocessing, sys, warnings
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running, on 3.12+
            sys.path.insert(0, ".")
            import traced_app

            if __name__ == "__main__":
                with multiprocessing.get_context("fork").Pool(4) as pool:
                    first = pool.map(traced_app.work, range(4), chunksize=1)
                    second = pool.map(traced_app.work, range(4, 8), chunksize=1)
                traced_app.tracer.shutdown(5)
                print(json.dumps({"first": first, "second": second}))
            """,
            timeout=120.0,
        )
    finally:
        for key in ("JT_KEY", "JT_ORG", "JT_URL"):
            os.environ.pop(key, None)
    assert all(ok for _, ok in out["first"]), out
    assert all(ok for _, ok in out["second"]), out
    names = {r.name for r in local_server.spans.values()}
    assert {f"task-{i}" for i in range(8)} <= names
    assert "imported" in names


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running, on 3.12+
def test_fork_while_another_thread_holds_a_metrics_lock(
    local_server: LocalJudgmentServer, make_tracer: Callable[..., Tracer]
) -> None:
    """A fork while another thread is inside a histogram update leaves a child whose tracer still delivers."""
    tracer = make_tracer()

    @tracer.observe
    def traced(x: int) -> int:
        return x + 1

    assert traced(1) == 2
    assert tracer.force_flush(timeout=10.0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with tracer.metrics.request_duration("traces")._lock:  # a thread frozen mid-update of a histogram
            held.set()
            release.wait(10.0)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10.0)
        pid = os.fork()
        if pid == 0:  # child: the lock was copied in the held state
            code = 3
            try:
                code = 0 if traced(2) == 3 and tracer.force_flush(timeout=10.0) else 2
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join()
    assert _wait_child(pid, 30.0) == 0
    assert local_server.wait_for(spans=2, timeout=10.0)


def _wait_child(pid: int, timeout: float) -> int | str:
    """Wait for a child with a deadline; kill it if it hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)  # polling a child's exit status
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"
