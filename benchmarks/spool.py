"""The durable spool: append latency and throughput, replay cost, and what damage costs, against SQLite.

Variants, all storing the same ~100 KB payloads with their metadata, one after another in one run:

- ``segments`` (``judgeval_async._delivery._spool.Spool``) with ``fsync_interval`` None (never, except close),
  1.0 s (the default) and 0 (every append);
- ``sqlite WAL`` with ``synchronous=NORMAL`` and ``FULL``, one row (one transaction) per append, stdlib ``sqlite3``.

Measured per variant: the time one ``append`` blocks its caller (p50/p99/max: this is what the SDK loop thread
would wait), appends/s and MB/s; replay: start-up scan (a new process adopting the spool) and oldest-first
read + ack of every record. Then damage: one byte flipped inside a payload, one inside a record header, and the
file cut at 60 %: how many records come back, and whether the damaged one is *detected* or returned wrong.

Last, spill under load: a tracer at 1 000 spans/s + 20 ``tag()``/s against the local server (its own process),
healthy and then down (every payload spilled on the SDK loop thread): the loop's lag (the runtime's own probe,
sampled every 0.1 s) and the time one ``tag()`` call takes on the caller, per phase. It says whether spill I/O on
the loop thread is worth moving to a worker thread.

Run: ``python benchmarks/spool.py`` (about a minute) or ``--quick``. Writes ``results/spool.json`` and ``.md``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import markdown_table, parse_args, server_process, summarize, write_results

from judgeval_async._delivery._envelope import Envelope, new_envelope
from judgeval_async._delivery._spool import Spool

PAYLOAD_BYTES = 100_000


def payloads(n: int) -> list[Envelope]:
    # Random bytes: compressed OTLP is close to incompressible, and the file system should not get it cheaper.
    return [
        new_envelope(os.urandom(PAYLOAD_BYTES), signal="spans", items=500, route="otlp_traces", extra={"i": str(i)})
        for i in range(n)
    ]


class SqliteSpool:
    """The SQLite alternative, as small as it can be: one table, one transaction per append and per ack."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS rec (id INTEGER PRIMARY KEY, signal TEXT, items INT, key TEXT, route TEXT,"
            " created REAL, payload BLOB)"
        )

    def append(self, env: Envelope) -> bool:
        self.db.execute(
            "INSERT INTO rec (signal, items, key, route, created, payload) VALUES (?, ?, ?, ?, ?, ?)",
            (env.signal, env.items, env.idempotency_key, env.route, env.created, env.payload),
        )
        return True

    def replay(self) -> tuple[int, int]:
        """(records read and acked, rows that raised) in id order, skipping past an unreadable row."""
        read = errors = 0
        last = 0
        while True:
            try:
                row = self.db.execute(
                    "SELECT id, payload FROM rec WHERE id > ? ORDER BY id LIMIT 1", (last,)
                ).fetchone()
            except sqlite3.DatabaseError:
                errors += 1
                last += 1
                if errors > 10_000:
                    break
                continue
            if row is None:
                break
            last = row[0]
            try:
                self.db.execute("DELETE FROM rec WHERE id = ?", (last,))
            except sqlite3.DatabaseError:
                errors += 1
            read += 1
        return read, errors

    def read_all(self) -> tuple[list[bytes], int]:
        """Every payload readable in id order, and the rows that raised."""
        out: list[bytes] = []
        errors = 0
        last = 0
        while True:
            try:
                row = self.db.execute(
                    "SELECT id, payload FROM rec WHERE id > ? ORDER BY id LIMIT 1", (last,)
                ).fetchone()
            except sqlite3.DatabaseError:
                errors += 1
                last += 1
                if errors > 200:
                    break
                continue
            if row is None:
                break
            last = row[0]
            out.append(bytes(row[1]))
        return out, errors

    def close(self) -> None:
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.db.close()


def time_appends(append: Callable[[Envelope], bool], envs: list[Envelope]) -> tuple[list[float], float]:
    lat: list[float] = []
    t_all = time.perf_counter()
    for e in envs:
        t0 = time.perf_counter()
        ok = append(e)
        lat.append(time.perf_counter() - t0)
        assert ok
    return lat, time.perf_counter() - t_all


