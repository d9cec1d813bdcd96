"""Cold-ingest benchmark on a Redis Cluster, next to a single redis-server, same machine, same run.

The same generated history (``devtools/gen_corpus.py``) is ingested, ``--repeat`` times and
interleaved (so the machine's drift hits every mode alike), each run into fresh servers:

floor
    :func:`scripts.bench.ingest.run_floor` on a single redis-server (unix socket): parse every
    line and HSET the raw lines, one pipeline per batch — what any ingester must at least do;
single
    ``agg ingest``'s work (:func:`aggregator.ingest.ingest_buckets`) into a single redis-server,
    over a unix socket as agg's embedded server is reached, and over TCP as a cluster must be;
cluster-rN
    the same into a Redis Cluster of 3 masters with N replicas each
    (:class:`devtools.cluster.Cluster`: TCP on 127.0.0.1, AOF everysec, a password), the store
    in 16 buckets spread over the masters; with the buckets' seq floors, as ``agg ingest`` runs.

Every server has AOF on with ``appendfsync everysec``. Prints MB/s and events/s per mode (median
[min–max]) and each mode's ratio to the floor of the same round; Redis CPU is summed over every
node of the cluster.

Usage::

    python -m scripts.bench.cluster --size 130MB --repeat 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.agg import REPO, free_port
from devtools.cluster import Cluster
from devtools.redisproc import RedisProcess
from scripts.bench.ingest import MB, _cpu, _fmt, _spread, run_floor

MODES = ("floor", "single-unix", "single-tcp", "cluster-r0", "cluster-r1")


def run_buckets(url: str, corpus: Path) -> dict[str, Any]:
    """``agg ingest CORPUS``'s work on whatever ``url`` names (a single Redis or a cluster node)."""
    from aggregator.buckets import Buckets
    from aggregator.config import Settings
    from aggregator.connection import open_redis
    from aggregator.ingest import ingest_buckets
    from aggregator.keys import Keys
    from aggregator.layout import iter_transcripts

    data_dir = Path(tempfile.mkdtemp(prefix="agg-bench-data-"))
    conn = open_redis(Settings(redis_url=url, data_dir=data_dir, claude_dirs=[]))
    buckets = Buckets(conn.client, Keys("agg"), "bench", cluster=conn.cluster)
    buckets.keep_floors(data_dir)
    cpu0 = _cpu()
    started = time.perf_counter()
    report = ingest_buckets(buckets, list(iter_transcripts([corpus])))
    seconds = time.perf_counter() - started
    cpu = _cpu() - cpu0
    used = sum(1 for s in buckets if s.stats()["events"])
    conn.close()
    shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "cpu_s": cpu,
        "bytes": report.bytes,
        "lines": report.lines,
        "events": report.events_added + report.revisions,
        "seconds": seconds,
        "sync_seconds": report.sync_seconds,
        "buckets_used": used,
    }


def worker(mode: str, url: str, corpus: Path) -> None:
    result = run_floor(url, corpus) if mode == "floor" else run_buckets(url, corpus)
    print(json.dumps(result))


