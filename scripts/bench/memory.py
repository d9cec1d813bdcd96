"""Redis memory per transcript byte, before and after compaction (``agg compact``), and replay of a
sealed conversation.

For each history — the real corpus files (``../shared/corpus``), and a generated one of
``--size`` (``devtools/gen_corpus.py``, heavy-user profile, seed 1) — a throwaway redis-server is
started, the history ingested and projected, and ``used_memory`` read: then ``agg compact --idle 0
--keep-log 0`` (everything sealed, the whole log archived) runs as a real command and
``used_memory`` is read again. Each figure is given whole and less an empty server's
``used_memory`` (Redis' own baseline, which a small history cannot amortise), per byte of the
history's files, with the part each kind of key takes (``MEMORY USAGE``).

The generated history compresses better than the real one: it is built by repeating the corpus'
~13 MB of lines (ids renamed), so zstd finds whole repeated lines within a chunk. The real-file
figure is the one that counts.

Replay: the largest conversation of each history, and the one nearest 10,000 events, replayed in
process (``Store.replay``, every line's bytes) before and after sealing, median of ``--runs``.

Usage::

    python -m scripts.bench.memory [--size 512MB] [--runs 9] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.store import Store
from devtools import gen_corpus
from devtools.agg import REPO, agg_env
from devtools.redisproc import RedisProcess

CORPUS = REPO.parent / "shared" / "corpus" / "projects"


def _by_kind(client: Any) -> dict[str, int]:
    """Bytes per kind of key (the last part of its name: body, chunks, cur, log, …)."""
    out: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        name = key.decode()
        kind = name.rsplit(":", 1)[-1] if "{c:" in name else ":".join(name.split(":")[1:2]) or name
        if name.endswith(":log:archive") or name.endswith(":log:segments"):
            kind = "log archive"
        out[kind] += client.memory_usage(key, samples=0) or 0
    return dict(out.most_common())


def _replay_ms(store: Store, conv: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        n = sum(len(body) for _, body in store.replay(conv))
        times.append((time.perf_counter() - t0) * 1000)
        assert n > 0
    return round(statistics.median(times), 1)


def measure(name: str, root: Path, work: Path, runs: int) -> dict[str, Any]:
    files = sum(p.stat().st_size for p in root.rglob("*.jsonl"))
    with RedisProcess(work / f"redis-{name}") as server:
        client = server.client()
        empty = int(client.info("memory")["used_memory"])
        store = Store(client, Keys("agg"), "bench")
        ingest(store, iter_transcripts([root]))
        Projector(store).catch_up()
        before = int(client.info("memory")["used_memory"])
        kinds_before = _by_kind(client)
        convs = store.conversations()
        sizes = [int(store.projection_fields([c], ["events"])[0][0] or 0) for c in convs]
        biggest = convs[sizes.index(max(sizes))]
        near_10k = min(zip(convs, sizes, strict=True), key=lambda cs: abs(cs[1] - 10_000))
        replay_raw = _replay_ms(store, biggest, runs)
        replay_10k_raw = _replay_ms(store, near_10k[0], runs)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "cli", "compact", "--idle", "0", "--keep-log", "0", "--json"],
            env=agg_env(server, work / name),
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        compact_s = time.perf_counter() - started
        after = int(client.info("memory")["used_memory"])
        return {
            "history": name,
            "file_bytes": files,
            "lines": store.stats()["lines"],
            "empty_server_bytes": empty,
            "used_memory_before": before,
            "used_memory_after": after,
            "per_byte_before": round(before / files, 3),
            "per_byte_after": round(after / files, 3),
            "per_byte_before_less_empty": round((before - empty) / files, 3),
            "per_byte_after_less_empty": round((after - empty) / files, 3),
            "keys_before": kinds_before,
            "keys_after": _by_kind(client),
            "compact": json.loads(proc.stdout),
            "compact_wall_s": round(compact_s, 2),
            "replay_conversation_events": max(sizes),
            "replay_ms_raw": replay_raw,
            "replay_ms_sealed": _replay_ms(store, biggest, runs),
            "replay_10k_events": near_10k[1],
            "replay_10k_ms_raw": replay_10k_raw,
            "replay_10k_ms_sealed": _replay_ms(store, near_10k[0], runs),
        }


def _mb(raw: int, sealed: int) -> str:
    return f"{raw / 1e6:,.1f} -> {sealed / 1e6:,.1f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=gen_corpus.parse_size, default=gen_corpus.parse_size("512MB"))
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if CORPUS.is_dir():
            results.append(measure("real corpus files", CORPUS, work, args.runs))
        gen = work / "generated" / "projects"
        gen_corpus.generate(gen_corpus.default_source(), gen, args.size, "heavy-user", seed=1)
        results.append(measure(f"generated {args.size / 1e6:.0f} MB", gen, work, args.runs))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        mb = r["file_bytes"] / 1e6
        print(f"{r['history']}: {mb:,.1f} MB of files, {r['lines']:,} lines")
        print(
            f"  used_memory / file byte: {r['per_byte_before']} -> {r['per_byte_after']} "
            f"(less an empty server's {r['empty_server_bytes'] / 1e6:.1f} MB: "
            f"{r['per_byte_before_less_empty']} -> {r['per_byte_after_less_empty']})"
        )
        for when in ("before", "after"):
            parts = ", ".join(f"{k} {v / r['file_bytes']:.3f}" for k, v in list(r[f"keys_{when}"].items())[:6])
            print(f"  keys {when}: {parts}")
        c = r["compact"]
        print(
            f"  agg compact: {c['lines']:,} lines {_mb(c['raw_bytes'], c['sealed_bytes'])}, "
            f"{c['log_batches']:,} log batches {_mb(c['log_raw_bytes'], c['log_sealed_bytes'])}, "
            f"{r['compact_wall_s']} s"
        )
        print(
            f"  replay of its largest conversation ({r['replay_conversation_events']:,} events): "
            f"{r['replay_ms_raw']} ms raw, {r['replay_ms_sealed']} ms sealed"
        )
        print(
            f"  replay of the one nearest 10,000 events ({r['replay_10k_events']:,}): "
            f"{r['replay_10k_ms_raw']} ms raw, {r['replay_10k_ms_sealed']} ms sealed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
