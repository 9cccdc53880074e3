"""Outages: what is lost, what arrives after recovery, and memory, side by side with stock OpenTelemetry.

Issue 10's targets, measured against the local Judgment API server in its own process; "down" is the server's
``refuse`` fault (the listener closes and connects are refused), armed with a timed recovery (the control endpoint
lives on the same port, so the server reopens by itself after ``outage`` seconds).

Scenarios (each subject runs in a fresh worker process, so RSS and a ``kill -9`` are its own):

- ``outage``: ``pre`` s healthy, ``outage`` s down, ``post`` s healthy, all at 1 000 spans/s + 20 ``tag()``/s +
  10 ``async_evaluate()``/s (a tag and an evaluation each ride inside one of the spans). Then the worker waits until
  the server holds everything it produced, at most 60 s after recovery. Reported: produced, delivered within 60 s
  of recovery, lost, the seconds the drain took after recovery, our ledger (balanced? dropped by reason) and RSS
  (at the start of the outage, its max during the outage, at its end).
- ``kill -9``: ``pre`` s healthy, then down; ``kill_after`` s into the outage the worker is killed with SIGKILL; the
  server recovers; a fresh process (same API URL, project and spool directory) starts, produces nothing and waits
  up to 60 s. Reported: spans created before the kill, delivered in total, and delivered after the restart.
- ``exit``: the same, but the worker exits normally (``shutdown``, bounded by ``exit_timeout``) while the backend
  is down; reported: how long the exit took, and what the next process delivered.

Subjects: ``ours`` (defaults), ``ours (eval_transport=api)`` (outage only; one POST per evaluation, the default
before ``auto``), ``otel`` (``TracerProvider`` + ``BatchSpanProcessor`` + ``OTLPSpanExporter``, defaults; spans
only: it has no tags or evaluations), and
``judgeval 1.6`` when ``benchmarks/_judgeval_env.py`` provides its venv (else the row says "skipped").
Each worker gets its own spool directory through ``JUDGMENT_SPOOL_DIR`` (ignored by versions without a spool).

    python benchmarks/outage.py [--quick] [--outage SECONDS] [--results-dir DIR]

``--quick``: 2 s outage, ~15 s in all (CI). Default: 120 s outage. ``--outage 600``: the RSS-flatness run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, ServerProcess, markdown_table, server_process, write_results

PROJECT = "bench-outage"
SPAN_RATE = 1000
TAG_RATE = 20
EVAL_RATE = 10
TICK_S = 0.01
RECOVERY_WINDOW_S = 60.0
SUBJECTS = ("ours", "ours (eval_transport=api)", "otel", "judgeval 1.6")
CRASH_SUBJECTS = ("ours", "otel", "judgeval 1.6")
JUDGEVAL = "judgeval 1.6"


# ------------------------------------------------------------------------------------------------------- worker side
def _rss_mib() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):  # not Linux
        return float("nan")


class _Subject:
    """The traced process's SDK: a span (with an optional tag and evaluation inside it), flush, shutdown, ledger."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.health: Any = None
        if name.startswith("ours"):
            from judgeval_async import Tracer  # noqa: PLC0415 - only the worker imports the SDK under test

            extra: dict[str, Any] = {"eval_transport": "api"} if "api" in name else {}
            self.tracer = Tracer(
                project_name=PROJECT,
                api_key=spec["api_key"],
                organization_id=spec["org_id"],
                api_url=spec["url"],
                **extra,
            )
            self.health = self.tracer.get_health_metrics
        elif name == JUDGEVAL:
            # judgeval 1.6 in its own venv (benchmarks/_judgeval_env.py): URL and credentials from JUDGMENT_* (set
            # to the local server only). Its evaluations ride on their span; tags are one POST each, in a thread.
            from judgeval.trace import Tracer as JTracer  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

            JTracer.init(project_name=PROJECT)
            self.jt = JTracer
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

            from judgeval_async.testing import project_id_for  # noqa: PLC0415

            exporter = OTLPSpanExporter(
                endpoint=f"{spec['url']}/otel/v1/traces",
                headers={
                    "Authorization": f"Bearer {spec['api_key']}",
                    "X-Organization-Id": spec["org_id"],
                    "x-project-id": project_id_for(PROJECT),
                },
            )
            self.provider = TracerProvider(resource=Resource.create({"service.name": PROJECT}), shutdown_on_exit=False)
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
            self.otel = self.provider.get_tracer("bench")

    @property
    def has_tags_and_evals(self) -> bool:
        return self.name.startswith("ours") or self.name == JUDGEVAL

    def span(self, i: int, tag: bool, evaluate: bool) -> None:
        if self.has_tags_and_evals:
            t = self.tracer if self.name.startswith("ours") else self.jt  # the same span/tag/async_evaluate calls
            with t.span("op"):
                if tag:
                    t.tag(f"t{i}")
                if evaluate:
                    t.async_evaluate("faithfulness", {"input": f"q{i}", "actual_output": "a"})
        else:
            with self.otel.start_as_current_span("op"):
                pass

    def shutdown(self, timeout: float) -> None:
        if self.name == JUDGEVAL:
            self.jt.shutdown(timeout_millis=int(timeout * 1000))
        elif self.name.startswith("ours"):
            self.tracer.shutdown(timeout=timeout)
        else:
            self.provider.shutdown()


