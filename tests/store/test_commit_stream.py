"""The commit stream (CommitStream) and the tailer's reading loop, on a real redis-server.

Ingest sends batch N's body writes with batch N-1's script call and reads the replies later, and
streams many files through one connection. These tests check what that must not change: the
compare-and-set chain of a pass, bodies before the index, recovery from a forgotten script,
lines cut at every chunk boundary, and that one stream stores exactly what file-by-file syncs do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import SourceFile, classify, iter_transcripts
from aggregator.parse import Event, Rejection, parse_line
from aggregator.store import Batch, Chain, Store
from aggregator.tailer import Tailer
from devtools.agg import HOST
from devtools.redisproc import RedisProcess
from tests.support import oracle


def _write_lines(path: Path, lines: list[bytes]) -> list[int]:
    """Write ``lines`` (each + newline); returns the offset after each line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ends, off = [], 0
    with path.open("wb") as f:
        for line in lines:
            f.write(line + b"\n")
            off += len(line) + 1
            ends.append(off)
    return ends


def _record(i: int, conv: str = "s1", size: int = 0) -> bytes:
    rec = {"sessionId": conv, "uuid": f"{conv}-u{i}", "type": "user", "message": {"content": "x" * size}}
    return json.dumps(rec).encode()


def _items(sf: SourceFile, lines: list[bytes]) -> list[Event | Rejection]:
    out, off = [], 0
    for line in lines:
        parsed = parse_line(line, off, sf)
        assert parsed is not None
        out.append(parsed)
        off += len(line) + 1
    return out


def test_a_batch_never_commits_after_an_earlier_one_of_its_pass_lost(store: Store, tmp_path: Path) -> None:
    """Another ingester moves the cursor before this pass's first batch commits: neither that
    batch nor the next (queued behind it) may commit — the next would skip the lines between the
    other ingester's offset and its own start. The writer drops it without sending its script."""
    path = tmp_path / "projects" / "p" / "s1.jsonl"
    lines = [_record(i) for i in range(6)]
    ends = _write_lines(path, lines)
    sf = classify(str(path))
    assert sf is not None
    fid = store.file_id(sf.path)
    items = _items(sf, lines)
    chain = Chain()
    b1 = store.prepare(sf, fid, "", {"off": ends[2], "tok": "ours:1"}, items[:3], chain)
    b2 = store.prepare(sf, fid, "ours:1", {"off": ends[5], "tok": "ours:2"}, items[3:], chain)
    store.commit(sf, fid, "", {"off": ends[0], "tok": "theirs:1"}, items[:1])  # the other ingester

    writer = store.stream()
    try:
        answered = writer.submit(b1) + writer.submit(b2) + writer.finish()
    finally:
        writer.close()

    assert [res for _, res in answered] == [None, None]
    assert chain.lost
    cur = store.cursor(fid)
    assert cur is not None and (cur.tok, cur.off) == ("theirs:1", ends[0])
    assert store.stats()["events"] == 1  # lines 3-5 were not committed past the gap


def test_batches_of_a_pass_commit_in_order(store: Store, tmp_path: Path) -> None:
    """Including a batch with nothing to write first (only a rejected line): it must still wait
    for the batch before it, whose bodies are not acknowledged yet."""
    path = tmp_path / "projects" / "p" / "s1.jsonl"
    lines = [_record(i) for i in range(3)] + [b"not json"] + [_record(i) for i in range(3, 6)]
    ends = _write_lines(path, lines)
    sf = classify(str(path))
    assert sf is not None
    fid = store.file_id(sf.path)
    items = _items(sf, lines)
    chain = Chain()
    parts = [(0, 3), (3, 4), (4, 7)]
    batches = [
        store.prepare(sf, fid, f"t{i}" if i else "", {"off": ends[b - 1], "tok": f"t{i + 1}"}, items[a:b], chain)
        for i, (a, b) in enumerate(parts)
    ]
    assert [bool(b.bodies) for b in batches] == [True, False, True]
    writer = store.stream()
    try:
        answered = [a for b in batches for a in writer.submit(b)] + writer.finish()
    finally:
        writer.close()
    assert [b for b, _ in answered] == batches
    results = [res for _, res in answered]
    assert all(r is not None for r in results)
    assert [(r.first_seq, r.added, r.rejected) for r in results if r is not None] == [(1, 3, 0), (0, 0, 1), (4, 3, 0)]
    cur = store.cursor(fid)
    assert cur is not None and (cur.tok, cur.off) == ("t3", ends[6])
    assert [body for _, body in store.replay("s1")] == lines[:3] + lines[4:]