def bench_variant(name: str, n: int, root: Path) -> dict[str, Any]:
    envs = payloads(n)
    directory = root / name.replace(" ", "_").replace("=", "")
    if name.startswith("segments"):
        fsync: float | None = {"never": None, "1s": 1.0, "every": 0.0}[name.split("fsync=")[1]]
        spool = Spool(directory, fsync_interval=fsync, max_bytes=1 << 40)
        lat, total = time_appends(spool.append, envs)
        t0 = time.perf_counter()
        spool.close()
        close_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reader = Spool(directory)
        scan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        count = 0
        while (rec := reader.next_record()) is not None:
            reader.ack(rec)
            count += 1
        replay_s = time.perf_counter() - t0
        reader.close()
    else:
        directory.mkdir(parents=True)
        sync = name.split("synchronous=")[1]
        db = SqliteSpool(directory / "spool.db", sync)
        lat, total = time_appends(db.append, envs)
        t0 = time.perf_counter()
        db.close()
        close_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        db = SqliteSpool(directory / "spool.db", sync)
        scan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        count, _ = db.replay()
        replay_s = time.perf_counter() - t0
        db.close()
    shutil.rmtree(directory, ignore_errors=True)
    s = summarize(lat, 1e3)
    return {
        "variant": name,
        "appends": n,
        "append_ms": s,
        "appends_per_s": n / total,
        "mb_per_s": n * PAYLOAD_BYTES / total / 1e6,
        "close_ms": close_s * 1e3,
        "startup_scan_ms": scan_s * 1e3,
        "replay_records": count,
        "replay_per_s": count / replay_s if replay_s > 0 else float("nan"),
    }


