"""The tailer against real files and a real redis-server: growth, truncation, rewrites, hostile bytes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from aggregator.layout import SourceFile, classify
from aggregator.store import Store
from aggregator.tailer import Tailer
from tests.support import oracle


def rec(i: int, conv: str = "s1", **extra: object) -> bytes:
    return json.dumps({"type": "user", "uuid": f"u{i}", "sessionId": conv, "n": i, **extra}).encode() + b"\n"


def source(tmp_path: Path, name: str = "s1.jsonl") -> tuple[Path, SourceFile]:
    path = tmp_path / "projects" / "p" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    sf = classify(str(path))
    assert sf is not None
    return path, sf


def stored(store: Store, conv: str = "s1") -> list[bytes]:
    return [body for _, body in store.replay(conv)]


def test_appends_and_a_partial_last_line(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    t = Tailer(store)
    path.write_bytes(rec(1) + rec(2)[:10])
    r1 = t.sync(sf)
    assert (r1.events_added, r1.bytes) == (1, len(rec(1)))
    assert store.cursor(store.file_id(sf.path)).off == r1.offset == len(rec(1))  # type: ignore[union-attr]
    with open(path, "ab") as f:
        f.write(rec(2)[10:] + rec(3))
    r2 = t.sync(sf)
    assert (r2.events_added, r2.duplicates, r2.reset) == (2, 0, None)
    assert r2.offset == path.stat().st_size == store.cursor(store.file_id(sf.path)).off  # type: ignore[union-attr]
    assert stored(store) == [rec(i).rstrip(b"\n") for i in (1, 2, 3)]


def test_truncation_rereads_and_keeps_history(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    t = Tailer(store)
    path.write_bytes(rec(1) + rec(2) + rec(3))
    t.sync(sf)
    path.write_bytes(rec(1))  # truncated in place: below the committed offset
    r = t.sync(sf)
    assert (r.reset, r.events_added, r.duplicates) == ("truncated", 0, 1)
    with open(path, "ab") as f:
        f.write(rec(4))
    assert t.sync(sf).events_added == 1
    assert stored(store) == [rec(i).rstrip(b"\n") for i in (1, 2, 3, 4)]  # removed lines are kept


def test_in_place_rewrite_of_the_same_size_is_noticed(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    t = Tailer(store)
    path.write_bytes(rec(1) + rec(2, usage=1))
    t.sync(sf)
    before = os.stat(path)
    path.write_bytes(rec(1) + rec(2, usage=9))  # same length, one line's content changed
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    r = t.sync(sf)
    assert (r.reset, r.revisions, r.duplicates) == ("rewritten", 1, 1)
    assert stored(store)[1] == rec(2, usage=9).rstrip(b"\n")


def test_rewrite_that_keeps_the_size_class_and_grows(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    t = Tailer(store)
    path.write_bytes(rec(1) + rec(2))
    t.sync(sf)
    path.write_bytes(rec(1) + rec(20) + rec(3))  # the tail before the old offset changed
    r = t.sync(sf)
    assert r.reset == "rewritten" and r.events_added == 2
    assert [json.loads(b)["n"] for b in stored(store)] == [1, 2, 20, 3]


def test_replacement_by_a_new_file(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    t = Tailer(store)
    path.write_bytes(rec(1) + rec(2) + rec(3))
    t.sync(sf)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(rec(1) + rec(3) + rec(5) + rec(6))  # e.g. rewritten to drop a line, renamed over
    os.replace(tmp, path)
    r = t.sync(sf)
    assert (r.reset, r.events_added, r.duplicates) == ("replaced", 2, 2)
    assert [json.loads(b)["n"] for b in stored(store)] == [1, 2, 3, 5, 6]


def test_deleted_file_keeps_its_events(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    t = Tailer(store)
    path.write_bytes(rec(1))
    t.sync(sf)
    path.unlink()
    assert t.sync(sf).skipped == "vanished"
    assert len(stored(store)) == 1


def test_two_tailers_racing_on_one_file_store_each_line_once(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    path.write_bytes(b"".join(rec(i) for i in range(3000)))
    tailers = [Tailer(store, batch_lines=50), Tailer(store, batch_lines=70)]
    threads = [threading.Thread(target=t.sync, args=(sf,)) for t in tailers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.stats()["events"] == 3000 and store.stats()["duplicates"] == 0
    assert [json.loads(b)["n"] for b in stored(store)] == list(range(3000))


def test_hostile_lines_are_rejected_and_the_rest_flows(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    big = json.dumps({"type": "user", "uuid": "big", "sessionId": "s1", "blob": "x" * (20 << 20)}).encode()
    hostile = [
        rec(1),
        b'{"type":"pr-link","sessionId":"s1","prNu{"parentUuid":"p","uuid":"spliced"}\n',
        b'{"uuid":"a","sessionId":"s1"}{"uuid":"b","sessionId":"s1"}\n',
        b"\x00" * 700 + rec(2),
        b'{"type":"user","uuid":"sur","sessionId":"s1","message":{"content":"cut \\ud83d"}}\n',
        b'{"uuid":"bad-utf8","sessionId":"s1","t":"\xc3\x28"}\n',
        b"[1,2]\n",
        b"null\n",
        b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}\n",
        b"\n",
        big + b"\n",
        rec(3),
    ]
    path.write_bytes(b"".join(hostile))
    exp = oracle.read([path])
    r = Tailer(store).sync(sf)
    assert (r.events_added, r.rejected) == (exp.events, exp.rejected) == (4, 7)
    assert stored(store) == [rec(1).rstrip(b"\n"), hostile[4].rstrip(b"\n"), big, rec(3).rstrip(b"\n")]
    assert store.cursor(store.file_id(sf.path)).off == path.stat().st_size  # type: ignore[union-attr]


def test_a_line_over_the_limit_is_rejected_without_being_held(store: Store, tmp_path: Path) -> None:
    path, sf = source(tmp_path)
    huge = b'{"uuid":"huge","sessionId":"s1","x":"' + b"y" * (3 << 20) + b'"}\n'
    path.write_bytes(rec(1) + huge + rec(2))
    r = Tailer(store, max_line_bytes=1 << 20, read_chunk_bytes=64 << 10).sync(sf)
    assert (r.events_added, r.rejected) == (2, 1)
    [reason] = [json.loads(x)["reason"] for x in store.client.lrange("agg:rejects", 0, -1)]  # type: ignore[union-attr]
    assert reason.startswith("line too long")
    with open(path, "ab") as f:
        f.write(rec(3))
    again = Tailer(store, max_line_bytes=1 << 20).sync(sf)
    assert (again.reset, again.events_added) == (None, 1)  # the cursor after the long line is trusted


def test_fifo_is_skipped_not_opened(store: Store, tmp_path: Path) -> None:
    fifo = tmp_path / "projects" / "p" / "f.jsonl"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    sf = classify(str(fifo))
    assert sf is not None
    assert Tailer(store).sync(sf).skipped == "not a regular file"
