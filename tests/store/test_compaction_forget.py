"""Compaction and forget together: a forgotten line never sealed, segments a forget rewrote never hide the
next one, a sealed line read again not sealed twice, earlier agg-forget entries kept as in the stream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from aggregator.compaction import Compactor, CompactReport, unpack_chunk
from aggregator.forget import forget
from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.searchindex import SearchIndex
from aggregator.store import Batch, CommitStream, Store
from devtools.agg import HOST
from tests.support.records import session_file, user, write


def _soon(s: int = 3600) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + s))


def _hvals(r: redis.Redis, key: str) -> list[bytes]:
    return [v for v in r.hvals(key) if isinstance(v, bytes)]


def _forget_entries(store: Store, conv: str) -> list[int]:
    return [e.seq for e in store.entries_after(0) if e.is_forget and e.env()["conv"] == conv]


def _scenario(r: redis.Redis, tmp_path: Path, ns: str, archive: bool) -> Store:
    """s1 forgotten, then comes back with a line written after the forget, then forgotten again;
    ``archive``: the log was archived (agg compact) before the second forget."""
    claude = tmp_path / ns / "projects"
    path = write(session_file(claude, "s1"), [user("s1", "u1", "the old secret", at="2026-03-01T10:00:00.000Z")])
    write(session_file(claude, "b"), [user("b", "b1", "other", at="2026-03-01T10:00:00.000Z")])
    store = Store(r, Keys(ns), HOST)
    ingest(store, iter_transcripts([claude]))
    forget(store, ["s1"])
    write(path, [user("s1", "u2", "a new question", at=_soon())], append=True)
    ingest(store, iter_transcripts([claude]))
    Projector(store).catch_up()
    if archive:
        assert Compactor(store).run(3600 * 24 * 365 * 100, keep_log=0).log_batches >= 3
        assert r.xlen(f"{ns}:log") == 0
    forget(store, ["s1"])
    return store


def test_scrubbing_the_archive_keeps_an_earlier_forget_entry_as_the_stream_does(r: redis.Redis, tmp_path: Path) -> None:
    """FORGET in the stream blanks only the conversation's timeline batches, so the agg-forget
    entry of an earlier forget of the same conversation stays in the log; forget_archived blanks
    every entry whose envelope names the conversation, agg-forget entries included: the same
    history reads differently depending on whether agg compact ran before the second forget."""
    in_stream = _scenario(r, tmp_path, "plain", archive=False)
    archived = _scenario(r, tmp_path, "arch", archive=True)
    assert len(_forget_entries(in_stream, "s1")) == 2
    assert len(_forget_entries(archived, "s1")) == 2


def test_a_forgotten_line_read_again_is_never_sealed(
    r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit writes its bodies (step 1) before the INGEST script, which drops the lines of a
    forgotten conversation dated before its forget and HDELs their raw bodies. A sealer running
    in between (agg run's writer seals idle conversations in the background; another host is
    reading the whole file, as in test_forget's 'another machine reading the whole file') moves
    the forgotten line's bytes into a chunk, where the script's HDEL does not reach: the
    forgotten secret stays in {c:K}:chunks."""
    claude = tmp_path / "claude" / "projects"
    path = write(session_file(claude, "s1"), [user("s1", "u1", "the old secret", at="2026-03-01T10:00:00.000Z")])
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    forget(store, ["s1"])
    write(path, [user("s1", "u2", "a new question", at=_soon())], append=True)
    ingest(store, iter_transcripts([claude]))
    Projector(store).catch_up()

    other = Store(r, Keys("agg"), "other-host")  # reads the whole file again
    real = CommitStream._script
    compactor = Compactor(store)

    def sealer_between_bodies_and_script(batch: Batch) -> bytes:
        compactor.seal("s1", CompactReport())  # the bodies are written: what a sealer may do now
        return real(batch)

    monkeypatch.setattr(CommitStream, "_script", staticmethod(sealer_between_bodies_and_script))
    rep = ingest(other, iter_transcripts([claude]))
    assert rep.forgotten == 1
    sealed = b"".join(raw for blob in _hvals(r, store.keys.chunks("s1")) for _, raw in unpack_chunk(blob))
    raw = b"".join(_hvals(r, store.keys.body("s1")))
    assert b"the old secret" not in sealed + raw


