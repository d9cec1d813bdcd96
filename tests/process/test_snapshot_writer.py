"""`current.json`: atomic under heavy ingest, incremental = full build, written only on change."""

from __future__ import annotations

import itertools
import json
import stat
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.live.writer import SnapshotWriter, with_separators
from aggregator.store import Store
from devtools.agg import agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support import CORPUS
from tests.support.live import Agg, Poller, append, line, record


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc.pop("generated_at")
    return doc


def test_reader_never_sees_a_partial_file(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    """Heavy ingest (the corpus, copied in chunks) with the writer at a 0.05 s interval."""
    env = agg_env(redis_server, tmp_path)
    out = tmp_path / "out" / "current.json"
    projects = tmp_path / "claude" / "projects"
    projects.mkdir(parents=True)
    sources = sorted(p for p in CORPUS.rglob("*.jsonl"))
    poller = Poller(out)
    with (
        Agg(["watch"], env, tmp_path, name="watch"),
        Agg(["writer", "--output", str(out), "--interval", "0.05"], env, tmp_path, name="writer") as writer,
    ):
        poller.start()
        for src in sources:  # each file arrives in a few large appends, as a fast session would
            dst = projects / src.relative_to(CORPUS)
            data = src.read_bytes()
            step = max(1, len(data) // 3)
            for i in range(0, len(data), step):
                append(dst, data[i : i + step])
                time.sleep(0.03)  # a fast session, not one write: the writer replaces the file many times
        wait_until(lambda: store.stats()["lines"] >= 5000, "the corpus to be ingested", timeout=60)
        last = store.last_seq()
        wait_until(lambda: poller.seqs and poller.seqs[-1] >= last, "a snapshot of the last seq", timeout=30)
        poller.stop.set()
        poller.join()
        assert writer.alive()
    assert poller.bad == []
    assert poller.reads >= 10 and len(poller.seqs) >= 3  # it read while the file was replaced, again and again
    assert poller.seqs == sorted(poller.seqs)  # seq never goes back
    assert poller.modes == {0o600}

    # the incrementally maintained file equals a full build from scratch
    final = orjson.loads(out.read_bytes())
    fresh = tmp_path / "fresh.json"
    run_agg(["writer", "--once", "--output", str(fresh)], env)
    assert _strip(final) == _strip(orjson.loads(fresh.read_bytes()))
    assert [p.name for p in out.parent.iterdir()] == ["current.json"]  # no temp files left


def test_document_layout(store: Store, corpus: Path, tmp_path: Path) -> None:
    ingest(store, iter_transcripts([corpus]))
    out = tmp_path / "current.json"
    w = SnapshotWriter(store, out)
    assert w.write_if_changed() is not None
    doc = orjson.loads(out.read_bytes())
    assert doc["schema"] == 1 and doc["seq"] == store.last_seq()
    msgs = [m for m in doc["messages"] if not m.get("separator")]
    seps = [m for m in doc["messages"] if m.get("separator")]
    assert len(msgs) == 1000
    assert all(m["role"] in ("user", "assistant") for m in msgs)
    stamps = [m["ts"] or "" for m in msgs]
    assert stamps == sorted(stamps)  # oldest first
    assert doc["messages"][0].get("separator") is None
    titles = {c["key"]: c["title"] for c in doc["conversations"]}
    prev = None
    for i, m in enumerate(doc["messages"]):
        if m.get("separator"):
            nxt = doc["messages"][i + 1]
            assert "role" not in m and nxt["conv"] == m["conv"] != prev and m["title"] == titles.get(m["conv"])
        else:
            if prev is not None and m["conv"] != prev:
                assert doc["messages"][i - 1].get("separator")
            prev = m["conv"]
    assert len(seps) == sum(1 for a, b in itertools.pairwise(msgs) if a["conv"] != b["conv"])
    fields = {"key", "project", "title", "summary", "first_ts", "last_ts", "events", "messages", "usage", "active"}
    assert fields <= set(doc["conversations"][0])
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_writes_only_when_something_changed(store: Store, r: redis.Redis, tmp_path: Path) -> None:
    src = tmp_path / "claude" / "projects" / "p" / "a.jsonl"
    append(src, line(record("a", 0)) + line(record("a", 1, kind="assistant")))
    ingest(store, iter_transcripts([src]))
    out = tmp_path / "current.json"
    w = SnapshotWriter(store, out)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(store.keys.snapshots_channel)
    ps.get_message(timeout=1)
    first = w.write_if_changed()
    assert first is not None and first["seq"] == 2
    notice = ps.get_message(timeout=5)
    assert notice is not None and json.loads(notice["data"])["seq"] == 2
    mtime = out.stat().st_mtime_ns
    assert w.write_if_changed() is None and out.stat().st_mtime_ns == mtime  # nothing new: no write

    append(tmp_path / "claude" / "projects" / "p" / "b.jsonl", line(record("b", 5)))  # the newest record
    ingest(store, iter_transcripts([tmp_path / "claude"]))
    second = w.write_if_changed()
    assert second is not None and second["seq"] == 3
    doc = orjson.loads(out.read_bytes())
    assert [m["conv"] for m in doc["messages"] if not m.get("separator")] == ["a", "a", "b"]
    title_b = next(c["title"] for c in doc["conversations"] if c["key"] == "b")
    assert title_b == "line 5 of b"  # its first prompt (no better title source)
    assert doc["messages"][2] == {"separator": True, "conv": "b", "title": title_b}
    assert r.hget(store.keys.snapshot, "seq") == b"3"
    ps.close()


def test_seq_on_disk_is_never_lowered(store: Store, tmp_path: Path) -> None:
    """A store behind the file (Redis lost writes) does not make current.json go back."""
    src = tmp_path / "a.jsonl"
    append(src, b"".join(line(record("a", i)) for i in range(3)))
    ingest(store, iter_transcripts([src]))
    out = tmp_path / "current.json"
    SnapshotWriter(store, out).write_if_changed()
    assert orjson.loads(out.read_bytes())["seq"] == 3
    store.client.flushall()  # the store lost everything
    append(src.with_name("b.jsonl"), line(record("b", 0)))
    ingest(store, iter_transcripts([src.with_name("b.jsonl")]))  # seq 1 < 3
    w = SnapshotWriter(store, out)
    assert w.write_if_changed() is None
    assert orjson.loads(out.read_bytes())["seq"] == 3


def test_separators() -> None:
    msgs = [{"conv": c, "seq": i} for i, c in enumerate("aabba")]
    out = with_separators(msgs, {"a": "A", "b": None})
    assert [m.get("separator", False) for m in out] == [False, False, True, False, False, True, False]
    assert out[2] == {"separator": True, "conv": "b", "title": None}
    assert out[5] == {"separator": True, "conv": "a", "title": "A"}


def test_writer_once_cli(redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)  # its claude dir holds the corpus copy
    run_agg(["ingest"], env)
    proc = run_agg(["writer", "--once"], env)
    path = tmp_path / "data" / "current.json"
    assert proc.stdout.startswith(f"wrote {path}: seq ")
    doc = orjson.loads(path.read_bytes())
    st = json.loads(run_agg(["status", "--json"], env).stdout)
    assert st["last_snapshot_at"] is not None and st["snapshot"]["seq"] == doc["seq"]