class _Hooked(Store):
    """A store that runs ``hook(n)`` when its n-th batch is prepared (to cause races on cue)."""

    hook: Any = None
    prepared = 0

    def prepare(self, *args: Any, **kwargs: Any) -> Batch:
        self.prepared += 1
        if self.hook is not None:
            self.hook(self.prepared)
        return super().prepare(*args, **kwargs)


def test_pass_that_lost_the_race_resumes_from_redis(r: redis.Redis, tmp_path: Path) -> None:
    """Another ingester syncs the file while this one is between batches: this pass loses the
    compare-and-set, re-reads the cursor and goes on from there — no loss, no double count.
    (Whether this pass's first batch commits before the other ingester reads depends on timing;
    either way the counts are the same.)"""
    path = tmp_path / "projects" / "p" / "s1.jsonl"
    lines = [_record(i) for i in range(12)]
    _write_lines(path, lines)
    sf = classify(str(path))
    assert sf is not None
    ours = _Hooked(r, Keys("agg"), HOST)
    other = Store(r, Keys("agg"), HOST)
    theirs = []
    ours.hook = lambda n: theirs.append(Tailer(other).sync(sf)) if n == 2 else None

    result = Tailer(ours, batch_lines=3).sync(sf)

    assert len(theirs) == 1
    stats = ours.stats()
    assert (stats["events"], stats["duplicates"], stats["lines"]) == (12, 0, 12)
    assert result.events_added + theirs[0].events_added == 12
    assert result.reset is None and theirs[0].reset is None
    assert [body for _, body in ours.replay("s1")] == lines


def test_resuming_near_the_start_keeps_the_tail_fingerprint(store: Store, tmp_path: Path) -> None:
    """Appends to a small file are read on, never re-read: the fingerprint of the bytes before
    the cursor covers only bytes that were consumed."""
    path = tmp_path / "projects" / "p" / "s1.jsonl"
    lines = [_record(i) for i in range(9)]
    _write_lines(path, lines[:3])
    sf = classify(str(path))
    assert sf is not None
    tailer = Tailer(store)
    first = tailer.sync(sf)
    with path.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in lines[3:6]))
    second = tailer.sync(sf)
    with path.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in lines[6:]))
    third = tailer.sync(sf)
    assert [(r.lines, r.duplicates, r.reset) for r in (first, second, third)] == [(3, 0, None)] * 3
    assert [body for _, body in store.replay("s1")] == lines


def test_lost_race_on_an_earlier_file_is_retried_after_the_stream_moved_on(r: redis.Redis, tmp_path: Path) -> None:
    """The conflict of file A's last batch is only seen while file B is read: A is re-synced."""
    root = tmp_path / "projects" / "p"
    a_lines = [_record(i, "sa") for i in range(4)]
    b_lines = [_record(i, "sb") for i in range(4)]
    _write_lines(root / "sa.jsonl", a_lines)
    _write_lines(root / "sb.jsonl", [*b_lines, b'{"sessionId":"sb","uuid":"extra","type":"user"}'])
    sources = list(iter_transcripts([tmp_path / "projects"]))
    assert [Path(s.path).name for s in sources] == ["sa.jsonl", "sb.jsonl"]
    other = Store(r, Keys("agg"), HOST)
    ours = _Hooked(r, Keys("agg"), HOST)

    def race(n: int) -> None:
        if n == 2:  # A's only batch is staged, not yet committed: another ingester takes A first
            Tailer(other, batch_lines=1).sync(sources[0])

    ours.hook = race
    results = {Path(res.file).name: res for res in Tailer(ours).sync_all(sources)}

    assert set(results) == {"sa.jsonl", "sb.jsonl"}
    assert results["sb.jsonl"].events_added == 5
    stats = ours.stats()
    assert (stats["events"], stats["duplicates"], stats["lines"]) == (9, 0, 9)
    assert [body for _, body in ours.replay("sa")] == a_lines


def test_script_forgotten_mid_stream_changes_nothing(r: redis.Redis, corpus: Path) -> None:
    """SCRIPT FLUSH between batches (as after a restart or failover): every line still lands once,
    and seq still follows the order files were read in (a batch whose script call Redis refused
    must not be committed after one read later)."""
    sources = list(iter_transcripts([corpus]))
    exp = oracle.read([Path(s.path) for s in sources])
    store = _Hooked(r, Keys("agg"), HOST)
    store.hook = lambda n: r.script_flush() if n % 3 == 1 else None

    report = ingest(store, sources, project=False)

    assert store.prepared > 7
    assert (report.events_added, report.duplicates, report.revisions, report.rejected) == (
        exp.events,
        exp.duplicates,
        exp.revisions,
        exp.rejected,
    )
    order = {sf.display: i for i, sf in enumerate(sources)}
    files_by_seq = [order[e.file] for e in store.entries_after(0)]
    assert files_by_seq == sorted(files_by_seq)


