"""How fast `agg search` answers on a large history, how fast its index builds, how big it is, and how
soon a line appended to a transcript is found while `agg run` is up.

Steps: generate a heavy-user corpus of ``--size`` (``devtools/gen_corpus.py``, seed 1), start a
throwaway redis-server (AOF on, as in redis.conf), and in the same run:

* ingest it (``agg ingest``'s code path) — the floor the index build is compared with;
* build the search index from the whole log (what the first ``agg search`` after a backfill does);
* report the index's size next to the history's, and the UTF-8 text it indexes (what an index that
  kept a copy of the text would add);
* time queries in process, per class — one word, two words, a phrase, a prefix, a CJK substring —
  as the index answers them (:meth:`SearchIndex.query`) and as ``agg search`` does in full
  (:func:`aggregator.search.search`: catch-up check, titles, snippets), next to a floor (FTS5
  counting the matches alone); plus very common words, ranked in full and as agg ranks them
  (the newest :data:`~aggregator.defaults.SEARCH_RANK_CANDIDATES` matches);
* time the whole ``agg search --json`` command as a subprocess, next to ``agg --version``;
* start ``agg run`` (on the same Redis, a claude dir of its own), append lines holding a fresh word,
  and time append → found by a search in another process, p50 and p99, next to append → stored.

Usage::

    python -m scripts.bench.search [--size 1GiB] [--workdir DIR] [--runs 30] [--appends 100] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregator import defaults
from aggregator.fts import parts, translate
from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.parse import loads
from aggregator.projections import Projector
from aggregator.search import search
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from devtools import gen_corpus
from devtools.agg import REPO
from devtools.redisproc import RedisProcess

GIB = 1 << 30

QUERIES = {
    "one word": ["tailwind", "phoenix", "migration", "pomodoro", "annotation", "liveview", "fixture"],
    "two words": ["tailwind css", "phoenix liveview", "session share", "test fixture", "error handling"],
    "phrase": ['"session share"', '"next step"', '"error handling"', '"issue details"', '"let me check"'],
    "prefix": ["compon*", "migrat*", "annot*", "pomo*", "transcr*"],
    "CJK substring": ["最新", "状態", "アップデート", "ください", "最新の状態"],
}
COMMON = ["the", "file", "spotter"]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2), "max_ms": round(max(ms), 2)}


def text_bytes(store: Store) -> int:
    """UTF-8 bytes of every text the index holds (read again from the store)."""
    total = 0
    for conv in store.conversations():
        for _eid, raw in store.replay(conv):
            try:
                obj = loads(raw)
            except ValueError:
                continue
            total += sum(len(t[: defaults.SEARCH_PART_CHARS].encode()) for _, t in parts(obj))
    return total


COUNT = "SELECT count(*) FROM fts WHERE fts MATCH ?"
RANK_ALL = "SELECT rowid, bm25(fts) s FROM fts WHERE fts MATCH ? ORDER BY s LIMIT 20"


def sql(index: SearchIndex, statement: str, match: str) -> list[Any]:
    return index.db.execute(statement, (match,)).fetchall()


def queries(store: Store, index: SearchIndex, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls, qs in QUERIES.items():
        q_ms: list[float] = []
        full_ms: list[float] = []
        floor_ms: list[float] = []
        totals = []
        for q in qs:
            m = translate(q)
            totals.append(index.query(m, limit=20)[0])
            q_ms += timed(functools.partial(index.query, m, limit=20), runs)
            full_ms += timed(functools.partial(search, store, index, q), max(3, runs // 3))
            floor_ms += timed(functools.partial(sql, index, COUNT, m), runs)
        out[cls] = {
            "queries": qs,
            "matches": totals,
            "query": summary(q_ms),
            "search_call": summary(full_ms),
            "floor_count_only": summary(floor_ms),
        }
    common = {}
    for q in COMMON:
        m = translate(q)
        total = index.query(m, limit=20)[0]
        ranked_all = timed(functools.partial(sql, index, RANK_ALL, m), max(3, runs // 3))
        as_agg = timed(functools.partial(index.query, m, limit=20), max(3, runs // 3))
        common[q] = {"matches": total, "ranked_in_full": summary(ranked_all), "as_agg_ranks": summary(as_agg)}
    out["common words"] = common
    return out


def command_times(env: dict[str, str], runs: int) -> dict[str, Any]:
    def run(args: list[str]) -> list[float]:
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=REPO, check=True, capture_output=True)
            out.append((time.perf_counter() - t) * 1000)
        return out

    return {
        "agg search --json": summary(run(["search", "tailwind", "css", "--json"])),
        "floor: agg --version": summary(run(["--version"])),
    }


def live_latency(rp: RedisProcess, store: Store, work: Path, appends: int) -> dict[str, Any]:
    """``agg run`` up; lines appended to a new session; time until another process finds them."""
    claude = work / "live-claude"
    project = claude / "projects" / "-home-bench-live"
    project.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGG_")},
        "AGG_REDIS_URL": rp.url,
        "AGG_DATA_DIR": str(data),
        "AGG_CLAUDE_DIR": str(claude),
    }
    log = open(work / "agg-run.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "cli", "run"], env=env, cwd=REPO, stdout=log, stderr=log)
    try:
        index = SearchIndex.open(store, data)
        search(store, index, "warmup")  # the index caught up with everything before we start
        session = str(uuid.uuid4())
        path = project / f"{session}.jsonl"
        time.sleep(3)  # the watcher has started and scanned its (empty) claude dir
        found_ms: list[float] = []
        stored_ms: list[float] = []
        rng = random.Random(1)
        for i in range(appends):
            word = f"zq{rng.getrandbits(48):x}"
            rec = {
                "type": "user",
                "sessionId": session,
                "uuid": str(uuid.uuid4()),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "cwd": "/home/bench/live",
                "message": {"role": "user", "content": f"message {i} about {word}"},
            }
            last = store.last_seq()
            t0 = time.perf_counter()
            with open(path, "ab") as f:
                f.write(json.dumps(rec).encode() + b"\n")
            stored = None
            while True:
                if stored is None and store.last_seq() > last:
                    stored = (time.perf_counter() - t0) * 1000
                if search(store, index, word)["total"]:
                    break
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"line {i} not found in 30 s (see {work / 'agg-run.log'})")
                time.sleep(0.005)
            found_ms.append((time.perf_counter() - t0) * 1000)
            stored_ms.append(stored if stored is not None else found_ms[-1])
            time.sleep(rng.uniform(0.05, 0.3))
        return {"appends": appends, "found": summary(found_ms), "floor: stored in Redis": summary(stored_ms)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size", type=gen_corpus.parse_size, default=GIB, help="history size to generate (default 1GiB)")
    ap.add_argument("--workdir", type=Path, help="keep the corpus here (reused by a second run)")
    ap.add_argument("--runs", type=int, default=30, help="timings per query")
    ap.add_argument("--appends", type=int, default=100, help="lines appended while agg run is up")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="agg-bench-search-"))
    corpus = work / "corpus" / "projects"
    if not corpus.is_dir():
        report = gen_corpus.generate(gen_corpus.default_source(), corpus, args.size, "heavy-user", seed=1)
        print(f"generated: {gen_corpus.describe(report)}", file=sys.stderr)
    history = sum(p.stat().st_size for p in corpus.rglob("*.jsonl"))
    redis_dir = work / "redis"
    shutil.rmtree(redis_dir, ignore_errors=True)
    for stale in (work / "data", work / "live-claude"):
        shutil.rmtree(stale, ignore_errors=True)
    res: dict[str, Any] = {"history_bytes": history}
    with RedisProcess(redis_dir, appendonly=True) as rp:
        store = Store(rp.client(), Keys("agg"), "bench")
        t = time.perf_counter()
        rep = ingest(store, list(iter_transcripts([corpus])))
        ingest_s = time.perf_counter() - t
        Projector(store).catch_up()
        res["ingest"] = {"seconds": round(ingest_s, 1), "MB_per_s": round(rep.bytes / 1e6 / ingest_s, 1)}
        index = SearchIndex.open(store, work / "data")
        t = time.perf_counter()
        entries = index.catch_up(store)
        build_s = time.perf_counter() - t
        index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file's own size, not a pending log
        size = index.size()
        res["index_build"] = {
            "seconds": round(build_s, 1),
            "entries": entries,
            "entries_per_s": round(entries / build_s),
            "history_MB_per_s": round(history / 1e6 / build_s, 1),
        }
        res["index_size"] = {
            "bytes": size["bytes"],
            "of_history": round(size["bytes"] / history, 3),
            "texts": size["docs"],
            "text_bytes_not_kept": text_bytes(store),
        }
        res["queries"] = queries(store, index, args.runs)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AGG_")},
            "AGG_REDIS_URL": rp.url,
            "AGG_DATA_DIR": str(work / "data"),
        }
        res["command"] = command_times(env, max(5, args.runs // 3))
        res["live"] = live_latency(rp, store, work, args.appends)
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=1))
    else:
        print_report(res)
    return 0


def print_report(res: dict[str, Any]) -> None:
    mb = res["history_bytes"] / 1e6
    b = res["index_build"]
    print(f"history            {mb:,.0f} MB")
    print(f"ingest             {res['ingest']['seconds']} s, {res['ingest']['MB_per_s']} MB/s")
    rate = f"{b['history_MB_per_s']} MB/s of history, {b['entries_per_s']:,} entries/s"
    print(f"index build        {b['seconds']} s, {rate}")
    s = res["index_size"]
    print(
        f"index size         {s['bytes'] / 1e6:,.0f} MB = {s['of_history']:.1%} of the history "
        f"({s['texts']:,} texts; a copy of their {s['text_bytes_not_kept'] / 1e6:,.0f} MB of text is not kept)"
    )
    print("queries (in process, ms)       query p50 / p99     agg search call p50 / p99   floor: count only p50")
    for cls, q in res["queries"].items():
        if cls == "common words":
            continue
        print(
            f"  {cls:<28} {q['query']['p50_ms']:>8} / {q['query']['p99_ms']:<8}  "
            f"{q['search_call']['p50_ms']:>10} / {q['search_call']['p99_ms']:<10}  {q['floor_count_only']['p50_ms']:>8}"
        )
    for w, c in res["queries"]["common words"].items():
        full, capped = c["ranked_in_full"]["p50_ms"], c["as_agg_ranks"]["p50_ms"]
        print(
            f"  common word {w!r:<16} {c['matches']:>7,} matches: "
            f"ranked in full p50 {full} ms, as agg ranks p50 {capped} ms"
        )
    for name, t in res["command"].items():
        print(f"{name:<26} p50 {t['p50_ms']} ms, max {t['max_ms']} ms")
    lv = res["live"]
    print(
        f"append → found        p50 {lv['found']['p50_ms']} ms, p99 {lv['found']['p99_ms']} ms "
        f"({lv['appends']} appends; floor: append → stored p50 {lv['floor: stored in Redis']['p50_ms']} ms, "
        f"p99 {lv['floor: stored in Redis']['p99_ms']} ms)"
    )


if __name__ == "__main__":
    sys.exit(main())
