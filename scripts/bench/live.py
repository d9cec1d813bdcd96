#!/usr/bin/env python3
"""Benchmark of the live path: append → envelope at a subscriber, append → current.json, CPU, RSS.

Runs a throwaway redis-server and the real `agg watch` and `agg writer` processes, then has
``--sessions`` sessions append real transcript lines (from the shared corpus, with fresh ids) in
bursts at ``--rate`` lines/s in total for ``--duration`` seconds, while

* an in-process subscriber (:class:`aggregator.subscribe.Subscription`) notes when each envelope
  arrives — latency = arrival − the moment just before the line's write;
* a reader polls ``current.json`` every 5 ms and notes when each appended message first appears;
* the watcher's and writer's CPU and RSS are sampled every second.

Then it measures CPU while idle (right after the load, and again once the watcher dropped to its
slow step), and the latency of a first append after that quiet spell. With ``--history-mb`` it
first writes that much transcript history (corpus copies) for the watcher to ingest at start, so
RSS can be compared with and without a large history. Prints a report; ``--json`` writes it too.

    python -m scripts.bench.live                       # ~4 minutes
    python -m scripts.bench.live --history-mb 1024     # plus 1 GiB of history
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from aggregator import defaults
from aggregator.keys import Keys
from aggregator.live.subscribe import Subscription
from devtools.agg import REPO
from devtools.gen_corpus import default_source
from devtools.redisproc import RedisProcess

CORPUS = default_source()


def corpus_records(max_bytes: int = 20_000) -> list[dict[str, Any]]:
    """Real user/assistant records from the corpus (lines up to ``max_bytes``)."""
    out = []
    for path in sorted(CORPUS.rglob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            if len(raw) > max_bytes:
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("type") in ("user", "assistant"):
                out.append(obj)
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def write_history(projects: Path, megabytes: int) -> int:
    """Copies of the corpus under fresh session ids until ``megabytes`` MB are on disk."""
    files = sorted(CORPUS.rglob("*.jsonl"))
    written = 0
    n = 0
    while written < megabytes * 1_000_000:
        for src in files:
            rel = src.relative_to(CORPUS)
            dst = projects / f"hist{n}-{rel.parts[0]}" / Path(*rel.parts[1:])
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = src.read_bytes()
            # fresh ids so each copy is new history, not duplicates
            session = rel.parts[1].split(".")[0]
            data = data.replace(session.encode(), f"h{n:05d}{session[6:]}".encode())
            data = data.replace(b'"uuid":"', f'"uuid":"h{n}-'.encode())
            dst.write_bytes(data)
            written += len(data)
        n += 1
    return written


class Sampler(threading.Thread):
    """CPU and RSS of some processes, every second."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(1.0):
            row: dict[str, Any] = {"t": round(time.monotonic() - t0, 1)}
            for name, p in self.procs.items():
                with contextlib.suppress(psutil.NoSuchProcess):
                    row[f"{name}_rss_mb"] = p.memory_info().rss / 1e6
            self.samples.append(row)
            if len(self.samples) % 60 == 0:
                print("  RSS at", ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def measure_cpu(procs: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    before = {k: cpu_seconds(p) for k, p in procs.items()}
    time.sleep(seconds)
    return {k: round(100 * (cpu_seconds(p) - before[k]) / seconds, 3) for k, p in procs.items()}


def read_snapshots(current: Path, stop: Any, out: Any) -> None:
    """(Its own process, so parsing a large current.json never delays the subscriber's clock.)
    Poll ``current.json`` every 5 ms; put ``{message id: first time seen}`` and the read count."""
    seen: dict[str, float] = {}
    reads = 0
    last = 0
    while not stop.is_set():
        try:
            mtime = os.stat(current).st_mtime_ns
        except FileNotFoundError:
            time.sleep(0.005)
            continue
        if mtime != last:
            last = mtime
            now = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            try:
                doc = orjson.loads(current.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            reads += 1
            for m in doc["messages"]:
                if "id" in m:
                    seen.setdefault(m["id"], now)
        time.sleep(0.005)
    out.put((seen, reads))


class Collector:
    """Arrival times of envelopes (subscriber thread) and of messages in current.json (reader process)."""

    def __init__(self, client: Any, keys: Keys, current: Path) -> None:
        self.arrived: dict[str, float] = {}
        self.in_snapshot: dict[str, float] = {}
        self.stop = threading.Event()
        self.sub = Subscription(client, keys, since=None, stop=self.stop, poll_s=0.2)
        self.current = current
        self.snapshot_reads = 0
        ctx = multiprocessing.get_context("spawn")
        self._reader_stop = ctx.Event()
        self._reader_out: Any = ctx.Queue()
        self._reader = ctx.Process(target=read_snapshots, args=(current, self._reader_stop, self._reader_out))

    def start(self) -> None:
        threading.Thread(target=self._subscriber, daemon=True).start()
        self._reader.start()

    def _subscriber(self) -> None:
        for raw in self.sub.raw():
            now = time.monotonic()
            env = orjson.loads(raw)
            self.arrived.setdefault(env["id"], now)

    def collect_snapshots(self) -> None:
        """Stop the reader and take what it saw."""
        self._reader_stop.set()
        self.in_snapshot, self.snapshot_reads = self._reader_out.get(timeout=60)
        self._reader.join(10)


class Sessions:
    """``n`` sessions appending corpus records in bursts at ``rate`` lines/s in total."""

    def __init__(self, projects: Path, n: int, rate: float, records: list[dict[str, Any]], seed: int = 1) -> None:
        self.rng = random.Random(seed)
        name = "bench-{:04d}-0000-0000-0000-000000000000.jsonl"
        self.paths = [projects / f"bench-p{i % 4}" / name.format(i) for i in range(n)]
        for p in self.paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.records = records
        self.written: dict[str, float] = {}
        self.messages: set[str] = set()
        self.count = 0

    def _line(self, i: int) -> tuple[str, bytes]:
        obj = dict(self.rng.choice(self.records))
        uid = f"bench-{i}-{self.count}"
        obj["uuid"] = uid
        obj["sessionId"] = self.paths[i].stem
        obj["parentUuid"] = None
        obj["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.count += 1
        return uid, orjson.dumps(obj) + b"\n"

    def burst(self, i: int, size: int) -> None:
        with open(self.paths[i], "ab", buffering=0) as f:
            for _ in range(size):
                uid, data = self._line(i)
                self.written[uid] = time.monotonic()
                self.messages.add(uid)
                f.write(data)

    def run(self, seconds: float) -> None:
        """Bursts of 1-5 lines, from random sessions, spaced so that the mean rate is ``rate``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            size = self.rng.randint(1, 5)
            self.burst(self.rng.randrange(len(self.paths)), size)
            time.sleep(self.rng.expovariate(self.rate / size))


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "wb")
    )


def wait_for(pred: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def latencies(start_at: dict[str, float], seen: dict[str, float], ids: Iterator[str] | set[str]) -> list[float]:
    return [1000 * (seen[i] - start_at[i]) for i in ids if i in seen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rate", type=float, default=40.0, help="lines per second, all sessions together")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of appending")
    ap.add_argument("--interval", type=float, default=defaults.WRITER_INTERVAL_S, help="agg writer --interval")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of each idle CPU measurement")
    ap.add_argument("--no-cold", action="store_true", help="skip waiting for the watcher's slow idle step")
    ap.add_argument("--history-mb", type=int, default=0, help="MB of transcript history to ingest first")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="agg-bench-live-"))
    work.mkdir(parents=True, exist_ok=True)
    projects = work / "claude" / "projects"
    projects.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "sessions": args.sessions,
        "rate_lines_per_s": args.rate,
        "duration_s": args.duration,
        "writer_interval_s": args.interval,
        "cpus": os.cpu_count(),
    }
    if args.history_mb:
        t = time.monotonic()
        report["history_bytes"] = write_history(projects, args.history_mb)
        print(f"wrote {report['history_bytes'] / 1e6:.0f} MB of history in {time.monotonic() - t:.1f} s", flush=True)

    server = RedisProcess(work / "redis", password="bench").start()
    env = dict(os.environ)
    env.update(
        AGG_REDIS_URL=server.url,
        AGG_DATA_DIR=str(work / "data"),
        AGG_CLAUDE_DIR=str(work / "claude"),
        AGG_HOST="bench",
        PYTHONUNBUFFERED="1",
    )
    current = work / "data" / "current.json"
    client = server.client()
    keys = Keys("agg")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t = time.monotonic()
        watch = start(["watch"], env, work / "watch.log")
        procs.append(watch)
        state = work / "data" / "state" / "watch-agg.json"
        ok = wait_for(lambda: state.exists() and json.loads(state.read_text()).get("state") == "watching", 3600)
        if not ok:
            raise SystemExit("the watcher did not start; see " + str(work / "watch.log"))
        report["startup_s"] = round(time.monotonic() - t, 2)
        wp = psutil.Process(watch.pid)
        report["watch_rss_mb_after_start"] = round(wp.memory_info().rss / 1e6, 1)
        writer = start(["writer", "--interval", str(args.interval)], env, work / "writer.log")
        procs.append(writer)
        wr = psutil.Process(writer.pid)
        wait_for(current.exists, 60)
        print(f"watcher up in {report['startup_s']} s (RSS {report['watch_rss_mb_after_start']} MB)", flush=True)

        collector = Collector(client, keys, current)
        collector.start()
        time.sleep(1.0)
        sampler = Sampler({"watch": wp, "writer": wr})
        sampler.start()
        sessions = Sessions(projects, args.sessions, args.rate, corpus_records())
        cpu0 = {"watch": cpu_seconds(wp), "writer": cpu_seconds(wr)}
        t = time.monotonic()
        sessions.run(args.duration)
        elapsed = time.monotonic() - t
        report["lines_appended"] = sessions.count
        report["cpu_under_load_pct"] = {
            "watch": round(100 * (cpu_seconds(wp) - cpu0["watch"]) / elapsed, 2),
            "writer": round(100 * (cpu_seconds(wr) - cpu0["writer"]) / elapsed, 2),
        }
        wait_for(lambda: all(u in collector.arrived for u in sessions.written), 30)
        time.sleep(args.interval * 2 + 2)  # the last lines reach current.json within an interval
        collector.collect_snapshots()
        sub = latencies(sessions.written, collector.arrived, set(sessions.written))
        snap = latencies(sessions.written, collector.in_snapshot, sessions.messages)
        report["envelopes_received"] = len(sub)
        report["append_to_envelope_ms"] = {
            "p50": round(pct(sub, 50), 1),
            "p90": round(pct(sub, 90), 1),
            "p99": round(pct(sub, 99), 1),
            "max": round(max(sub), 1),
            "mean": round(statistics.mean(sub), 1),
        }
        report["append_to_current_json_ms"] = {
            "p50": round(pct(snap, 50)),
            "p99": round(pct(snap, 99)),
            "max": round(max(snap)),
            "seen": len(snap),
        }
        print(f"append → envelope:     {report['append_to_envelope_ms']}", flush=True)
        print(f"append → current.json: {report['append_to_current_json_ms']}", flush=True)

        report["idle_cpu_pct_hot"] = measure_cpu({"watch": wp, "writer": wr}, args.idle)
        print(f"idle CPU right after the load: {report['idle_cpu_pct_hot']}", flush=True)
        if not args.no_cold:
            time.sleep(max(0.0, defaults.WATCH_HOT_WINDOW_S - args.idle + 2))
            report["idle_cpu_pct_cold"] = measure_cpu({"watch": wp, "writer": wr}, args.idle)
            print(f"idle CPU once cold: {report['idle_cpu_pct_cold']}", flush=True)
            first: list[float] = []
            for i in range(5):
                before = len(sessions.written)
                sessions.burst(i, 1)
                uid = list(sessions.written)[before]
                wait_for(lambda u=uid: u in collector.arrived, 10)
                first += latencies(sessions.written, collector.arrived, {uid})
                time.sleep(0.5)
            report["first_append_after_quiet_ms"] = round(first[0], 1)
            report["next_appends_ms"] = [round(x, 1) for x in first[1:]]
            print(f"first append after a quiet spell: {report['first_append_after_quiet_ms']} ms", flush=True)
        sampler.stop.set()
        rss = [s["watch_rss_mb"] for s in sampler.samples if "watch_rss_mb" in s]
        wrss = [s["writer_rss_mb"] for s in sampler.samples if "writer_rss_mb" in s]
        report["watch_rss_mb"] = {"first": round(rss[0], 1), "last": round(rss[-1], 1), "max": round(max(rss), 1)}
        report["rss_timeline_mb"] = [
            [s["t"], round(s.get("watch_rss_mb", 0), 1), round(s.get("writer_rss_mb", 0), 1)]
            for s in sampler.samples[:: max(1, len(sampler.samples) // 20)]
        ]
        report["writer_rss_mb"] = {"first": round(wrss[0], 1), "last": round(wrss[-1], 1), "max": round(max(wrss), 1)}
        report["snapshot_reads"] = collector.snapshot_reads
        collector.stop.set()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