def test_one_stream_stores_what_file_by_file_syncs_store(r: redis.Redis, corpus: Path) -> None:
    sources = list(iter_transcripts([corpus]))
    stream, single = Store(r, Keys("a"), HOST), Store(r, Keys("b"), HOST)
    by_stream = {res.file: res for res in Tailer(stream).sync_all(sources)}
    tailer = Tailer(single)
    by_file = {sf.display: tailer.sync(sf) for sf in sources}

    assert by_stream == by_file
    timeless = {"batches": 0, "last_ingest_ms": 0}
    assert stream.stats() | timeless == single.stats() | timeless
    assert stream.conversations() == single.conversations()
    for conv in stream.conversations():
        assert list(stream.replay(conv)) == list(single.replay(conv))
    in_use = r.connection_pool._in_use_connections  # type: ignore[attr-defined]
    assert not in_use  # the stream's connection went back to the pool


def _expected_lines(data: bytes, max_line: int) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]]]:
    """(offset, line) of every storable line, (offset, size) of every too-long one."""
    stored, too_long, off = [], [], 0
    for line in data.split(b"\n")[:-1]:  # an unterminated last line waits
        if len(line) > max_line:
            too_long.append((off, len(line)))
        elif line.strip():
            stored.append((off, line))
        off += len(line) + 1
    return stored, too_long


@pytest.mark.parametrize(("chunk", "max_line"), [(7, 300), (64, 300), (301, 300), (4096, 1000), (1 << 20, 200)])
def test_lines_cut_at_any_chunk_boundary(r: redis.Redis, tmp_path: Path, chunk: int, max_line: int) -> None:
    lines = []
    for i in range(60):
        size = (37 * i) % 700  # some under, some over max_line, some exactly at chunk sizes
        lines.append(_record(i, size=size))
        if i % 9 == 0:
            lines.append(b"")  # blank lines are skipped, not stored
    data = b"\n".join(lines) + b"\n" + _record(999)[:-3]  # ends in a partial line
    path = tmp_path / "projects" / "p" / "s1.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    sf = classify(str(path))
    assert sf is not None
    store = Store(r, Keys("agg"), HOST)

    result = Tailer(store, read_chunk_bytes=chunk, max_line_bytes=max_line, batch_lines=13).sync(sf)

    stored, too_long = _expected_lines(data, max_line)
    assert (result.events_added, result.rejected) == (len(stored), len(too_long))
    assert [body for _, body in store.replay("s1")] == [line for _, line in stored]
    rejects = [json.loads(x) for x in r.lrange("agg:rejects", 0, -1)][::-1]
    assert [(x["offset"], x["bytes"]) for x in rejects] == too_long
    cur = store.cursor(store.file_id(sf.path))
    assert cur is not None and cur.off == data.rfind(b"\n") + 1


def test_conversation_index_hashes_skip_the_listpack_encoding(store: Store, r: redis.Redis, corpus: Path) -> None:
    ingest(store, iter_transcripts([corpus]))
    convs = store.conversations()
    assert convs
    for conv in convs:
        key = store.keys.cur(conv)
        assert r.object("encoding", key) == b"hashtable"
        assert all(not f.startswith(b"\0") for f in r.hkeys(key))  # the placeholder was removed


def test_failed_body_write_leaves_no_event_without_its_body(tmp_path: Path) -> None:
    """Out of memory while writing bodies: the error surfaces, and nothing indexed lacks a body."""
    lines = [_record(i, size=3000) for i in range(400)]
    path = tmp_path / "projects" / "p" / "s1.jsonl"
    _write_lines(path, lines[:100])
    sf = classify(str(path))
    assert sf is not None
    with RedisProcess(tmp_path / "redis", appendonly=False) as server:
        client = server.client()
        store = Store(client, Keys("agg"), HOST)
        Tailer(store, batch_lines=20).sync(sf)
        with path.open("ab") as f:
            f.write(b"".join(line + b"\n" for line in lines[100:]))
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 400_000)  # room for about a third of the rest
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            Tailer(store, batch_lines=20).sync(sf)
        ids = [k.decode() for k in client.hkeys(store.keys.cur("s1"))]
        assert 100 <= len(ids) < len(lines)
        versions = client.hmget(store.keys.cur("s1"), ids)
        bodies = client.hmget(store.keys.body("s1"), [v.decode()[-32:] for v in versions])
        assert all(b is not None for b in bodies)
        assert store.stats()["events"] == len(ids)

        client.config_set("maxmemory", 0)
        Tailer(store, batch_lines=20).sync(sf)  # resumes where the committed cursor is
        assert [body for _, body in store.replay("s1")] == lines
        client.close()
