"""`agg compact` and `agg forget` on a Redis Cluster: every bucket compacted, a conversation forgotten
in its bucket — checked against the bucket itself before, and against a single Redis given the same
corpus and the same commands."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from aggregator.buckets import Buckets
from aggregator.compaction import unpack_segment
from aggregator.forget import USAGE_REPORTED, forget
from aggregator.ingest import ingest_buckets
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg
from devtools.cluster import Cluster
from devtools.redisproc import RedisProcess
from tests.cluster.conftest import cluster_env
from tests.support.cli import on_a_terminal, one_line_error
from tests.support.live import replayed
from tests.support.records import assistant, session_file, tokens, user, write
from tests.support.store import rebuild_reproduces_live

SHARED = "session-share"
"""A part of three of the corpus's project names, whose conversations sit in two buckets."""


def _json(args: list[str], env: dict[str, str]) -> Any:
    return json.loads(run_agg([*args, "--json"], env).stdout)


def _replays(buckets: Buckets) -> dict[str, list[bytes]]:
    """Every conversation's replay, over every bucket (a key in two buckets would fail here)."""
    out: dict[str, list[bytes]] = {}
    for store in buckets:
        mine = replayed(store)
        assert not mine.keys() & out.keys()
        out |= mine
    return out


def _digests(buckets: Buckets) -> list[str]:
    return [Projector(s).digest() for s in buckets]


def _raw_left(buckets: Buckets) -> int:
    return sum(s.r.hlen(s.keys.body(c)) for s in buckets for c in s.conversations())


def _usage_total(buckets: Buckets) -> Counter[str]:
    """The usage totals of the whole store: each bucket's, summed."""
    total: Counter[str] = Counter()
    for store in buckets:
        total.update(store.usage_total())
    return total


def _usage_of(buckets: Buckets) -> dict[str, dict[str, int]]:
    """Each conversation's usage (the counts `agg forget` reports) as its bucket's projections hold it."""
    out: dict[str, dict[str, int]] = {}
    for store in buckets:
        convs = store.conversations()
        rows = store.projection_fields(convs, [f"usage_{name}" for name in USAGE_REPORTED])
        for conv, row in zip(convs, rows, strict=True):
            out[conv] = {name: int(v or 0) for name, v in zip(USAGE_REPORTED, row, strict=True)}
    return out


def _log_text(store: Store) -> bytes:
    """Everything a bucket's log holds: stream, batches a forget patched, archived segments."""
    r, k = store.r, store.keys
    out = [b"".join(v for _, f in r.xrange(k.log) for v in f.values())]
    out += [b"".join(r.hgetall(k.log_patch(int(first))).values()) for first in r.zrange(k.log_patched, 0, -1)]
    out += [b"".join(v for _, f in unpack_segment(blob) for v in f.values()) for blob in r.hvals(k.log_archive)]
    return b"".join(out)


def _single(redis_server: RedisProcess, tmp_path: Path, corpus: Path) -> tuple[dict[str, str], Store]:
    """The same corpus ingested into a single Redis: the reference run."""
    env = agg_env(redis_server, tmp_path / "single")
    run_agg(["ingest", str(corpus)], env)
    return env, Store(redis_server.client(), Keys("agg"), HOST)


def _without_times(res: dict[str, Any]) -> dict[str, Any]:
    """An `agg forget --json` result less what differs between two stores (seqs, forget times)."""
    convs = [{k: v for k, v in c.items() if k not in ("seq", "forgotten_at")} for c in res["conversations"]]
    return {**res, "conversations": convs}


