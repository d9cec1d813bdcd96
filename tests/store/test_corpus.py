"""The shared corpus through the real store: counts match an independent reading; replay is exact."""

from __future__ import annotations

from pathlib import Path

import redis

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.store import Store
from tests.support import oracle


def test_corpus_counts_match_an_independent_reading(store: Store, corpus: Path) -> None:
    sources = list(iter_transcripts([corpus]))
    exp = oracle.read([Path(s.path) for s in sources])
    assert exp.events > 5000 and exp.rejected > 0  # the corpus really exercises both paths

    report = ingest(store, sources)

    assert report.files == len(oracle.transcripts(corpus))
    assert (report.events_added, report.duplicates, report.revisions, report.rejected) == (
        exp.events,
        exp.duplicates,
        exp.revisions,
        exp.rejected,
    )
    assert report.lines == exp.lines
    stats = store.stats()
    assert stats["events"] == exp.events
    assert stats["rejected"] == exp.rejected
    assert stats["conversations"] == len(exp.conversations)
    assert store.last_seq() == exp.events + exp.revisions


def test_second_ingest_adds_nothing(store: Store, corpus: Path) -> None:
    ingest(store, iter_transcripts([corpus]))
    counted = ("events", "revisions", "duplicates", "rejected", "lines", "conversations")
    before = store.stats()
    seq = store.last_seq()
    again = ingest(store, iter_transcripts([corpus]))
    assert (again.events_added, again.duplicates, again.revisions, again.rejected, again.lines) == (0, 0, 0, 0, 0)
    after = store.stats()
    assert {k: after[k] for k in counted} == {k: before[k] for k in counted}
    assert store.last_seq() == seq


def test_replay_returns_every_original_line_in_file_order(store: Store, corpus: Path) -> None:
    sources = list(iter_transcripts([corpus]))
    exp = oracle.read([Path(s.path) for s in sources])
    ingest(store, sources)
    convs = store.conversations()
    assert sorted(convs) == sorted(exp.order)
    for conv in convs:
        got = list(store.replay(conv))
        assert [eid for eid, _ in got] == exp.order[conv]
        assert [body for _, body in got] == [exp.versions[(conv, eid)][-1] for eid in exp.order[conv]]


def test_script_flush_recovers(store: Store, corpus: Path, r: redis.Redis) -> None:
    """A Redis that forgot the script (restart, failover, SCRIPT FLUSH) is sent it again."""
    files = list(iter_transcripts([corpus]))
    ingest(store, files[:3])
    r.script_flush()
    rest = ingest(store, files[3:])
    assert rest.events_added > 0
    assert store.stats()["events"] == oracle.read([Path(s.path) for s in files]).events


def test_rebuild_reproduces_live_projections(store: Store, corpus: Path) -> None:
    ingest(store, iter_transcripts([corpus]))
    projector = Projector(store)
    live = projector.digest()
    first = projector.rebuild()
    second = projector.rebuild()
    assert first["digest"] == live == second["digest"]
    assert first["entries"] == store.last_seq()
