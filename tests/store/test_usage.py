"""Usage accounting (docs/design.md §6) on a real redis-server: the corpus against an independent reading,
and one hand-made case per hazard that broke peer tools."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.store import Store
from aggregator.usage import table, totals
from tests.support import oracle
from tests.support.records import PROJECT, assistant, session_file, subagent_file, tokens, ts, uid, user, write
from tests.support.store import rebuild_reproduces_live, usage_by_conversation

FIELDS = ("input", "output", "cache_read", "cache_creation")


def _ingest(store: Store, root: Path) -> None:
    ingest(store, iter_transcripts([root]))


def test_corpus_usage_matches_an_independent_reading(store: Store, corpus: Path) -> None:
    sources = list(iter_transcripts([corpus]))
    exp = oracle.usage([Path(s.path) for s in sources])
    assert exp.total["responses"] > 500  # the corpus really has usage to count
    ingest(store, sources)

    got = usage_by_conversation(store)
    want = exp.by["conversation"]
    assert set(want) <= set(got)
    for conv, row in want.items():
        assert got[conv] == row, conv
    assert all(got[c]["responses"] == 0 for c in set(got) - set(want))
    for dim in ("project", "model", "day"):
        rows = {r["key"] or "": {k: r[k] for k in (*FIELDS, "responses")} for r in table(store, dim)}
        assert rows == exp.by[dim], dim
    conv_rows = {r["key"]: {k: r[k] for k in (*FIELDS, "responses")} for r in table(store, "conversation")}
    assert conv_rows == want
    assert totals(store) == exp.total
    rebuild_reproduces_live(store)


def test_split_response_is_counted_once_with_its_largest_values(store: Store, tmp_path: Path) -> None:
    s = uid("split")
    write(
        session_file(tmp_path, s),
        [
            user(s, "u1", "hello"),
            assistant(s, "a1", "msg_1", "req_1", tokens(10, 3, 100, 50)),
            assistant(s, "a2", "msg_1", "req_1", tokens(10, 3, 100, 50)),
            user(s, "tool", [{"type": "tool_result", "tool_use_id": "t", "content": "x"}], parent=uid("a2")),
            assistant(s, "a3", "msg_1", "req_1", tokens(10, 40, 100, 50), stop="end_turn"),
        ],
    )
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s] == {
        "input": 10,
        "output": 40,
        "cache_read": 100,
        "cache_creation": 50,
        "responses": 1,
    }
    rebuild_reproduces_live(store)


def test_late_final_usage_raises_the_count_without_adding_twice(store: Store, tmp_path: Path) -> None:
    s = uid("late")
    f = write(
        session_file(tmp_path, s),
        [
            user(s, "u1", "hello"),
            assistant(s, "a1", "msg_L", "req_L", tokens(7, 1, 0, 9)),
            assistant(s, "a2", "msg_L", "req_L", tokens(7, 1, 0, 9)),
        ],
    )
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s]["output"] == 1
    write(f, [assistant(s, "a3", "msg_L", "req_L", tokens(7, 208, 0, 9), stop="tool_use")], append=True)
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s] == {
        "input": 7,
        "output": 208,
        "cache_read": 0,
        "cache_creation": 9,
        "responses": 1,
    }
    assert totals(store) == {"input": 7, "output": 208, "cache_read": 0, "cache_creation": 9, "responses": 1}
    rebuild_reproduces_live(store)


def test_a_revision_carrying_the_final_usage_replaces_the_placeholder(store: Store, tmp_path: Path) -> None:
    s = uid("revision")
    f = session_file(tmp_path, s)
    write(f, [user(s, "u1", "hello"), assistant(s, "a1", "msg_R", "req_R", tokens(5, 1, 20, 0))])
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s]["output"] == 1
    # The same record (same uuid) written again in place with its final usage: a revision.
    write(f, [user(s, "u1", "hello"), assistant(s, "a1", "msg_R", "req_R", tokens(5, 321, 20, 0), stop="end_turn")])
    os.utime(f, ns=(1, 1))  # a different mtime even on coarse clocks
    _ingest(store, tmp_path)
    assert store.stats()["revisions"] == 1
    assert usage_by_conversation(store)[s] == {
        "input": 5,
        "output": 321,
        "cache_read": 20,
        "cache_creation": 0,
        "responses": 1,
    }
    rebuild_reproduces_live(store)


def test_lines_duplicated_across_files_count_once(store: Store, tmp_path: Path) -> None:
    a, b = uid("first"), uid("copy")
    write(
        session_file(tmp_path, a),
        [user(a, "ua", "original"), assistant(a, "aa", "msg_D", "req_D", tokens(3, 30, 300, 3000), at=ts(1))],
    )
    # b replays a's response (resume into a new file: new uuids, same message.id and requestId)
    write(
        session_file(tmp_path, b),
        [
            user(b, "ub", "copied history"),
            assistant(b, "ab", "msg_D", "req_D", tokens(3, 30, 300, 3000), at=ts(1)),
            assistant(b, "ab2", "msg_E", "req_E", tokens(1, 2, 0, 0), at=ts(2)),
        ],
    )
    ingest(store, [*iter_transcripts([session_file(tmp_path, a)]), *iter_transcripts([session_file(tmp_path, b)])])
    got = usage_by_conversation(store)
    assert got[a] == {"input": 3, "output": 30, "cache_read": 300, "cache_creation": 3000, "responses": 1}
    assert got[b] == {"input": 1, "output": 2, "cache_read": 0, "cache_creation": 0, "responses": 1}
    assert totals(store)["responses"] == 2
    rebuild_reproduces_live(store)


def test_synthetic_messages_are_not_counted(store: Store, tmp_path: Path) -> None:
    s = uid("synthetic")
    write(
        session_file(tmp_path, s),
        [
            user(s, "u1", "hello"),
            assistant(s, "a1", "msg_S", None, tokens(0, 0, 0, 0), model="<synthetic>"),
            assistant(s, "a2", "msg_S2", None, tokens(50, 50, 50, 50), model="<synthetic>"),
            assistant(s, "a3", "msg_T", "req_T", tokens(1, 1, 1, 1)),
        ],
    )
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s] == {
        "input": 1,
        "output": 1,
        "cache_read": 1,
        "cache_creation": 1,
        "responses": 1,
    }
    assert [r["key"] for r in table(store, "model")] == ["claude-opus-4-6"]


def test_gateway_lines_without_request_id(store: Store, tmp_path: Path) -> None:
    s = uid("gateway")
    write(
        session_file(tmp_path, s),
        [
            user(s, "u1", "hello"),
            assistant(s, "a1", "msg_G1", None, tokens(4, 5, 0, 0)),
            assistant(s, "a2", "msg_G1", None, tokens(4, 9, 0, 0)),
            assistant(s, "a3", "msg_G1", "", tokens(4, 2, 0, 0)),  # an empty requestId is a missing one
            assistant(s, "a4", "msg_G2", None, tokens(6, 1, 0, 0)),
            assistant(s, "a5", None, None, tokens(100, 100, 0, 0)),  # no ids at all: its own response
        ],
    )
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s] == {
        "input": 110,
        "output": 110,
        "cache_read": 0,
        "cache_creation": 0,
        "responses": 3,
    }
    rebuild_reproduces_live(store)


def test_subagent_usage_counts_toward_its_session(store: Store, tmp_path: Path) -> None:
    s = uid("parent")
    write(session_file(tmp_path, s), [user(s, "u1", "spawn"), assistant(s, "a1", "msg_P", "req_P", tokens(2, 20))])
    write(
        subagent_file(tmp_path, s, "a1b2c3d"),
        [
            user(s, "su", "Explore the repo", isSidechain=True, agentId="a1b2c3d"),
            assistant(s, "sa", "msg_C", "req_C", tokens(8, 80), isSidechain=True, agentId="a1b2c3d"),
            # a prompt-suggestion style copy of the parent's response: same ids, counted once
            assistant(s, "sa2", "msg_P", "req_P", tokens(2, 20), isSidechain=True, agentId="a1b2c3d"),
        ],
    )
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s] == {
        "input": 10,
        "output": 100,
        "cache_read": 0,
        "cache_creation": 0,
        "responses": 2,
    }
    assert [r["key"] for r in table(store, "conversation")] == [s]
    rebuild_reproduces_live(store)


def test_copies_inside_progress_records_are_ignored(store: Store, tmp_path: Path) -> None:
    s = uid("progress")
    inner = assistant(s, "inner", "msg_Q", "req_Q", tokens(9, 99, 999, 9999), isSidechain=True, agentId="abc1234")
    progress: dict[str, Any] = {
        "parentUuid": uid("u1"),
        "isSidechain": False,
        "sessionId": s,
        "type": "progress",
        "data": {"type": "agent_progress", "message": inner},
        "uuid": uid("p1"),
        "timestamp": ts(2),
    }
    write(
        session_file(tmp_path, s),
        [user(s, "u1", "go"), progress, assistant(s, "a1", "msg_M", "req_M", tokens(1, 10))],
    )
    _ingest(store, tmp_path)
    assert usage_by_conversation(store)[s] == {
        "input": 1,
        "output": 10,
        "cache_read": 0,
        "cache_creation": 0,
        "responses": 1,
    }


def test_usage_is_summed_per_project_model_and_utc_day(store: Store, tmp_path: Path) -> None:
    a, b = uid("p1"), uid("p2")
    write(
        session_file(tmp_path, a),
        [
            user(a, "ua", "x"),
            assistant(a, "a1", "m1", "r1", tokens(1, 1), at="2026-03-01T23:59:59.999Z"),
            assistant(a, "a2", "m2", "r2", tokens(2, 2), model="claude-haiku-4-5", at="2026-03-02T00:00:00.000Z"),
        ],
    )
    write(
        session_file(tmp_path, b, project="-other"),
        [user(b, "ub", "y"), assistant(b, "b1", "m3", "r3", tokens(4, 4), at="2026-03-02T10:00:00.000Z")],
    )
    _ingest(store, tmp_path)

    def by(dim: str) -> dict[str | None, tuple[int, int]]:
        return {r["key"]: (r["input"], r["responses"]) for r in table(store, dim)}

    assert by("project") == {PROJECT: (3, 2), "-other": (4, 1)}
    assert by("model") == {"claude-opus-4-6": (5, 2), "claude-haiku-4-5": (2, 1)}
    assert by("day") == {"2026-03-01": (1, 1), "2026-03-02": (6, 2)}
    assert [r["key"] for r in table(store, "day")] == ["2026-03-01", "2026-03-02"]