def test_compact_seals_every_bucket_and_nothing_read_changes(
    cluster: Cluster,
    tmp_path: Path,
    namespace: str,
    corpus: Path,
    buckets: Buckets,
    redis_server: RedisProcess,
    r: redis.Redis,
) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    run_agg(["ingest", str(corpus)], env)
    want, digests, raw = _replays(buckets), _digests(buckets), _raw_left(buckets)
    streams = [s.r.xlen(s.keys.log) for s in buckets]
    assert raw > 0 and sum(1 for n in streams if n) > 8  # the corpus is spread over many buckets

    assert run_agg(["compact", "--idle", str(100 * 365 * 86400)], env).stdout.startswith("nothing to seal:")
    res = _json(["compact", "--idle", "0", "--keep-log", "2"], env)

    single_env, single = _single(redis_server, tmp_path, corpus)
    ref = _json(["compact", "--idle", "0", "--keep-log", "2"], single_env)
    same = ("idle_s", "conversations", "lines", "raw_bytes", "sealed_bytes", "chunks", "left")
    assert {k: res[k] for k in same} == {k: ref[k] for k in same}
    assert res["lines"] == raw and res["conversations"] == len(want)
    # each bucket's log is archived down to 2 batches; the single Redis' one log holds them all
    assert res["log_batches"] == sum(max(n - 2, 0) for n in streams)
    assert ref["log_batches"] + 2 == sum(streams) == res["log_batches"] + sum(min(n, 2) for n in streams)
    assert [s.r.xlen(s.keys.log) for s in buckets] == [min(n, 2) for n in streams]
    assert res["log_segments"] >= sum(1 for n in streams if n > 2)

    assert _raw_left(buckets) == 0 and _replays(buckets) == want == replayed(single)
    assert _digests(buckets) == digests
    for store in buckets:
        if store.conversations():
            rebuild_reproduces_live(store)  # from sealed bodies and archived segments
    again = run_agg(["compact", "--idle", "0"], env).stdout
    assert again.startswith("nothing to seal: no conversation idle for 0 s"), again


def test_forget_takes_a_conversation_out_of_its_bucket_for_good(
    cluster: Cluster,
    tmp_path: Path,
    namespace: str,
    corpus: Path,
    buckets: Buckets,
    redis_server: RedisProcess,
    r: redis.Redis,
) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    run_agg(["ingest", str(corpus)], env)
    usage = _usage_of(buckets)
    conv = max(usage, key=lambda c: (usage[c]["output"], c))
    (home,) = [s for s in buckets if conv in s.conversations()]
    total = _usage_total(buckets)
    others = set(_replays(buckets)) - {conv}
    n_events = home.stats()["events"]
    digests = {s.keys.ns: Projector(s).digest() for s in buckets if s is not home}

    res = _json(["forget", conv[:12], "--yes"], env)

    (c,) = res["conversations"]
    assert c["conv"] == conv and c["usage"] == usage[conv] and res["usage"] == usage[conv]
    assert _usage_total(buckets) == total - Counter(usage[conv])
    assert set(_replays(buckets)) == others and home.projection(conv) == {}
    assert home.stats()["events"] == n_events - c["events"]
    assert Projector(home).checkpoint() == int(home.r.get(home.keys.seq))  # the forget entry applied
    assert {s.keys.ns: Projector(s).digest() for s in buckets if s is not home} == digests  # no other bucket
    marker = f'"conv":"{conv}","conv_seq":'.encode()
    assert _log_text(home).count(marker) == 1  # its agg-forget entry only
    rebuild_reproduces_live(home)

    single_env, single = _single(redis_server, tmp_path, corpus)
    ref = _json(["forget", conv, "--yes"], single_env)
    assert _without_times(res) == _without_times(ref)
    assert _usage_total(buckets) == Counter(single.usage_total())

    other_host = cluster_env(cluster, tmp_path / "other", namespace, AGG_HOST="another-machine")
    again = _json(["ingest", str(corpus)], other_host)
    assert again["events_added"] == 0 and again["forgotten"] > 0
    assert set(_replays(buckets)) == others and home.projection(conv) == {}
    assert _usage_total(buckets) == total - Counter(usage[conv])
    one_line_error(run_agg(["forget", conv, "--yes"], env, check=False), 4, "no conversation")


