"""The ingest script's contract, on fakeredis (fast) and on the real redis-server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis

from aggregator.errors import CursorConflict
from aggregator.keys import Keys
from aggregator.layout import SourceFile
from aggregator.parse import Event, Rejection, digest_of, parse_line, ts_ms
from aggregator.store import Store

SF = SourceFile("/t/proj/s1.jsonl", "proj", "s1", None, "main")


@pytest.fixture
def st(any_redis: Any) -> Store:
    return Store(any_redis, Keys("agg"), "h")


def lines(*raws: bytes) -> list[Event | Rejection]:
    out: list[Event | Rejection] = []
    for i, raw in enumerate(raws):
        parsed = parse_line(raw, i * 100, SF)
        assert parsed is not None
        out.append(parsed)
    return out


def commit(st: Store, gen: int, *raws: bytes, off: int = 1) -> Any:
    """Commit ``raws`` expecting the cursor token of commit number ``gen`` (0: a new file)."""
    return st.commit(SF, "fid1", f"t{gen}" if gen else "", {"off": off, "tok": f"t{gen + 1}"}, lines(*raws))


def test_new_duplicate_and_revision(st: Store) -> None:
    a1 = b'{"uuid":"a","type":"user","n":1}'
    a2 = b'{"uuid":"a","type":"user","n":2}'
    b = b'{"uuid":"b","type":"assistant"}'
    r1 = commit(st, 0, a1, b)
    assert (r1.added, r1.revisions, r1.duplicates, r1.first_seq, r1.last_seq) == (2, 0, 0, 1, 2)
    r2 = commit(st, 1, a1, a2, b, a1)
    assert (r2.added, r2.revisions, r2.duplicates, r2.first_seq, r2.last_seq) == (0, 1, 3, 3, 3)
    assert st.stats()["events"] == 2 and st.stats()["revisions"] == 1 and st.stats()["duplicates"] == 3
    assert dict(st.replay("s1")) == {"a": a2, "b": b}  # projections and replay use the newest version
    envs = [e.env() for e in st.entries_after(0)]
    assert [(e["seq"], e["conv_seq"], e["id"], e["revision"]) for e in envs] == [
        (1, 1, "a", False),
        (2, 2, "b", False),
        (3, 3, "a", True),
    ]


def test_cursor_compare_and_set(st: Store) -> None:
    commit(st, 0, b'{"uuid":"a"}', off=10)
    with pytest.raises(CursorConflict):
        commit(st, 0, b'{"uuid":"b"}', off=20)  # stale token: nothing is written
    assert st.stats()["events"] == 1 and st.last_seq() == 1
    assert st.cursor("fid1") is not None and st.cursor("fid1").off == 10  # type: ignore[union-attr]
    assert commit(st, 1, b'{"uuid":"b"}', off=20).added == 1


def test_rejections_are_recorded_once(st: Store) -> None:
    bad = b'{"broken'
    r1 = commit(st, 0, bad, b'{"uuid":"ok"}')
    r2 = commit(st, 1, bad)
    assert (r1.rejected, r2.rejected, r2.duplicates) == (1, 0, 1)
    [rec] = st.client.lrange("agg:rejects", 0, -1)  # type: ignore[union-attr]
    rec = orjson.loads(rec)
    assert (rec["file"], rec["offset"], rec["prefix"]) == ("/t/proj/s1.jsonl", 0, '{"broken')
    assert rec["reason"].startswith("invalid JSON")


def test_several_conversations_in_one_batch(st: Store) -> None:
    commit(
        st,
        0,
        b'{"uuid":"a","sessionId":"x","type":"user"}',
        b'{"uuid":"b","sessionId":"y"}',
        b'{"uuid":"c","sessionId":"x"}',
        b'{"uuid":"d"}',
    )
    envs = [e.env() for e in st.entries_after(0)]
    assert [(e["conv"], e["conv_seq"]) for e in envs] == [("x", 1), ("y", 1), ("x", 2), ("s1", 1)]
    assert sorted(st.conversations()) == ["s1", "x", "y"]
    assert st.stats()["conversations"] == 1  # only x has a user/assistant record
    assert [eid for eid, _ in st.replay("x")] == ["a", "c"]


def test_envelopes_are_published_on_both_channels(st: Store) -> None:
    ps = st.client.pubsub()
    ps.subscribe("agg:events", "agg:conv:s1")
    assert ps.get_message(timeout=1) and ps.get_message(timeout=1)  # subscribe confirmations
    commit(st, 0, b'{"uuid":"a","type":"user","timestamp":"2025-01-01T00:00:00.000Z"}')
    got = [ps.get_message(timeout=2) for _ in range(2)]
    ps.close()
    assert {m["channel"] for m in got if m} == {b"agg:events", b"agg:conv:s1"}
    env = orjson.loads(got[0]["data"])  # type: ignore[index]
    assert env == {
        "seq": 1,
        "conv": "s1",
        "conv_seq": 1,
        "id": "a",
        "type": "user",
        "ts": "2025-01-01T00:00:00.000Z",
        "agent": None,
        "revision": False,
    }


def test_a_conversation_with_changes_is_marked_for_a_turn(st: Store) -> None:
    commit(st, 0, b'{"uuid":"a"}')
    first = st.client.zscore("agg:dirty", "s1")
    commit(st, 1, b'{"uuid":"b"}')
    assert first is not None and st.client.zscore("agg:dirty", "s1") == first  # NX: oldest change kept


def test_sequences_never_go_below_the_log(st: Store, request: pytest.FixtureRequest) -> None:
    commit(st, 0, b'{"uuid":"a"}', b'{"uuid":"b"}')
    client: redis.Redis = st.client
    client.set("agg:seq", 0)  # a counter that went back (e.g. restored separately)
    r = commit(st, 1, b'{"uuid":"c"}')
    assert r.first_seq == 3  # never reuses a seq the log already holds


def test_a_tombstone_drops_the_lines_dated_up_to_it_and_keeps_later_ones(st: Store) -> None:
    """A forgotten conversation (its tombstone: the forget time) takes only lines dated after it;
    the others are dropped, counted as forgotten, and their bodies written in step 1 deleted."""
    old = b'{"uuid":"a","type":"user","timestamp":"2026-03-01T10:00:00.000Z"}'
    undated = b'{"uuid":"b","type":"user"}'
    at_forget = b'{"uuid":"c","type":"user","timestamp":"2026-03-01T10:00:01.000Z"}'
    later = b'{"uuid":"d","type":"user","timestamp":"2026-03-01T10:00:02.000Z"}'
    st.r.set(st.keys.forgot("s1"), ts_ms("2026-03-01T10:00:01.000Z"))
    res = commit(st, 0, old, undated, at_forget, later)
    assert (res.added, res.duplicates, res.forgotten, res.first_seq, res.last_seq) == (1, 0, 3, 1, 1)
    assert dict(st.replay("s1")) == {"d": later}
    assert st.r.hkeys(st.keys.body("s1")) == [digest_of(later).encode()]
    assert [e.env()["id"] for e in st.entries_after(0)] == ["d"]
    s = st.stats()
    assert (s["events"], s["forgotten"], s["lines"], s["conversations"]) == (1, 3, 4, 1)
    assert st.cursor("fid1") is not None and st.cursor("fid1").off == 1  # the cursor moved past them
    again = commit(st, 1, old, later, off=2)  # read again (another pass): dropped again, never stored
    assert (again.added, again.duplicates, again.forgotten) == (0, 1, 1)
    assert st.r.hlen(st.keys.body("s1")) == 1


def test_a_tombstone_drops_only_its_own_conversations_lines(st: Store) -> None:
    a = b'{"uuid":"a","type":"user","sessionId":"s1","timestamp":"2026-03-01T10:00:00.000Z"}'
    b = b'{"uuid":"b","type":"user","sessionId":"s2","timestamp":"2026-03-01T10:00:00.000Z"}'
    c = b'{"uuid":"c","type":"user","sessionId":"s1","timestamp":"2026-03-01T11:00:00.000Z"}'
    st.r.set(st.keys.forgot("s1"), ts_ms("2026-03-01T10:30:00.000Z"))
    res = commit(st, 0, a, b, c)
    assert (res.added, res.forgotten) == (2, 1)
    envs = [e.env() for e in st.entries_after(0)]
    assert [(e["conv"], e["id"], e["conv_seq"]) for e in envs] == [("s2", "b", 1), ("s1", "c", 1)]
    assert dict(st.replay("s2")) == {"b": b} and dict(st.replay("s1")) == {"c": c}