class Servers:
    """The Redis (or cluster) one run of ``mode`` writes to, started fresh."""

    def __init__(self, mode: str, workdir: Path) -> None:
        self.mode = mode
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-{mode}-", dir=workdir))
        self.single: RedisProcess | None = None
        self.cluster: Cluster | None = None

    def start(self) -> str:
        if self.mode.startswith("cluster"):
            self.cluster = Cluster(self.dir, masters=3, replicas=int(self.mode[-1])).start()
            return self.cluster.url
        extra = {"port": str(free_port()), "bind": "127.0.0.1"} if self.mode == "single-tcp" else {}
        self.single = RedisProcess(self.dir, appendonly=True, appendfsync="everysec", extra=extra).start()
        if self.mode == "single-tcp":
            return f"redis://127.0.0.1:{extra['port']}"
        return self.single.url

    def pids(self) -> list[int]:
        nodes = self.cluster.nodes if self.cluster else [self.single] if self.single else []
        return [n.proc.pid for n in nodes if n is not None and n.proc is not None]

    def stop(self) -> None:
        if self.cluster:
            self.cluster.stop()
        if self.single:
            self.single.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(mode: str, corpus: Path, workdir: Path) -> dict[str, Any]:
    import psutil

    servers = Servers(mode, workdir)
    try:
        url = servers.start()
        procs = [psutil.Process(p) for p in servers.pids()]
        before = [p.cpu_times() for p in procs]
        proc = subprocess.run(
            [sys.executable, "-m", "scripts.bench.cluster", "--worker", mode, "--url", url, "--corpus", str(corpus)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        after = [p.cpu_times() for p in procs]
        if proc.returncode != 0:
            raise SystemExit(f"bench cluster: {mode} worker failed:\n{proc.stderr}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["redis_cpu_s"] = sum(
            (a.user - b.user) + (a.system - b.system) for a, b in zip(after, before, strict=True)
        )
        return result
    finally:
        servers.stop()


def bench(corpus: Path, repeat: int, workdir: Path, log: Any) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for i in range(repeat):
        order = MODES if i % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            r = measure(mode, corpus, workdir)
            runs[mode].append(r)
            print(
                f"  run {i + 1}/{repeat} {mode:12}: {r['bytes'] / MB / r['seconds']:6.1f} MB/s "
                f"{r['events'] / r['seconds']:8.0f} events/s {r['seconds']:6.2f} s  cpu {r['cpu_s']:5.2f} s  "
                f"redis cpu {r['redis_cpu_s']:5.2f} s",
                file=log,
                flush=True,
            )
    out: dict[str, Any] = {"corpus": str(corpus), "bytes": runs["single-unix"][0]["bytes"]}
    out["events"] = runs["single-unix"][0]["events"]
    out["files"] = sum(1 for _ in corpus.rglob("*.jsonl"))
    for mode, rs in runs.items():
        out[mode] = {
            "mb_per_s": _spread([r["bytes"] / MB / r["seconds"] for r in rs]),
            "events_per_s": _spread([r["events"] / r["seconds"] for r in rs]),
            "cpu_s": _spread([r["cpu_s"] for r in rs]),
            "redis_cpu_s": _spread([r["redis_cpu_s"] for r in rs]),
            "ratio": _spread(
                [
                    (r["bytes"] / r["seconds"]) / (f["bytes"] / f["seconds"])
                    for r, f in zip(rs, runs["floor"], strict=True)
                ]
            ),
        }
        if mode != "floor":
            out[mode]["buckets_used"] = rs[0]["buckets_used"]
    return out


def print_table(res: dict[str, Any], log: Any) -> None:
    print(f"\n{res['bytes'] / MB:.0f} MB, {res['files']} files, {res['events']} events:", file=log)
    print(f"  {'':24}{'MB/s':>20}{'events/s':>24}{'/ floor':>20}{'CPU s':>8}{'Redis CPU s':>13}", file=log)
    names = {
        "floor": "floor (parse + HSET)",
        "single-unix": "single Redis, unix",
        "single-tcp": "single Redis, TCP",
        "cluster-r0": "cluster 3 masters",
        "cluster-r1": "cluster 3 m + 3 repl.",
    }
    for mode in MODES:
        m = res[mode]
        print(
            f"  {names[mode]:24}{_fmt(m['mb_per_s']):>20}{_fmt(m['events_per_s'], digits=0):>24}"
            f"{_fmt(m['ratio'], digits=2):>20}{m['cpu_s']['median']:>8.2f}{m['redis_cpu_s']['median']:>13.2f}",
            file=log,
        )
    single = res["single-tcp"]["mb_per_s"]["median"]
    c0 = res["cluster-r0"]["mb_per_s"]["median"]
    print(f"  cluster (3 masters) / single Redis over TCP: {c0 / single:.2f}", file=log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Cold ingest: a Redis Cluster next to a single redis-server.")
    ap.add_argument("--size", default="130MB", help="size of the generated history")
    ap.add_argument("--profile", default="heavy-user", choices=["heavy-user", "copies"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, help="use this history (a projects/ dir) instead")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.url, args.corpus)
        return 0
    log = sys.stderr if args.json else sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="agg-bench-cluster-", dir=args.workdir))
    try:
        corpus = args.corpus
        if corpus is None:
            from devtools import gen_corpus

            corpus = workdir / "corpus" / "projects"
            rep = gen_corpus.generate(
                gen_corpus.default_source(), corpus, gen_corpus.parse_size(args.size), args.profile, args.seed
            )
            print(f"generated {args.size}: {gen_corpus.describe(rep)}", file=log, flush=True)
        res = bench(corpus, args.repeat, workdir, log)
        print_table(res, log)
        if args.json:
            print(json.dumps({"repeat": args.repeat, "result": res}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
