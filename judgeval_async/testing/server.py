"""Run the local Judgment API server as its own process.

    python -m judgeval_async.testing.server --port 8090 --latency 100ms-500ms --failure-ratio 0.2

Prints its URL and the credentials it expects (``--api-key``/``--org-id``, by default ``test-key``/``test-org``),
serves until SIGINT/SIGTERM, then prints what it received and exits 0. Faults can be changed while it runs through
``POST /_control/fault`` (see `LocalJudgmentServer`).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from judgeval_async.testing._faults import RATIO_MODES
from judgeval_async.testing._protocol import ENDPOINTS
from judgeval_async.testing._server import LocalJudgmentServer

DEFAULT_API_KEY = "test-key"
DEFAULT_ORG_ID = "test-org"

_EPILOG = f"""\
credentials: every request must carry the API key and organization id this server expects
(default {DEFAULT_API_KEY!r} and {DEFAULT_ORG_ID!r}; change them with --api-key/--org-id), or it answers 401.
Point a Tracer at it with:
  JUDGMENT_API_URL=http://127.0.0.1:8090 JUDGMENT_API_KEY={DEFAULT_API_KEY} JUDGMENT_ORG_ID={DEFAULT_ORG_ID}
"""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``2s``, ``250ms`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 2s, 250ms or 0.5)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_latency(text: str) -> tuple[float, float]:
    """(lo, hi) seconds from ``2s`` (lo == hi) or a range ``100ms-500ms``."""
    lo_text, sep, hi_text = text.partition("-")
    lo = parse_duration(lo_text)
    hi = parse_duration(hi_text) if sep else lo
    if hi < lo:
        raise ValueError(f"latency range must be low-high, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    """The command line, documented in ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m judgeval_async.testing.server",
        description="Local Judgment API server with fault injection (loopback only).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument(
        "--api-key", default=DEFAULT_API_KEY, help=f"API key clients must send (default {DEFAULT_API_KEY!r})"
    )
    parser.add_argument(
        "--org-id", default=DEFAULT_ORG_ID, help=f"organization id clients must send (default {DEFAULT_ORG_ID!r})"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed the fault RNG")
    parser.add_argument("--endpoint", choices=ENDPOINTS, default=None, help="scope faults to one endpoint")
    parser.add_argument("--latency", type=parse_latency, help="e.g. 2s or 100ms-500ms")
    parser.add_argument("--status", type=int, help="answer this status (e.g. 429, 503)")
    parser.add_argument("--retry-after", help="Retry-After header for --status/--failure-ratio")
    parser.add_argument("--failure-ratio", type=float, help="fraction of requests that fail")
    parser.add_argument("--failure-mode", choices=RATIO_MODES, default="status", help="how a ratio failure fails")
    parser.add_argument("--blackhole", action="store_true", help="never answer")
    parser.add_argument("--reset", action="store_true", help="reset connections after the request")
    parser.add_argument("--slow-body", type=parse_duration, help="delay per 1 KiB of body read")
    parser.add_argument("--recover-after-requests", type=int, default=None)
    parser.add_argument("--recover-after-seconds", type=parse_duration, default=None)
    parser.add_argument("--no-batch-tags", action="store_true", help="404 on tags_batch")
    parser.add_argument("--no-require-project-id", action="store_true", help="accept traces without x-project-id")
    return parser


def _apply_faults(server: LocalJudgmentServer, args: argparse.Namespace) -> None:
    scope: str | None = args.endpoint
    recover = {
        "recover_after_requests": args.recover_after_requests,
        "recover_after_seconds": args.recover_after_seconds,
    }
    if args.latency is not None:
        lo, hi = args.latency
        if lo == hi:
            server.set_fault(scope, kind="latency", seconds=lo, **recover)
        else:
            server.set_fault(scope, kind="latency", range=(lo, hi), **recover)
    if args.slow_body is not None:
        server.set_fault(scope, kind="slow_body", chunk_delay=args.slow_body, **recover)
    status = 503 if args.status is None else args.status
    if args.failure_ratio is not None:
        server.set_fault(
            scope,
            kind="ratio",
            ratio=args.failure_ratio,
            mode=args.failure_mode,
            status=status,
            retry_after=args.retry_after,
            **recover,
        )
    elif args.status is not None:
        server.set_fault(scope, kind="status", status=status, retry_after=args.retry_after, **recover)
    if args.blackhole:
        server.set_fault(scope, kind="blackhole", **recover)
    if args.reset:
        server.set_fault(scope, kind="reset", **recover)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, serve until SIGINT/SIGTERM, print a summary; the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        server = LocalJudgmentServer(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            org_id=args.org_id,
            require_project_id=not args.no_require_project_id,
            batch_tags_enabled=not args.no_batch_tags,
            seed=args.seed,
        )
        _apply_faults(server, args)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except OSError as exc:
            print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        # The URL stays the last word of the first line (scripts read it); the credentials follow, because a
        # Tracer pointed here by JUDGMENT_API_URL alone gets 401s.
        print(f"judgeval local server listening on {server.url}", flush=True)
        print(
            f"expects api key {args.api_key!r} and organization id {args.org_id!r}: "
            f"JUDGMENT_API_URL={server.url} JUDGMENT_API_KEY={args.api_key} JUDGMENT_ORG_ID={args.org_id}",
            flush=True,
        )
        faults = {scope: [f.to_dict() for f in fs] for scope, fs in server.active_faults().items()}
        if faults:
            print(f"faults: {json.dumps(faults)}", flush=True)
        # A timeout keeps the main thread waking up, so signal handlers run promptly everywhere.
        while not stop.wait(0.5):
            pass
        server.stop()
        print(_summary(server), flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summary(server: LocalJudgmentServer) -> str:
    stats = server.stats()
    lines = ["received:"]
    for endpoint, outcomes in stats["requests"].items():
        counts = ", ".join(f"{outcome}: {n}" for outcome, n in outcomes.items())
        lines.append(f"  {endpoint:<10} {counts}")
    lines.append(
        f"  spans {stats['spans']} distinct / {stats['raw_spans']} raw; "
        f"tagged traces {stats['tag_traces']} ({stats['tag_calls']} calls); "
        f"evals {stats['evals']} distinct / {stats['raw_evals']} raw"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