def _stats(url: str) -> dict[str, Any] | None:
    import httpx  # noqa: PLC0415

    try:
        resp = httpx.get(f"{url}/_control/stats", timeout=2.0)
        resp.raise_for_status()
        return dict(resp.json())
    except httpx.HTTPError:
        return None  # down (refused)


def _arm_outage(url: str, seconds: float) -> None:
    import httpx  # noqa: PLC0415

    body = {"kind": "refuse", "recover_after_seconds": seconds}
    httpx.post(f"{url}/_control/fault", json=body, timeout=5.0).raise_for_status()


def _delivered(stats: dict[str, Any]) -> dict[str, int]:
    return {
        "spans": int(stats["spans"]),
        "tags": int(stats["tag_traces"]),
        # On their spans or POSTed (eval_transport "auto"/"span" fall back to the API before the project id is known).
        "evals": int(stats.get("span_evals", 0)) + int(stats["evals"]),
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One traced process: produce through the timeline in ``spec``, then wait / exit / be killed."""
    subject = _Subject(spec["subject"], spec)
    progress = Path(spec["progress"])
    produced = {"spans": 0, "tags": 0, "evals": 0}
    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            rss.append((time.monotonic(), _rss_mib()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    mode = spec["mode"]
    pre, outage, post = spec["pre"], spec["outage"], spec["post"]
    t0 = time.monotonic()
    outage_at = t0 + pre
    recovered_at = outage_at + outage
    produce_until = recovered_at + post if mode == "outage" else outage_at + spec.get("down_for", outage)
    if mode == "replay":
        produce_until = t0
    armed = False
    i = 0
    last_held: dict[str, int] = {}
    next_tick = t0
    with progress.open("w", encoding="utf-8") as prog:
        while True:
            now = time.monotonic()
            if now >= produce_until:
                break
            if not armed and now >= outage_at:
                _arm_outage(spec["url"], outage)
                armed = True
            per_tick = max(1, round(SPAN_RATE * TICK_S))
            for _ in range(per_tick):
                tag = subject.has_tags_and_evals and i % (SPAN_RATE // TAG_RATE) == 0
                evaluate = subject.has_tags_and_evals and i % (SPAN_RATE // EVAL_RATE) == 1
                subject.span(i, tag, evaluate)
                i += 1
                produced["spans"] += 1
                produced["tags"] += tag
                produced["evals"] += evaluate
            # Written every tick: a kill -9 loses at most one tick's count (<= 10 spans) from this record.
            record: dict[str, Any] = {"produced": produced, "phase": "down" if armed else "up", "t": now - t0}
            if subject.health is not None and i % 100 == 0:
                # What sits where (every 0.1 s): at a kill -9, queued + in_flight is what memory held.
                h = subject.health()
                held = {
                    f"{sig}_{state}": h.get(f"{sig}_{state}", 0)
                    for sig in ("spans", "evaluations", "tags")
                    for state in ("queued", "in_flight", "spooled")
                }
                last_held = held
            if subject.health is not None:
                record["held"] = last_held
            prog.seek(0)
            prog.write(json.dumps(record).ljust(600))
            prog.flush()
            next_tick += TICK_S
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    result: dict[str, Any] = {"subject": subject.name, "mode": mode, "produced": produced}
    if mode == "exit":
        began = time.monotonic()
        subject.shutdown(timeout=float(spec.get("exit_timeout", 2.0)))
        result["exit_s"] = time.monotonic() - began
        result["health"] = subject.health() if subject.health else None
        stop.set()
        return result
    # outage / replay: wait for the server to hold everything (at most RECOVERY_WINDOW_S after recovery).
    if mode == "replay":
        recovered_at = time.monotonic()
    want = dict(spec.get("expect", produced))
    if subject.name == JUDGEVAL:
        # Not countable here: judgeval 1.6 exports each span twice (a partial copy first, without its
        # judgment.pending_trace_eval) and the local server keeps the first copy of a span.
        want.pop("evals", None)
    deadline = max(recovered_at, time.monotonic()) + float(spec.get("window", RECOVERY_WINDOW_S))
    delivered: dict[str, int] = {}
    drained_after: float | None = None
    while time.monotonic() < deadline:
        stats = _stats(spec["url"])
        if stats is not None:
            delivered = _delivered(stats)
            if all(delivered[k] >= want[k] for k in want):
                drained_after = time.monotonic() - recovered_at
                break
        time.sleep(0.25)
    stop.set()
    result["delivered"] = delivered
    result["drained_after_s"] = drained_after
    during = [m for t, m in rss if outage_at <= t <= recovered_at]
    # The RSS curve through the outage, one sample per ~30 s (the 10-minute run's "flat" claim).
    result["rss_curve_mib"] = [round(m, 1) for t, m in rss if outage_at <= t <= recovered_at][::60]
    result["rss_mib"] = {
        "outage_start": during[0] if during else float("nan"),
        "outage_mid": during[len(during) // 2] if during else float("nan"),
        "outage_max": max(during) if during else float("nan"),
        "outage_end": during[-1] if during else float("nan"),
    }
    subject.shutdown(timeout=5.0)
    result["health"] = subject.health() if subject.health else None
    # What the server holds once shutdown has flushed (it may deliver a little more than the window saw).
    final = _stats(spec["url"])
    result["delivered_after_shutdown"] = delivered if final is None else _delivered(final)
    return result


# ------------------------------------------------------------------------------------------------------- main side
def _judgeval_available() -> bool:
    """True when benchmarks/_judgeval_env.py exists and its venv imports judgeval."""
    if not (Path(__file__).parent / "_judgeval_env.py").is_file():
        return False
    try:
        import _judgeval_env  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415 - optional helper

        return bool(_judgeval_env.available())
    except Exception:  # an unusable venv means "skipped", not a failed benchmark
        return False


def _spawn(spec: dict[str, Any], spool: Path) -> subprocess.Popen[str]:
    python = sys.executable
    env = dict(os.environ, JUDGMENT_SPOOL_DIR=str(spool), PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path[:1]]))
    if spec["subject"] == JUDGEVAL:
        import _judgeval_env  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415 - optional helper

        python = str(_judgeval_env.PYTHON)
        env = _judgeval_env.judgeval_env(spec["url"], spec["api_key"], spec["org_id"])
    return subprocess.Popen(
        [python, __file__, "--worker", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"worker exited {proc.returncode}"}
    return dict(json.loads(lines[-1]))


def _ledger(health: dict[str, Any] | None) -> dict[str, Any]:
    if not health:
        return {"balanced": None, "dropped": {}, "totals": {}}
    dropped = {
        f"{signal_name}:{reason}": n
        for signal_name, key in (("spans", "spans"), ("evals", "evaluations"), ("tags", "tags"))
        for reason, n in health.get(f"{key}_dropped_by_reason", {}).items()
        if n
    }
    # "spooled": persisted to disk for the next process (the delivery pipeline's state; 0 before it exists).
    totals = {
        name: {
            "created": health.get(created, 0),
            "delivered": health.get(delivered, 0),
            "dropped": health.get(dropped_key, 0),
            "spooled": health.get(f"{prefix}_spooled", 0),
        }
        for name, prefix, created, delivered, dropped_key in (
            ("spans", "spans", "spans_created", "spans_exported", "spans_dropped"),
            ("evals", "evaluations", "evaluations_enqueued", "evaluations_delivered", "evaluations_dropped"),
            ("tags", "tags", "tags_buffered", "tags_flushed", "tags_dropped"),
        )
    }
    return {"balanced": health.get("ledger_balanced"), "dropped": dropped, "totals": totals}


def _slug(subject: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in subject)


def run_outage(srv: ServerProcess, subject: str, sizes: dict[str, float], tmp: Path) -> dict[str, Any]:
    srv.clear_faults()
    srv.reset_records()
    spec = {
        "subject": subject,
        "mode": "outage",
        "url": srv.url,
        "api_key": srv.api_key,
        "org_id": srv.org_id,
        "progress": str(tmp / f"progress-{_slug(subject)}-outage"),
        **sizes,
    }
    proc = _spawn(spec, tmp / f"spool-{_slug(subject)}-outage")
    res = _result(proc, timeout=sizes["pre"] + sizes["outage"] + sizes["post"] + sizes["window"] + 60)
    if "error" in res:
        return res
    produced, delivered = res["produced"], res["delivered"]
    res["lost"] = {k: produced[k] - delivered.get(k, 0) for k in produced}
    if subject == JUDGEVAL:
        delivered["evals"] = res["lost"]["evals"] = None  # not countable: see worker()
    res["ledger"] = _ledger(res.pop("health"))
    return res


def run_crash(srv: ServerProcess, subject: str, sizes: dict[str, float], end: str, tmp: Path) -> dict[str, Any]:
    """``end`` = "kill" (SIGKILL during the outage) or "exit" (normal exit during it); then a fresh process."""
    srv.clear_faults()
    srv.reset_records()
    spool = tmp / f"spool-{_slug(subject)}-{end}"
    progress = tmp / f"progress-{_slug(subject)}-{end}"  # never a file an earlier subject left behind
    base = {"subject": subject, "url": srv.url, "api_key": srv.api_key, "org_id": srv.org_id}
    down_for = sizes["kill_after"]
    # Long enough that the first process dies (or exits) while the server is still down.
    outage = down_for + 5.0
    spec = dict(base, mode="exit", pre=sizes["pre"], outage=outage, post=0.0, down_for=down_for)
    spec["progress"] = str(progress)
    first = _spawn(spec, spool)
    res: dict[str, Any] = {"subject": subject, "end": end}
    if end == "kill":
        began = time.monotonic()
        while time.monotonic() - began < sizes["pre"] + down_for + 60:
            time.sleep(0.05)
            try:
                state = json.loads(progress.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                continue
            # The worker's own clock (its start-up takes a while on a loaded machine): down_for s into the outage.
            if state.get("phase") == "down" and state.get("t", 0.0) >= sizes["pre"] + down_for - 0.1:
                break
        first.send_signal(signal.SIGKILL)
        first.wait()
        state = json.loads(progress.read_text(encoding="utf-8"))
        produced = state["produced"]
        res["held_at_kill"] = state.get("held", {})
    else:
        first_res = _result(first, timeout=sizes["pre"] + down_for + 60)
        if "error" in first_res:
            return first_res
        produced = first_res["produced"]
        res["exit_s"] = first_res["exit_s"]
        res["ledger_first"] = _ledger(first_res.get("health"))
    # Let the outage end (the server reopens on its timer), then what did the first process already deliver?
    up = time.monotonic() + 20
    while (stats := srv_stats(srv)) is None and time.monotonic() < up:
        time.sleep(0.2)
    before = stats["spans"] if stats else 0
    res["produced"] = produced
    res["delivered_before_restart"] = before
    replay = dict(base, mode="replay", pre=0.0, outage=0.0, post=0.0, progress=str(progress) + "-replay")
    replay["expect"] = {"spans": produced["spans"]}
    replay["window"] = sizes["replay_window"]
    second = _result(_spawn(replay, spool), timeout=RECOVERY_WINDOW_S + 60)
    total = second.get("delivered", {}).get("spans", before)
    res["delivered_total"] = total
    res["delivered_after_restart"] = total - before
    res["delivered_fraction"] = total / produced["spans"] if produced["spans"] else float("nan")
    res["ledger_restart"] = _ledger(second.get("health"))
    return res


def srv_stats(srv: ServerProcess) -> dict[str, Any] | None:
    try:
        return srv.stats()
    except Exception:
        return None


def _n(value: int | None) -> str:
    return "n/c" if value is None else f"{value:,}"


def report(outages: list[dict[str, Any]], crashes: list[dict[str, Any]], sizes: dict[str, float]) -> str:
    rows = []
    for r in outages:
        if "skipped" in r or "error" in r:
            rows.append([r["subject"], r.get("skipped") or r.get("error"), "", "", "", "", "", ""])
            continue
        p, d, lost = r["produced"], r["delivered"], r["lost"]
        rss = r["rss_mib"]
        rows.append(
            [
                r["subject"],
                f"{p['spans']:,} / {p['tags']:,} / {p['evals']:,}",
                " / ".join(_n(d.get(k, 0)) for k in ("spans", "tags", "evals")),
                " / ".join(_n(lost[k]) for k in ("spans", "tags", "evals")),
                "-" if r["drained_after_s"] is None else f"{r['drained_after_s']:.1f}",
                {True: "yes", False: "NO", None: "-"}[r["ledger"]["balanced"]],
                ", ".join(f"{k} {v:,}" for k, v in sorted(r["ledger"]["dropped"].items())) or "-",
                f"{rss['outage_start']:.0f} → {rss.get('outage_mid', float('nan')):.0f} → {rss['outage_end']:.0f} "
                f"(max {rss['outage_max']:.0f})",
            ]
        )
    out = [
        f"## {sizes['outage']:.0f} s outage (refused connections) at {SPAN_RATE} spans/s + {TAG_RATE} tags/s + "
        f"{EVAL_RATE} evaluations/s ({sizes['pre']:.0f} s before, {sizes['post']:.0f} s after)",
        "",
        markdown_table(
            [
                "subject",
                "produced spans / tags / evals",
                f"delivered ≤ {sizes['window']:.0f} s after recovery",
                "lost",
                "drained after (s)",
                "ledger balanced",
                "dropped (ledger)",
                "RSS MiB (outage start → middle → end)",
            ],
            rows,
        ),
    ]
    crow = []
    for r in crashes:
        if "error" in r:
            crow.append([r.get("subject", "?"), r.get("end", "?"), r["error"], "", "", "", ""])
            continue
        crow.append(
            [
                r["subject"],
                "kill -9" if r["end"] == "kill" else "exit (shutdown)",
                r["produced"]["spans"],
                r["delivered_before_restart"],
                r["delivered_after_restart"],
                f"{100 * r['delivered_fraction']:.1f} %",
                "-" if "exit_s" not in r else f"{r['exit_s']:.2f}",
            ]
        )
    if crow:
        out += [
            "",
            f"## Process end during an outage ({sizes['kill_after']:.0f} s into it), then a fresh process",
            "",
            markdown_table(
                [
                    "subject",
                    "end",
                    "spans created before",
                    "delivered before",
                    "delivered after restart",
                    "delivered / created",
                    "exit took (s)",
                ],
                crow,
            ),
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: a 2 s outage, a few seconds per scenario")
    parser.add_argument("--outage", type=float, default=None, help="outage seconds (default 120; --quick: 2)")
    parser.add_argument("--no-crash", action="store_true", help="skip the kill -9 and exit scenarios")
    parser.add_argument("--no-outage", action="store_true", help="only the kill -9 / exit scenarios")
    parser.add_argument("--ends", default="kill,exit", help="which process ends to run: kill, exit or both")
    parser.add_argument("--subjects", default=None, help="comma-separated subset of: " + ", ".join(SUBJECTS))
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker)), default=str), flush=True)
        return
    outage = args.outage if args.outage is not None else (2.0 if args.quick else 120.0)
    sizes = {
        "pre": 1.0 if args.quick else 5.0,
        "outage": outage,
        "post": 1.0 if args.quick else 10.0,
        "kill_after": 2.0 if args.quick else min(30.0, outage),
        # How long the restarted process waits for the replay (full runs: the 60 s recovery window).
        "replay_window": 10.0 if args.quick else RECOVERY_WINDOW_S,
        # How long after recovery the outage scenario waits for everything (the target's 60 s; quick: 10 s).
        "window": 10.0 if args.quick else RECOVERY_WINDOW_S,
    }
    outages: list[dict[str, Any]] = []
    crashes: list[dict[str, Any]] = []
    jv_available = _judgeval_available()
    with tempfile.TemporaryDirectory(prefix="judgeval-outage-") as tmp_name, server_process() as srv:
        tmp = Path(tmp_name)
        chosen = SUBJECTS if args.subjects is None else tuple(x.strip() for x in args.subjects.split(","))
        for subject in () if args.no_outage else chosen:
            if subject == JUDGEVAL and not jv_available:
                outages.append({"subject": subject, "skipped": "skipped (no judgeval venv: make bench-judgeval)"})
                continue
            if args.quick and subject == "ours (eval_transport=api)":
                continue
            print(f"outage: {subject} ...", file=sys.stderr, flush=True)
            outages.append(run_outage(srv, subject, sizes, tmp) | {"subject": subject})
        if not args.no_crash:
            for end in (x.strip() for x in args.ends.split(",")):
                for subject in (x for x in CRASH_SUBJECTS if x in chosen and (x != JUDGEVAL or jv_available)):
                    print(f"{end}: {subject} ...", file=sys.stderr, flush=True)
                    crashes.append(run_crash(srv, subject, sizes, end, tmp))
    markdown = report(outages, crashes, sizes)
    print(markdown)
    write_results(
        "outage",
        {"quick": args.quick, "sizes": sizes, "outage": outages, "crash": crashes},
        markdown,
        args.results_dir,
    )


if __name__ == "__main__":
    main()
