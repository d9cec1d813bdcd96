#!/usr/bin/env python3
"""Benchmark of the LLM turn pipeline: real redis-server, real `agg worker` processes, a local
HTTP server speaking the OpenAI protocol with zero latency (devtools/fakellm.py).

Prints four figures:

1. turn overhead beyond the provider call (p50/p99): each worker logs, per turn, its total time
   from taking the lease to committing and the time spent in the provider call;
2. turns/s with N workers: conversations ingested at once, time until every one has its turn;
3. share of events coalesced away under bursts: events ingested vs turns run;
4. rate-limit accuracy: requests the server saw vs what the shared limit allows, across workers.

    .venv/bin/python -m scripts.bench.turns [--workers 4] [--convs 400]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import REPO, wait_until
from devtools.fakellm import FakeLLM
from devtools.redisproc import RedisProcess
from devtools.turnkit import Transcripts, record, turn_records

TURN_LINE = re.compile(r"outcome=(\S+) .* ms=([\d.]+) provider_ms=([\d.]+)")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


class Bench:
    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.n = workers
        self.llm = FakeLLM(key="bench-key").start()
        self.redis = RedisProcess(workdir / "redis", password="bench").start()
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AGG_REDIS_URL": self.redis.url,
                "AGG_DATA_DIR": str(self.workdir / "data"),
                "AGG_HOST": "bench",
                "AGG_LLM_PROVIDER": "openai",
                "AGG_LLM_BASE_URL": self.llm.url + "/v1",
                "AGG_LLM_API_KEY": "bench-key",
                "AGG_LLM_RPM": "0",
                "AGG_LLM_TPM": "0",
                "AGG_TURN_DEBOUNCE_S": "0",
                "AGG_TURN_COOLDOWN_S": "0",
                "AGG_TURN_DISPATCH_INTERVAL_S": "0.02",
                "AGG_TURN_CONCURRENCY": str(2 * self.n),
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(extra)
        return env

    def start_workers(self, **extra: str) -> None:
        self.stop_workers()
        client = self.redis.client()
        for _ in range(self.n):
            log = self.workdir / f"worker{len(self.procs)}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "worker"],
                env=self.env(**extra),
                stdout=subprocess.DEVNULL,
                stderr=open(log, "wb"),  # noqa: SIM115
                cwd=REPO,
            )
            self.procs.append((proc, log))
        wait_until(lambda: client.scard("rq:workers:agg-turns") >= self.n, timeout=60, what="workers")
        client.close()

    def stop_workers(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            proc.wait(timeout=30)

    def turn_lines(self) -> list[tuple[str, float, float]]:
        out = []
        for _, log in self.procs:
            for m in TURN_LINE.finditer(log.read_text(errors="replace")):
                out.append((m.group(1), float(m.group(2)), float(m.group(3))))
        return out

    def fresh(self, name: str) -> tuple[Store, Transcripts]:
        client = self.redis.client()
        client.flushall()
        self.procs = []
        self.llm.requests.clear()
        store = Store(client, Keys("agg"), "bench")
        return store, Transcripts(store, self.workdir / name)

    def close(self) -> None:
        self.stop_workers()
        self.redis.stop()
        self.llm.stop()


def quiet(store: Store, committed: int) -> bool:
    """Nothing dirty, scheduled, queued or running, and at least ``committed`` turns committed
    (cheap: the benchmark must not steal the workers' CPU by polling)."""
    r: Any = store.client
    k = store.keys
    pipe = r.pipeline(transaction=False)
    for x in (k.dirty, k.turns_due, k.turns_queued, k.turns_running):
        pipe.zcard(x)
    pipe.hget(k.turns_stats, "committed")
    *cards, done = pipe.execute()
    return not any(cards) and int(done or 0) >= committed


def overhead(b: Bench, convs: int) -> dict[str, Any]:
    """One worker, one conversation at a time: no contention for the CPU."""
    store, t = b.fresh("overhead")
    n0 = b.n
    b.n = 1
    b.start_workers()
    latency = []
    for i in range(convs):
        c = f"conv-{i}"
        started = time.perf_counter()
        t.append(c, record(c, f"{c} b0 l0 a question"), record(c, f"{c} b0 l1 an answer", "assistant"))
        wait_until(functools.partial(quiet, store, i + 1), timeout=60, what="the turn", every=0.0005)
        latency.append((time.perf_counter() - started) * 1000)
    b.stop_workers()  # a turn is committed a moment before its worker logs it
    lines = [x for x in b.turn_lines() if x[0] == "committed"]
    b.n = n0
    over = [ms - prov for _, ms, prov in lines]
    prov = [p for _, _, p in lines]
    return {
        "turns": len(lines),
        "overhead_ms_p50": round(pct(over, 50), 2),
        "overhead_ms_p99": round(pct(over, 99), 2),
        "provider_call_ms_p50": round(pct(prov, 50), 2),
        "ingest_to_commit_ms_p50": round(pct(latency, 50), 1),
        "ingest_to_commit_ms_p99": round(pct(latency, 99), 1),
    }


def throughput(b: Bench, convs: int) -> dict[str, Any]:
    store, t = b.fresh("throughput")
    names = [f"conv-{i}" for i in range(convs)]
    for c in names:
        t.append(c, record(c, f"{c} b0 l0 a question"), record(c, f"{c} b0 l1 an answer", "assistant"), commit=False)
    b.start_workers()
    started = time.perf_counter()
    t.ingest(*names)
    wait_until(lambda: quiet(store, convs), timeout=600, what="all turns", every=0.01)
    secs = time.perf_counter() - started
    b.stop_workers()  # a turn is committed a moment before its worker logs it
    lines = [x for x in b.turn_lines() if x[0] == "committed"]
    over = [ms - prov for _, ms, prov in lines]
    prov = [p for _, _, p in lines]
    return {
        "conversations": convs,
        "workers": b.n,
        "seconds": round(secs, 2),
        "turns_per_s": round(convs / secs, 1),
        "overhead_ms_p50": round(pct(over, 50), 2),
        "overhead_ms_p99": round(pct(over, 99), 2),
        "provider_call_ms_p50": round(pct(prov, 50), 2),
        "provider_call_ms_p99": round(pct(prov, 99), 2),
        "turns_logged": len(lines),
    }


def coalescing(b: Bench, convs: int, bursts: int, events: int) -> dict[str, Any]:
    store, t = b.fresh("bursts")
    names = [f"conv-{i}" for i in range(convs)]
    b.start_workers(AGG_TURN_DEBOUNCE_S="1")
    for burst in range(bursts):
        for c in names:
            t.burst(c, burst, events)  # one ingest batch per event: each marks the conversation dirty
        time.sleep(1.5)
    wait_until(lambda: quiet(store, convs * bursts), timeout=600, what="all turns", every=0.1)
    time.sleep(0.5)
    turns = sum(len(turn_records(store, c)) for c in names)
    ingested = convs * bursts * events
    r: Any = store.client
    stats = {k.decode(): int(v) for k, v in r.hgetall(store.keys.turns_stats).items()}
    b.stop_workers()
    return {
        "conversations": convs,
        "bursts": bursts,
        "events_per_burst": events,
        "events": ingested,
        "turns": turns,
        "provider_calls": len(b.llm.calls()),
        "coalesced_share": round(1 - turns / ingested, 4),
        "followups": stats.get("followups", 0),
        "skipped": stats.get("skipped", 0),
    }


def rate_limit(b: Bench, rpm: int, convs: int) -> dict[str, Any]:
    store, t = b.fresh("limits")
    names = [f"conv-{i}" for i in range(convs)]
    for c in names:
        t.append(c, record(c, f"{c} b0 l0 hello"), commit=False)
    b.start_workers(AGG_LLM_RPM=str(rpm), AGG_LLM_RPM_BURST="1")
    t.ingest(*names)
    wait_until(lambda: quiet(store, convs), timeout=600, what="all turns", every=0.05)
    times = sorted(q.start for q in b.llm.calls(outcome=None))
    interval = 60 / rpm
    span = times[-1] - times[0]
    # the most requests seen in any window of one second, vs what the limit allows in one
    worst_1s = max(sum(1 for x in times[i:] if x - s < 1.0) for i, s in enumerate(times))
    gaps = [b2 - a for a, b2 in itertools.pairwise(times)]
    b.stop_workers()
    return {
        "rpm": rpm,
        "workers": b.n,
        "requests": len(times),
        "span_s": round(span, 3),
        "allowed_in_span": round(span / interval + 1, 2),
        "achieved_rpm": round((len(times) - 1) / span * 60, 1) if span else None,
        "max_in_any_1s": worst_1s,
        "limit_per_1s": round(1 / interval, 2),
        "min_gap_ms": round(min(gaps) * 1000, 1),
        "interval_ms": round(interval * 1000, 1),
    }


def _hammer(url: str, rpm: int, barrier: Any, seconds: float, out: Any) -> None:
    """One process taking requests from the shared limiter as fast as it can (see limiter())."""
    from aggregator.connection import client_from_url
    from workers.config import TurnConfig
    from workers.limits import Limiter

    lim = Limiter(client_from_url(url), Keys("agg"), TurnConfig(provider="openai", rpm=rpm, rpm_burst=1))
    got = []
    barrier.wait()  # every process starts at once, after its imports
    end = time.time() + seconds
    while time.time() < end:
        if lim.try_take(1) == 0:
            got.append(time.time())
    out.put(got)


def limiter(b: Bench, rpm: int, procs: int, seconds: float) -> dict[str, Any]:
    """The limiter alone, saturated by several processes: requests let through vs allowed.

    GCRA with burst 1 gives no credit for a slot a caller was late for, so "let through" is at
    most "allowed" and falls short by the callers' lateness."""
    import multiprocessing as mp

    b.fresh("limiter")
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    barrier = ctx.Barrier(procs)
    ps = [ctx.Process(target=_hammer, args=(b.redis.url, rpm, barrier, seconds, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    times = sorted(t for _ in ps for t in q.get())
    for p in ps:
        p.join()
    span = times[-1] - times[0]
    interval = 60 / rpm
    gaps = [y - x for x, y in itertools.pairwise(times)]
    return {
        "rpm": rpm,
        "processes": procs,
        "let_through": len(times),
        "span_s": round(span, 3),
        "allowed_in_span": round(span / interval + 1, 2),
        "achieved_rpm": round((len(times) - 1) / span * 60, 1),
        "min_gap_ms": round(min(gaps) * 1000, 2),
        "interval_ms": round(interval * 1000, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--convs", type=int, default=400, help="conversations for the throughput run")
    ap.add_argument("--overhead-convs", type=int, default=200)
    ap.add_argument("--burst-convs", type=int, default=50)
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--events", type=int, default=10, help="events per burst per conversation")
    ap.add_argument("--rpm", type=int, default=600)
    ap.add_argument("--limit-convs", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="agg-bench-turns-") as d:
        b = Bench(Path(d), args.workers)
        try:
            results = {
                "overhead": overhead(b, args.overhead_convs),
                "throughput": throughput(b, args.convs),
                "coalescing": coalescing(b, args.burst_convs, args.bursts, args.events),
                "rate_limit": rate_limit(b, args.rpm, args.limit_convs),
                "limiter": limiter(b, 1200, args.workers, 5.0),
            }
        finally:
            b.close()
    print(json.dumps(results, indent=2))
    ov, tp, co = results["overhead"], results["throughput"], results["coalescing"]
    rl, li = results["rate_limit"], results["limiter"]
    print(
        f"\nturn overhead beyond the provider call: p50 {ov['overhead_ms_p50']} ms, p99 {ov['overhead_ms_p99']} ms"
        f" (provider call p50 {ov['provider_call_ms_p50']} ms; ingest to commit p50"
        f" {ov['ingest_to_commit_ms_p50']} ms); under full load p50 {tp['overhead_ms_p50']} ms,"
        f" p99 {tp['overhead_ms_p99']} ms\n"
        f"throughput: {tp['turns_per_s']} turns/s with {tp['workers']} workers ({tp['conversations']} conversations)\n"
        f"coalescing: {co['events']} events -> {co['turns']} turns ({co['coalesced_share']:.1%} coalesced away)\n"
        f"rate limit {rl['rpm']}/min across {rl['workers']} workers: {rl['requests']} requests in {rl['span_s']} s, "
        f"limit allows {rl['allowed_in_span']}; max {rl['max_in_any_1s']} in any 1 s (limit {rl['limit_per_1s']}); "
        f"smallest gap {rl['min_gap_ms']} ms (interval {rl['interval_ms']} ms)\n"
        f"limiter alone, {li['rpm']}/min hammered by {li['processes']} processes: {li['let_through']} let through"
        f" in {li['span_s']} s, limit allows {li['allowed_in_span']} ({li['achieved_rpm']}/min); smallest gap"
        f" {li['min_gap_ms']} ms (interval {li['interval_ms']} ms)"
    )


if __name__ == "__main__":
    main()
