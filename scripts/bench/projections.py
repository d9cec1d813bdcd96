"""How fast `agg usage --json` and `agg status --json` answer on a large history, next to a full rescan.

Both commands read projections (a few hashes, one script call per 1,000 conversations), never the
files or the log, so their time does not grow with the history. A tool without a store must read
and parse every file for each answer; that is the "full rescan" figure. For context the script also
times the one-off `agg ingest` that builds the store.

Steps: generate a corpus of ``--size`` (``devtools/gen_corpus.py``, heavy-user profile, seed 1),
start a throwaway redis-server (AOF on, as in redis.conf), ingest, then time each command ``--runs`` times
as a real subprocess (wall clock, median and worst) and the same read in-process (what the command
does once Python and its imports are loaded). A run of the same command on an empty namespace shows
the part that is interpreter start-up and imports.

Usage::

    python -m scripts.bench.projections [--size 1GiB] [--corpus DIR] [--runs 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from aggregator.connection import Connection
from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.live.status import gather
from aggregator.projections import Projector
from aggregator.store import Store
from aggregator.usage import report
from devtools import gen_corpus
from devtools.redisproc import RedisProcess

GIB = 1 << 30


def generate(out: Path, size: int) -> str:
    """Fill ``out`` (a ``projects/`` dir) with about ``size`` bytes of transcripts; returns how."""
    report = gen_corpus.generate(gen_corpus.default_source(), out, size, "heavy-user", seed=1)
    return f"gen_corpus.py --size {size} (heavy-user profile): {gen_corpus.describe(report)}"


def rescan(root: Path) -> tuple[float, int]:
    """Read and parse every file and compute usage by (message.id, requestId): what a tool without
    a store does for each answer. Returns (seconds, responses)."""
    started = time.perf_counter()
    seen: dict[tuple[Any, Any], list[int]] = {}
    for path in sorted(root.rglob("*.jsonl")):
        with open(path, "rb") as f:
            for raw in f:
                if b'"assistant"' not in raw:
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(obj, dict) or obj.get("type") != "assistant":
                    continue
                msg = obj.get("message")
                usage = msg.get("usage") if isinstance(msg, dict) else None
                if not isinstance(msg, dict) or not isinstance(usage, dict) or msg.get("model") == "<synthetic>":
                    continue
                key = (msg.get("id"), obj.get("requestId"))
                vals = [usage.get(k) or 0 for k in ("input_tokens", "output_tokens", "cache_read_input_tokens")]
                old = seen.get(key)
                seen[key] = vals if old is None else [max(a, b) for a, b in zip(old, vals, strict=True)]
    return time.perf_counter() - started, len(seen)


def wall(cmd: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    return {
        "min_ms": round(min(times), 1),
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
    }


def inproc(fn: Any, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {
        "min_ms": round(min(times), 2),
        "median_ms": round(statistics.median(times), 2),
        "max_ms": round(max(times), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size", type=gen_corpus.parse_size, default=GIB, help="history size to generate (default 1GiB)")
    ap.add_argument("--corpus", type=Path, help="use this projects/ dir instead of generating one")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--workdir",
        type=Path,
        help="keep the generated corpus and Redis data here; a second run reuses them (no generation, no ingest)",
    )
    ap.add_argument("--no-rebuild", action="store_true", help="skip timing `agg replay --rebuild`")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="agg-bench-proj-"))
    reuse = args.workdir is not None and (work / "redis" / "appendonlydir").is_dir()
    try:
        root = args.corpus
        how = f"given: {root}"
        if root is None:
            root = work / "claude" / "projects"
            how = (work / "corpus.txt").read_text() if reuse else ""
        if not how:
            t = time.perf_counter()
            how = generate(root, args.size)
            (work / "corpus.txt").write_text(how)
            print(f"generated {how} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        files = list(root.rglob("*.jsonl"))
        nbytes = sum(f.stat().st_size for f in files)
        out: dict[str, Any] = {"corpus": how, "files": len(files), "bytes": nbytes}
        with RedisProcess(work / "redis") as server:
            client = server.client()
            store = Store(client, Keys("agg"), "bench")
            if not reuse:
                t = time.perf_counter()
                ingest(store, iter_transcripts([root]))
                out["ingest_s"] = round(time.perf_counter() - t, 1)
            out["events"] = store.stats()["events"]
            out["conversations"] = store.stats()["conversations"]
            out["redis_used_memory_bytes"] = client.info("memory")["used_memory"]
            if not args.no_rebuild:
                projector = Projector(store)
                t = time.perf_counter()
                live = projector.digest()
                out["digest_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                rebuilt = projector.rebuild()
                out["rebuild_s"] = round(time.perf_counter() - t, 1)
                out["rebuild_digest_equals_live"] = rebuilt["digest"] == live
            secs, responses = rescan(root)
            out["full_rescan_s"] = round(secs, 1)
            out["responses"] = responses

            env = dict(os.environ, AGG_REDIS_URL=server.url, AGG_DATA_DIR=str(work / "data"), AGG_HOST="bench")
            agg = [str(Path(sys.executable).parent / "agg")]
            if not Path(agg[0]).exists():
                agg = [sys.executable, "-m", "cli"]
            empty = [*agg, "--namespace", "empty"]
            out["cli"] = {
                "usage --json": wall([*agg, "usage", "--json"], env, args.runs),
                "usage --by day --json": wall([*agg, "usage", "--by", "day", "--json"], env, args.runs),
                "status --json": wall([*agg, "status", "--json"], env, args.runs),
                "usage --json (empty namespace)": wall([*empty, "usage", "--json"], env, args.runs),
                "status --json (empty namespace)": wall([*empty, "status", "--json"], env, args.runs),
            }
            conn = Connection(client=client, url=server.url)
            out["in_process"] = {
                "usage report --by conversation": inproc(lambda: report(store, "conversation"), args.runs),
                "usage report --by day": inproc(lambda: report(store, "day"), args.runs),
                "status gather": inproc(lambda: gather(conn, store), args.runs),
            }
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"history: {out['files']} files, {out['bytes'] / 1e9:.2f} GB ({out['corpus']})")
        print(f"  {out['events']} events, {out['conversations']} conversations, {out['responses']} API responses")
        if "ingest_s" in out:
            print(f"agg ingest (once, builds the store): {out['ingest_s']} s")
        print(f"full rescan (read + parse every file, dedupe usage): {out['full_rescan_s']} s")
        if "rebuild_s" in out:
            same = "equal to" if out["rebuild_digest_equals_live"] else "DIFFERENT FROM"
            print(f"agg replay --rebuild: {out['rebuild_s']} s, digest {same} the live one")
            print(f"digest of the live projections (agg status --digest's extra read): {out['digest_s']} s")
        for name, fig in out["cli"].items():
            print(
                f"agg {name:34} min {fig['min_ms']:7.1f}  median {fig['median_ms']:7.1f}  "
                f"max {fig['max_ms']:7.1f} ms (wall, subprocess)"
            )
        for name, fig in out["in_process"].items():
            print(
                f"{name:38} min {fig['min_ms']:7.2f}  median {fig['median_ms']:7.2f}  "
                f"max {fig['max_ms']:7.2f} ms (in process)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
