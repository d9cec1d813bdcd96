"""Store's read methods: what other modules read of the store, decoded in one place."""

from __future__ import annotations

from pathlib import Path

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.parse import digest_of
from aggregator.store import Store
from tests.support.live import append, line, record


def _raw(session: str, n: int, **kw: object) -> bytes:
    return line(record(session, n, **kw))[:-1]  # the stored bytes: without the newline


def test_events_bytes_timelines_and_batches(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "claude" / "projects" / "p" / "a.jsonl"
    append(src, line(record("a", 0)) + line(record("a", 1, kind="assistant")))
    append(src.with_name("b.jsonl"), line(record("b", 0)))
    ingest(store, iter_transcripts([tmp_path / "claude"]))
    append(src, line(record("a", 1, kind="assistant", text="revised")))  # a revision of a-1
    ingest(store, iter_transcripts([tmp_path / "claude"]))

    old, new = digest_of(_raw("a", 1, kind="assistant")), digest_of(_raw("a", 1, kind="assistant", text="revised"))
    refs = [("a", "a-1"), ("b", "b-0"), ("a", "nope")]
    assert store.versions(refs) == [[old, new], [digest_of(_raw("b", 0))], []]
    assert store.newest_digests(refs) == [new, digest_of(_raw("b", 0)), None]
    assert store.holds(refs) == [True, True, False]
    assert store.newest_bodies(refs) == [_raw("a", 1, kind="assistant", text="revised"), _raw("b", 0), None]
    assert store.bodies([("a", old), ("a", "0" * 32)]) == [_raw("a", 1, kind="assistant"), None]

    firsts = store.timeline_before("a", None, 10)  # newest first
    assert firsts == sorted(firsts, reverse=True) and len(firsts) == 2
    assert store.timeline_after("a", 0, 10) == firsts[::-1]
    assert store.timeline_before("a", firsts[0], 10) == firsts[1:]
    assert store.timeline_holding("a", store.last_seq()) == firsts[0]
    assert store.timeline_holding("a", 0) is None
    batches = store.batches_at([*firsts, 999])
    assert batches[-1] == []
    seen = sorted((e.seq, e.env()["id"], e.env()["revision"]) for batch in batches[:-1] for e in batch)
    assert [(i, rev) for _, i, rev in seen if i.startswith("a")] == [("a-0", False), ("a-1", False), ("a-1", True)]


def test_files_projections_and_the_head(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "claude" / "projects" / "p" / "a.jsonl"
    append(src, line(record("a", 0)) + line(record("a", 1, kind="assistant")))
    ingest(store, iter_transcripts([tmp_path / "claude"]))

    (fs,) = store.file_states()
    assert (fs.host, fs.path, fs.off) == (store.host, str(src), src.stat().st_size)
    assert store.projections_seq() == store.last_seq() == 2
    assert store.projects() == ["p"]
    assert store.projection_fields(["a", "zz"], ["project", "messages"]) == [["p", "2"], [None, None]]
    assert store.projection("a")[b"project"] == b"p" and dict(store.projections(["a"]))["a"] == store.projection("a")
    recent = store.recent_messages()
    assert [(m.conv, m.id, m.role) for m in recent] == [("a", "a-0", "user"), ("a", "a-1", "assistant")]
    assert store.recent_messages(1) == recent[1:] and store.recent_messages(0) == []
    assert store.head(None) == (2, 2, None) and store.head("a") == (2, 2, 2)
    assert store.snapshot_record() == {}
    store.client.hset(store.keys.snapshot, mapping={"seq": 2, "path": "/x"})
    assert store.snapshot_record() == {"seq": "2", "path": "/x"}
    assert store.stats()["events"] == 2
