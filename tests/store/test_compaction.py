"""Sealing idle conversations (aggregator/compaction.py) on a real Redis: nothing a reader sees changes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from aggregator import scripts
from aggregator.compaction import Compactor, pack_chunk, unpack_chunk
from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.store import Store
from tests.support.live import append, record, replayed
from tests.support.records import line


def _every_body(store: Store) -> dict[str, Any]:
    """What each read of bodies returns, for every event of every conversation."""
    refs = [(c, eid) for c in store.conversations() for eid, _ in store.replay(c)]
    digests = store.newest_digests(refs)
    return {
        "replay": replayed(store),
        "newest": store.newest_bodies(refs),
        "bodies": store.bodies([(c, d or "") for (c, _), d in zip(refs, digests, strict=True)]),
    }


def _raw_left(store: Store) -> int:
    return sum(store.r.hlen(store.keys.body(c)) for c in store.conversations())


def test_sealing_the_corpus_changes_nothing_a_reader_sees(store: Store, corpus: Path) -> None:
    ingest(store, iter_transcripts([corpus]))
    projector = Projector(store)
    projector.catch_up()
    before, digest = _every_body(store), projector.digest()
    used = store.r.info("memory")["used_memory"]

    report = Compactor(store).run(0)

    assert report.lines > 5000 and report.conversations == len(store.conversations()) and _raw_left(store) == 0
    assert report.raw_bytes > 5 * report.sealed_bytes  # transcripts compress well
    assert store.r.info("memory")["used_memory"] < used - report.raw_bytes // 2  # the raw copies are gone
    assert _every_body(store) == before
    assert projector.digest() == digest
    assert projector.rebuild()["digest"] == digest  # a rebuild from the log reads sealed bodies
    assert Compactor(store).run(0).lines == 0  # nothing left to seal


def test_a_sealed_conversation_takes_new_lines_and_seals_them_later(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "projects" / "p" / "s.jsonl"
    append(path, b"".join(line(record("s", n)) for n in range(50)))
    ingest(store, iter_transcripts([tmp_path / "projects"]))
    Projector(store).catch_up()
    assert Compactor(store).run(0).chunks == 1
    append(path, b"".join(line(record("s", n)) for n in range(50, 80)))
    ingest(store, iter_transcripts([tmp_path / "projects"]))
    Projector(store).catch_up()
    assert store.r.hlen(store.keys.body("s")) == 30  # new lines are raw
    want = [line(record("s", n)).rstrip(b"\n") for n in range(80)]
    assert replayed(store)["s"] == want
    assert Compactor(store).run(0).chunks == 1
    assert store.r.hlen(store.keys.chunks("s")) == 2 and _raw_left(store) == 0
    assert replayed(store)["s"] == want


def test_only_conversations_idle_long_enough_are_sealed(store: Store, tmp_path: Path) -> None:
    """record() stamps lines 2025-06-01: idle for a long time at any "now"."""
    append(tmp_path / "projects" / "p" / "old.jsonl", line(record("old", 1)))
    ingest(store, iter_transcripts([tmp_path / "projects"]))
    Projector(store).catch_up()
    (old_ms,) = (int(v or 0) for v in store.projection_fields(["old"], ["last_ms"])[0])
    assert old_ms > 0
    compactor = Compactor(store)
    assert compactor.idle_conversations(3600, now_ms=old_ms + 3_599_000) == []
    assert compactor.idle_conversations(3600, now_ms=old_ms + 3_600_000) == ["old"]


def test_readers_see_every_body_while_sealing_runs(store: Store, corpus: Path) -> None:
    """Readers read the raw hash, then the chunks: a seal landing in between moves a body from the
    first to the second in one step, so it is found either way. Sealing in small chunks (hundreds
    of steps) runs on a thread while replays run here."""
    ingest(store, iter_transcripts([corpus]))
    Projector(store).catch_up()
    want = replayed(store)
    sealer = Store(redis.Redis(connection_pool=store.client.connection_pool), store.keys, store.host)
    thread = threading.Thread(target=Compactor(sealer, chunk_bytes=16 * 1024).run, args=(0,))
    thread.start()
    reads = 0
    while thread.is_alive() or reads == 0:
        assert replayed(store) == want
        reads += 1
    thread.join()
    assert _raw_left(store) == 0 and replayed(store) == want


def test_the_seal_script_refuses_a_digest_no_longer_raw(r: redis.Redis) -> None:
    r.hset("b", mapping={"a" * 32: b"one", "b" * 32: b"two"})
    seal = r.register_script(scripts.SEAL)
    blob = pack_chunk([("a" * 32, b"one"), ("c" * 32, b"three")])
    call = scripts.seal_call(body="b", chunks="c", chunk=blob, digests=["a" * 32, "c" * 32])
    assert seal(keys=call.keys, args=call.args) == 0
    assert r.hlen("b") == 2 and not r.exists("c")  # nothing written
    blob = pack_chunk([("a" * 32, b"one"), ("b" * 32, b"two")])
    call = scripts.seal_call(body="b", chunks="c", chunk=blob, digests=["a" * 32, "b" * 32])
    assert seal(keys=call.keys, args=call.args) == 1
    assert not r.exists("b") and dict(unpack_chunk(r.hget("c", "1") or b"")) == {"a" * 32: b"one", "b" * 32: b"two"}


def test_chunks_round_trip_any_bytes() -> None:
    items = [("0" * 32, b""), ("1" * 32, bytes(range(256)) * 3), ("2" * 32, "héllo\n".encode())]
    assert list(unpack_chunk(pack_chunk(items))) == items
    with pytest.raises(ValueError, match="32 hex characters"):
        pack_chunk([("short", b"x")])