def test_forget_names_and_project_over_every_bucket(
    cluster: Cluster,
    tmp_path: Path,
    namespace: str,
    corpus: Path,
    buckets: Buckets,
    redis_server: RedisProcess,
    r: redis.Redis,
) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    run_agg(["ingest", str(corpus)], env)
    mine = {
        conv
        for s in buckets
        for p in s.r.smembers(s.keys.projects)
        if SHARED in p.decode()
        for conv in (c.decode() for c in s.r.smembers(s.keys.project_convs(p.decode())))
    }
    homes = {s.keys.ns for s in buckets for c in s.conversations() if c in mine}
    assert len(mine) >= 4 and len(homes) == 2
    every = _replays(buckets)
    usage, total = _usage_of(buckets), _usage_total(buckets)

    one_line_error(run_agg(["forget", "zz-none", "--yes"], env, check=False), 4, "no conversation")
    first = Counter(c[0] for c in every).most_common(1)[0][0]
    one_line_error(run_agg(["forget", first, "--yes"], env, check=False), 4, "give more of the key")
    one_line_error(run_agg(["forget", next(iter(every)), "zz-none", "--yes"], env, check=False), 4, "zz-none")
    assert _replays(buckets) == every  # a name that does not exist: nothing forgotten

    code, out = on_a_terminal(["forget", "--project", SHARED], env, answer=b"n\n")
    assert code == 1 and f"Forget {len(mine)} conversations (" in out and "nothing forgotten" in out
    assert _replays(buckets) == every
    code, out = on_a_terminal(["forget", "--project", SHARED], env, answer=b"y\n")
    assert code == 0 and sorted(re.findall(r"forgot ([\w-]+): ", out)) == sorted(mine), out
    assert set(_replays(buckets)) == set(every) - mine
    gone: Counter[str] = Counter()
    for c in mine:
        gone.update(usage[c])
    assert _usage_total(buckets) == total - gone

    single_env, single = _single(redis_server, tmp_path, corpus)
    ref = _json(["forget", "--project", SHARED, "--yes"], single_env)
    assert sorted(c["conv"] for c in ref["conversations"]) == sorted(mine)
    assert _usage_total(buckets) == Counter(single.usage_total())
    one_line_error(run_agg(["forget", "--project", SHARED, "--yes"], env, check=False), 4, SHARED)

    # two conversations of two buckets by their files' paths, in one command
    left = [c for c in sorted(set(every) - mine) if any(corpus.rglob(f"{c}.jsonl"))]
    a = left[0]
    (home_a,) = [s for s in buckets if a in s.conversations()]
    b = next(c for c in left if c not in home_a.conversations())
    paths = [next(corpus.rglob(f"{c}.jsonl")) for c in (a, b)]
    res = _json(["forget", str(paths[0]), str(paths[1]), "--yes"], env)
    assert [c["conv"] for c in res["conversations"]] == [a, b]
    assert res["events"] == sum(c["events"] for c in res["conversations"])
    assert set(_replays(buckets)) == set(every) - mine - {a, b}


def test_a_log_batch_shared_with_another_conversation_is_patched_in_the_bucket(
    buckets: Buckets, tmp_path: Path
) -> None:
    """The FORGET script rewrites a batch shared with another conversation under a key it names
    from the bucket's patch prefix: on a cluster that key is in the bucket's slot too."""
    claude = tmp_path / "claude" / "projects"
    recs = [
        user("keep", "k1", "keep this"),
        user("gone", "g1", "forget the zebra", at="2026-03-01T10:00:05.000Z"),
        assistant("keep", "k2", "mk", "rk", tokens(1, 2), parent=None),
        assistant("gone", "g2", "mg", "rg", tokens(3, 4), at="2026-03-01T10:00:06.000Z"),
    ]
    write(session_file(claude, "keep"), recs)
    ingest_buckets(buckets, iter_transcripts([claude]))
    (store,) = [s for s in buckets if s.conversations()]
    before = [(e.seq, e.envelope, e.digest) for e in store.entries_after(0) if e.env()["conv"] == "keep"]
    res = forget(store, ["gone"])
    assert res["events"] == 2 and res["usage"]["output"] == 4
    assert [(e.seq, e.envelope, e.digest) for e in store.entries_after(0) if not e.is_forget] == before
    assert store.r.zcard(store.keys.log_patched) == 1 and b"zebra" not in _log_text(store)
    assert store.usage_total()["output"] == 2
    rebuild_reproduces_live(store)


def test_forget_takes_the_words_out_of_this_machines_search_index(
    cluster: Cluster, tmp_path: Path, namespace: str, corpus: Path, buckets: Buckets
) -> None:
    """As on a single Redis (``tests/store/test_forget.py::test_search_indexes_drop_the_conversation``),
    ``agg forget`` purges this machine's index of a cluster store (one file for every bucket) of the
    forgotten texts' words, not only of their rows: no orphan is left to match them."""
    env = cluster_env(cluster, tmp_path, namespace)
    run_agg(["ingest", str(corpus)], env)
    run_agg(["search", "the"], env)  # builds this machine's index of the buckets
    (path,) = (tmp_path / "data" / "index").glob("search-*.sqlite")
    usage = _usage_of(buckets)
    conv = max(usage, key=lambda c: (usage[c]["output"], c))

    _json(["forget", conv, "--yes"], env)

    index = sqlite3.connect(path)
    try:
        orphans = index.execute("SELECT v FROM meta WHERE k = 'orphans'").fetchone()
        assert orphans is None or int(orphans[0]) == 0
        rows = "SELECT count(*) FROM convs c JOIN docs d ON d.conv = c.n WHERE c.conv = ?"
        assert index.execute(rows, (conv,)).fetchone()[0] == 0
    finally:
        index.close()
