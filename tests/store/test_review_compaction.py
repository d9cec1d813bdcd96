"""Review of compaction x forget (2026-12-07): failing tests demonstrating bugs."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from aggregator.compaction import Compactor, unpack_chunk
from aggregator.forget import forget
from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.store import Store
from devtools.agg import HOST
from tests.support.records import session_file, tokens, assistant, user, write


def _soon(s: int = 3600) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + s))


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