def bench_paced(n: int, rate: float, root: Path) -> dict[str, Any]:
    """The default spool at a steady ``rate`` appends/s: how long each append blocks when fsyncs are due once a
    second over a realistic amount of dirty data (the flat-out runs above fsync up to a second of full-speed
    writes at once)."""
    envs = payloads(n)
    spool = Spool(root / "paced", max_bytes=1 << 40)
    lat: list[float] = []
    start = time.perf_counter()
    for i, e in enumerate(envs):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        spool.append(e)
        lat.append(time.perf_counter() - t0)
    spool.close()
    shutil.rmtree(root / "paced", ignore_errors=True)
    return {"rate": rate, "appends": n, "append_ms": summarize(lat, 1e3)}


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def damage(kind: str, n: int, root: Path) -> list[dict[str, Any]]:
    """Store n payloads in each store, damage the file the same way, count what comes back and how."""
    envs = payloads(n)
    originals = [e.payload for e in envs]
    rows = []
    # segments
    d = root / f"dmg_seg_{kind}"
    spool = Spool(d, max_bytes=1 << 40, segment_max_bytes=1 << 40)
    for e in envs:
        spool.append(e)
    spool.close()
    seg = next(d.glob("*.seg"))
    size = seg.stat().st_size
    if kind == "payload byte":
        _flip(seg, size // 2)
    elif kind == "header byte":
        # The header of the record that starts right after the middle one.
        stride = size // n
        _flip(seg, (n // 2) * stride + 8)
    else:
        os.truncate(seg, int(size * 0.6))
    reader = Spool(d)
    got = []
    while (rec := reader.next_record()) is not None:
        got.append(rec.envelope.payload)
        reader.ack(rec)
    st = reader.stats()
    reader.close()
    wrong = sum(1 for p in got if p not in set(originals))
    rows.append(
        {
            "store": "segments",
            "damage": kind,
            "stored": n,
            "returned_intact": len(got) - wrong,
            "returned_wrong": wrong,
            "detected_lost": st.corrupt_records,
        }
    )
    shutil.rmtree(d, ignore_errors=True)
    # sqlite
    d = root / f"dmg_sql_{kind}"
    d.mkdir()
    db = SqliteSpool(d / "spool.db", "NORMAL")
    for e in envs:
        db.append(e)
    db.close()
    path = d / "spool.db"
    size = path.stat().st_size
    if kind == "payload byte":
        _flip(path, size // 2)
    elif kind == "header byte":
        # A b-tree page header: the table's interior page is near the start of the file.
        _flip(path, 4096 + 8)
    else:
        os.truncate(path, int(size * 0.6))
    try:
        db = SqliteSpool(path, "NORMAL")
        got, errors = db.read_all()
        db.db.close()
    except sqlite3.DatabaseError:
        got, errors = [], 1
    wrong = sum(1 for p in got if p not in set(originals))
    rows.append(
        {
            "store": "sqlite WAL",
            "damage": kind,
            "stored": n,
            "returned_intact": len(got) - wrong,
            "returned_wrong": wrong,
            "detected_lost": n - len(got) if errors else 0,
        }
    )
    shutil.rmtree(d, ignore_errors=True)
    return rows


VARIANTS = [
    "segments fsync=never",
    "segments fsync=1s",
    "segments fsync=every",
    "sqlite WAL synchronous=NORMAL",
    "sqlite WAL synchronous=FULL",
]


def bench_spill_under_load(seconds: float) -> list[dict[str, Any]]:
    """1 000 spans/s + 20 tag()/s, ``seconds`` healthy then ``seconds`` down (spilling): loop lag and tag() cost."""
    from judgeval_async import Tracer  # noqa: PLC0415

    out: list[dict[str, Any]] = []
    spool_dir = tempfile.mkdtemp(prefix="spill-load-")
    with server_process() as srv:
        tracer = Tracer(
            project_id="bench-spill",
            api_key=srv.api_key,
            organization_id=srv.org_id,
            api_url=srv.url,
            spool_dir=spool_dir,
        )
        try:
            for phase in ("healthy", "down (spilling)"):
                if phase != "healthy":
                    srv.set_fault(None, kind="refuse", recover_after_seconds=seconds + 30)
                tag_s: list[float] = []
                lags: list[float] = []
                t0 = next_tick = time.monotonic()
                i = 0
                while time.monotonic() - t0 < seconds:
                    for _ in range(10):
                        with tracer.span("op"):
                            if i % 50 == 0:
                                began = time.perf_counter()
                                tracer.tag("t")
                                tag_s.append(time.perf_counter() - began)
                        i += 1
                    if i % 100 == 0:
                        lags.append(tracer.get_health_metrics()["loop_lag_seconds"])
                    next_tick += 0.01
                    time.sleep(max(0.0, next_tick - time.monotonic()))
                health = tracer.get_health_metrics()
                out.append(
                    {
                        "phase": phase,
                        "spans": i,
                        "spans_spooled": health["spans_spooled"],
                        "tag_us": summarize(tag_s, 1e6),
                        "loop_lag_ms": summarize(lags, 1e3),
                    }
                )
        finally:
            tracer.shutdown(timeout=2.0)
            shutil.rmtree(spool_dir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    n = 60 if args.quick else 2000
    root = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=os.environ.get("SPOOL_BENCH_DIR")))
    try:
        results = [bench_variant(v, n, root) for v in VARIANTS]
        # A second pass in reverse order: page-cache and disk state drift between variants.
        results += [bench_variant(v, n, root) for v in reversed(VARIANTS)]
        paced = bench_paced(50 if args.quick else 1000, 100.0, root)
        damages = [row for kind in ("payload byte", "header byte", "cut at 60%") for row in damage(kind, 50, root)]
        spill_load = bench_spill_under_load(3.0 if args.quick else 15.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    merged: dict[str, dict[str, Any]] = {}
    for r in results:  # keep the better of the two passes per variant (less noise from other tenants)
        best = merged.get(r["variant"])
        if best is None or r["append_ms"]["p50"] < best["append_ms"]["p50"]:
            merged[r["variant"]] = r
    rows = [
        [
            v,
            merged[v]["append_ms"]["p50"],
            merged[v]["append_ms"]["p99"],
            merged[v]["append_ms"]["max"],
            merged[v]["appends_per_s"],
            merged[v]["mb_per_s"],
            merged[v]["startup_scan_ms"],
            merged[v]["replay_per_s"],
        ]
        for v in VARIANTS
    ]
    need = 1000 * 1000 / PAYLOAD_BYTES  # 1 000 spans/s at a generous 1 KB per encoded span = 10 appends/s
    default = merged["segments fsync=1s"]
    markdown = (
        f"## Append and replay, {n} payloads of {PAYLOAD_BYTES // 1000} KB (best of 2 passes)\n\n"
        + markdown_table(
            [
                "variant",
                "append p50 ms",
                "p99 ms",
                "max ms",
                "appends/s",
                "MB/s",
                "start-up scan ms",
                "replay+ack /s",
            ],
            rows,
        )
        + f"\n\n1 000 spans/s at ~1 KB per encoded span is ~{need:.0f} appends/s of 100 KB: the default variant "
        f"sustains {default['appends_per_s']:,.0f}/s ({default['appends_per_s'] / need:,.0f}x headroom).\n\n"
        f"## Paced: the default spool at {paced['rate']:.0f} appends/s (10x the need), {paced['appends']} appends\n\n"
        + markdown_table(
            ["append p50 ms", "p99 ms", "max ms"],
            [[paced["append_ms"]["p50"], paced["append_ms"]["p99"], paced["append_ms"]["max"]]],
        )
        + "\n\n## Damage: what comes back (50 records)\n\n"
        + markdown_table(
            ["store", "damage", "stored", "returned intact", "returned WRONG (undetected)", "detected lost"],
            [
                [d["store"], d["damage"], d["stored"], d["returned_intact"], d["returned_wrong"], d["detected_lost"]]
                for d in damages
            ],
        )
        + "\n\n## Spill under load: 1 000 spans/s + 20 tag()/s, healthy, then down (every payload spilled)\n\n"
        + markdown_table(
            ["phase", "spans", "spooled", "tag() p50 µs", "p99 µs", "max µs", "loop lag p50 ms", "p99 ms", "max ms"],
            [
                [
                    r["phase"],
                    r["spans"],
                    r["spans_spooled"],
                    r["tag_us"]["p50"],
                    r["tag_us"]["p99"],
                    r["tag_us"]["max"],
                    r["loop_lag_ms"]["p50"],
                    r["loop_lag_ms"]["p99"],
                    r["loop_lag_ms"]["max"],
                ]
                for r in spill_load
            ],
        )
        + "\n"
    )
    print(markdown)
    data = {"quick": args.quick, "variants": results, "paced": paced, "damage": damages, "spill_load": spill_load}
    write_results("spool", data, markdown, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