def test_a_segment_whose_last_batches_a_forget_dropped_does_not_hide_the_next_one(
    r: redis.Redis, tmp_path: Path
) -> None:
    """Six conversations, one log batch each, archived 3 to a segment; forgetting the third drops
    the first segment's last batch (its member keeps the name '<b0>:<b2>'). _archived_after(after)
    for an ``after`` inside that segment finds no batch there after it and returns [] without
    looking at the next segment: log_batches (so entries_after, agg tail --since 0, a rebuild)
    skips the whole second segment."""
    claude = tmp_path / "claude" / "projects"
    store = Store(r, Keys("agg"), HOST)
    for i in range(6):
        write(session_file(claude, f"s{i}"), [user(f"s{i}", f"u{i}", f"line {i}", at="2026-03-01T10:00:00.000Z")])
        ingest(store, iter_transcripts([claude]))
    Projector(store).catch_up()
    assert r.xlen(store.keys.log) == 6
    assert Compactor(store, segment_batches=3).run(3600 * 24 * 365 * 100, keep_log=0).log_segments == 2
    forget(store, ["s2"])
    convs = [e.env()["conv"] for e in store.entries_after(0) if not e.is_forget]
    assert convs == ["s0", "s1", "s3", "s4", "s5"]


def test_a_rebuild_after_such_a_forget_keeps_the_next_segments_conversations(r: redis.Redis, tmp_path: Path) -> None:
    """The consequence of the previous test for agg replay --rebuild: s3..s5 lose their projections."""
    claude = tmp_path / "claude" / "projects"
    store = Store(r, Keys("agg"), HOST)
    for i in range(6):
        write(session_file(claude, f"s{i}"), [user(f"s{i}", f"u{i}", f"line {i}", at="2026-03-01T10:00:00.000Z")])
        ingest(store, iter_transcripts([claude]))
    Projector(store).catch_up()
    Compactor(store, segment_batches=3).run(3600 * 24 * 365 * 100, keep_log=0)
    forget(store, ["s2"])
    assert store.projection("s4").get(b"events") == b"1"
    Projector(store).rebuild()
    assert store.projection("s4").get(b"events") == b"1"


@pytest.mark.parametrize("archive", [False, True])
def test_an_index_last_at_an_earlier_forget_stays_in_step_after_compaction_and_a_second_forget(
    r: redis.Redis, tmp_path: Path, archive: bool
) -> None:
    """The consequence of the first test: a machine's search index that last applied s1's first
    forget entry (searchindex.in_step checks that entry is still in the log) is rebuilt whole
    once compaction archived the log and s1 was forgotten again; without compaction it is not."""
    claude = tmp_path / "claude" / "projects"
    path = write(session_file(claude, "s1"), [user("s1", "u1", "the old secret", at="2026-03-01T10:00:00.000Z")])
    write(session_file(claude, "b"), [user("b", "b1", "other", at="2026-03-01T10:00:00.000Z")])
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    forget(store, ["s1"])
    index = SearchIndex.open(store, tmp_path / "index")
    index.catch_up(store)
    assert index.in_step(store)
    write(path, [user("s1", "u2", "a new question", at=_soon())], append=True)
    ingest(store, iter_transcripts([claude]))
    Projector(store).catch_up()
    if archive:
        Compactor(store).run(3600 * 24 * 365 * 100, keep_log=0)
    forget(store, ["s1"])
    assert index.in_step(store)
    index.close()


def test_a_second_host_reading_the_same_files_does_not_double_the_sealed_bodies(r: redis.Redis, tmp_path: Path) -> None:
    """Every commit writes its lines' bodies raw (step 1), duplicates included; after sealing, a
    second host reading the same files (or a cursor reset) puts every sealed body back raw, and
    the next compaction seals them all again into new chunks: each re-read adds one more
    compressed copy of the whole conversation (the module docstring allows 'may sit in two
    chunks', but nothing bounds it, and the raw copies are never dropped as duplicates)."""
    claude = tmp_path / "claude" / "projects"
    write(
        session_file(claude, "s1"), [user("s1", f"u{i}", f"line {i}", at="2026-03-01T10:00:00.000Z") for i in range(20)]
    )
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    Projector(store).catch_up()
    assert Compactor(store).run(0).lines == 20
    for host in ("h2", "h3"):
        rep = ingest(Store(r, Keys("agg"), host), iter_transcripts([claude]))
        assert rep.duplicates == 20
        Compactor(store).run(0)
    sealed = [d for blob in _hvals(r, store.keys.chunks("s1")) for d, _ in unpack_chunk(blob)]
    assert (len(sealed), r.hlen(store.keys.body("s1"))) == (20, 0)
