"""The bounded log (aggregator/compaction.py): older batches archived, every read the same."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import redis

from aggregator.compaction import Compactor, CompactReport, pack_segment, unpack_segment
from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.live.subscribe import Subscription
from aggregator.projections import Projector
from aggregator.store import Store
from tests.support.live import append, record, replayed
from tests.support.records import line


def _many_batches(store: Store, tmp_path: Path, sessions: int = 3, lines: int = 40) -> None:
    """One batch per line: each line appended and ingested on its own."""
    root = tmp_path / "projects"
    for n in range(lines):
        for s in range(sessions):
            append(root / "p" / f"s{s}.jsonl", line(record(f"s{s}", n)))
        ingest(store, iter_transcripts([root]))
    Projector(store).catch_up()


def _every_read(store: Store) -> dict[str, Any]:
    """What each log read returns, from every position."""
    last = store.last_seq()
    timelines = {c: store.r.zrange(store.keys.timeline(c), 0, -1) for c in store.conversations()}
    return {
        "entries": [list(store.entries_after(after)) for after in range(0, last + 1, 7)],
        "ranges": [list(store.entries_after(after, after + 5)) for after in range(0, last, 11)],
        "batches": [store.log_batches(after, count=3) for after in range(0, last + 1, 5)],
        "at": {c: store.batches_at([int(b) for b in tl]) for c, tl in timelines.items()},
        "conv": {c: list(store.conversation_entries(c, 0)) for c in store.conversations()},
        "conv_from": {c: list(store.conversation_entries(c, 30, 90)) for c in store.conversations()},
        "replay": replayed(store),
    }


def test_archiving_the_log_changes_no_read(store: Store, tmp_path: Path) -> None:
    _many_batches(store, tmp_path)
    before = _every_read(store)
    projector = Projector(store)
    digest = projector.digest()
    batches = store.r.xlen(store.keys.log)

    report = Compactor(store, segment_batches=16).run(0, keep_log=10)

    assert store.r.xlen(store.keys.log) == 10 and report.log_batches == batches - 10
    assert report.log_segments == -(-(batches - 10) // 16)
    assert _every_read(store) == before
    assert projector.rebuild()["digest"] == digest  # rebuilt from the archive and the stream


def test_only_what_the_projections_applied_is_archived(store: Store, tmp_path: Path) -> None:
    _many_batches(store, tmp_path, sessions=1, lines=20)
    applied = store.projections_seq()
    append(tmp_path / "projects" / "p" / "late.jsonl", b"".join(line(record("late", n)) for n in range(3)))
    ingest(store, iter_transcripts([tmp_path / "projects"]), project=False)
    Compactor(store).run(1e12, keep_log=0)
    first = store.r.xrange(store.keys.log, "-", "+", count=1)
    assert int(first[0][0].split(b"-")[0]) == applied + 1  # the unapplied batch stays in the stream
    Projector(store).catch_up()  # and the projector reads it there
    assert store.projections_seq() == store.last_seq()


def test_a_subscription_from_0_reads_the_archive_then_the_stream(store: Store, tmp_path: Path) -> None:
    _many_batches(store, tmp_path, sessions=2, lines=15)
    want = [e.env()["seq"] for e in store.entries_after(0)]
    Compactor(store, segment_batches=4).run(0, keep_log=3)
    stop = threading.Event()
    sub = Subscription(store.client, store.keys, since=0, stop=stop)
    got: list[int] = []
    for env in sub:
        got.append(env["seq"])
        if len(got) == len(want):
            stop.set()
    assert got == want == list(range(1, store.last_seq() + 1))


def test_readers_see_every_batch_while_the_log_is_archived(store: Store, tmp_path: Path) -> None:
    """Readers read the stream, then the archive: a segment archived in between moved its batches
    from the first to the second in one step. Archiving a batch or two at a time runs on a thread
    while the whole log is read here."""
    _many_batches(store, tmp_path, sessions=3, lines=60)
    want = list(store.entries_after(0))
    archiver = Store(redis.Redis(connection_pool=store.client.connection_pool), store.keys, store.host)
    compactor = Compactor(archiver, segment_batches=2)
    thread = threading.Thread(target=lambda: compactor.run(1e12, keep_log=0))
    thread.start()
    reads = 0
    while thread.is_alive() or reads == 0:
        assert list(store.entries_after(0)) == want
        reads += 1
    thread.join()
    assert store.r.xlen(store.keys.log) == 0 and list(store.entries_after(0)) == want


def test_two_archivers_never_archive_a_batch_twice(store: Store, tmp_path: Path) -> None:
    _many_batches(store, tmp_path, sessions=2, lines=30)
    want = list(store.entries_after(0))
    reports = [CompactReport(), CompactReport()]
    compactors = [Compactor(store, segment_batches=3), Compactor(store, segment_batches=5)]

    def archive_all(compactor: Compactor, report: CompactReport) -> None:
        while compactor.archive_log(report, keep=0):
            pass

    threads = [threading.Thread(target=archive_all, args=pair) for pair in zip(compactors, reports, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(rep.log_batches for rep in reports) == 60 and list(store.entries_after(0)) == want


def test_segments_round_trip_any_fields() -> None:
    batches = [(1, {b"e": b"a\nb", b"d": b"x" * 64, b"f": b"", b"file": "é".encode()}), (3, {b"e": b"c"})]
    assert unpack_segment(pack_segment(batches)) == batches
