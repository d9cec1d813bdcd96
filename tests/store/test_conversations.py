"""The conversation projection on a real redis-server: titles by source priority, summary-only
files, subagents and their sidecars, links between conversations, counts, times, ``active``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import active_minutes
from aggregator.errors import ConfigError
from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.parse import ts_ms
from aggregator.store import Store
from aggregator.views import conversation_views
from tests.support.records import PROJECT, assistant, session_file, subagent_file, tokens, ts, uid, user, write
from tests.support.store import rebuild_reproduces_live


def _views(store: Store) -> dict[str, dict[str, Any]]:
    return {v["key"]: v for v in conversation_views(store)}


# --- titles: one case per source, in priority order ------------------------------------------------
SOURCES = ["custom-title", "ai-title", "summary", "agg-turn", "prompt", "command", "subagent"]


def _conversation_with(root: Path, s: str, sources: list[str]) -> dict[str, str]:
    """A conversation holding the given title sources; returns source → the title it would give."""
    titles = {
        "custom-title": "Renamed by the user",
        "ai-title": "Claude Code's own title",
        "summary": "Summary record title",
        "agg-turn": "agg's title",
        "prompt": "fix the flaky login test",
        "command": "/init",
        "subagent": "Explore the auth module",
    }
    recs: list[dict[str, Any]] = [
        # none of these is a real prompt
        user(s, "caveat", "<local-command-caveat>Caveat: The messages below were generated…</local-command-caveat>"),
        user(s, "meta", "Base directory for this skill: …", isMeta=True, parent=uid("caveat")),
        user(s, "compact", "This session is being continued from a previous conversation…", isCompactSummary=True),
        user(s, "tr", [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}], parent=uid("meta")),
        user(s, "interrupt", [{"type": "text", "text": "[Request interrupted by user]"}], parent=uid("tr")),
    ]
    if "command" in sources:
        recs.append(
            user(s, "cmd", "<command-message>init is analyzing…</command-message>\n<command-name>/init</command-name>")
        )
    if "prompt" in sources:
        ide = "<ide_opened_file>The user opened a.py in the IDE.</ide_opened_file>"
        recs.append(user(s, "p1", [{"type": "text", "text": ide}, {"type": "text", "text": titles["prompt"]}]))
        recs.append(user(s, "p2", "a later prompt", parent=uid("p1")))
    recs.append(assistant(s, "a1", "msg_t", "req_t", tokens(1, 1), parent=uid("p1")))
    if "custom-title" in sources:
        recs += [
            {"type": "custom-title", "customTitle": "an older name", "sessionId": s},
            {"type": "custom-title", "customTitle": titles["custom-title"], "sessionId": s},
        ]
    if "ai-title" in sources:
        recs.append({"type": "ai-title", "aiTitle": titles["ai-title"], "sessionId": s})
    if "agg-turn" in sources:
        turn = {"kind": "summary", "title": titles["agg-turn"], "summary": "What happened.", "upto_seq": 3}
        recs.append({"type": "agg-turn", "uuid": uid(s + "turn"), "sessionId": s, "timestamp": ts(5), "turn": turn})
    write(session_file(root, s), recs)
    if "summary" in sources:
        # a 1.0.x-style summary written into another file of the project, pointing at our last record
        write(
            root / PROJECT / f"{uid(s + 'summary-only')}.jsonl",
            [{"type": "summary", "summary": titles["summary"], "leafUuid": uid("a1")}],
        )
    if "subagent" in sources:
        write(
            subagent_file(root, s, "abc1234"),
            [user(s, "sub", titles["subagent"], isSidechain=True, agentId="abc1234")],
        )
    return titles


@pytest.mark.parametrize("level", range(len(SOURCES)), ids=SOURCES)
def test_title_comes_from_the_highest_priority_source(store: Store, tmp_path: Path, level: int) -> None:
    s = uid(f"titled-{level}")
    titles = _conversation_with(tmp_path, s, SOURCES[level:])
    ingest(store, iter_transcripts([tmp_path]))
    assert _views(store)[s]["title"] == titles[SOURCES[level]]
    rebuild_reproduces_live(store)


def test_no_title_source_gives_none(store: Store, tmp_path: Path) -> None:
    s = uid("untitled")
    _conversation_with(tmp_path, s, [])
    ingest(store, iter_transcripts([tmp_path]))
    assert _views(store)[s]["title"] is None


def test_agg_turn_sets_summary_newest_wins(store: Store, tmp_path: Path) -> None:
    s = uid("turns")
    turns = [
        {
            "type": "agg-turn",
            "uuid": uid(f"t{i}"),
            "sessionId": s,
            "timestamp": ts(9),
            "turn": {"kind": "summary", "title": f"title {i}", "summary": f"summary {i}", "upto_seq": i},
        }
        for i in (1, 2)
    ]
    other_kind = {
        "type": "agg-turn",
        "uuid": uid("t3"),
        "sessionId": s,
        "timestamp": ts(9),
        "turn": {"kind": "other", "title": "no"},
    }
    write(session_file(tmp_path, s), [user(s, "u", "hi", at=ts(1)), *turns, other_kind])
    ingest(store, iter_transcripts([tmp_path]))
    v = _views(store)[s]
    assert (v["title"], v["summary"]) == ("title 2", "summary 2")
    # agg's own events do not move the conversation's record times
    assert v["first_ts"] == v["last_ts"] == ts(1)


@pytest.mark.parametrize("summary_first", [True, False], ids=["summary-file-first", "summary-file-last"])
def test_summary_only_file_titles_the_conversation_it_points_into(
    store: Store, tmp_path: Path, summary_first: bool
) -> None:
    s = uid("target")
    target = write(
        session_file(tmp_path, s),
        [user(s, "u1", "a prompt"), assistant(s, "leaf", "m", "r", tokens(1, 1), parent=uid("u1"))],
    )
    only = write(
        tmp_path / PROJECT / "0000summary.jsonl",
        [{"type": "summary", "summary": "Found by leafUuid", "leafUuid": uid("leaf")}],
    )
    # a summary pointing nowhere known, and one into another project: neither attaches
    write(
        tmp_path / PROJECT / "0001summary.jsonl",
        [{"type": "summary", "summary": "dangling", "leafUuid": uid("nowhere")}],
    )
    write(
        tmp_path / "-elsewhere" / "0002summary.jsonl",
        [{"type": "summary", "summary": "other project", "leafUuid": uid("leaf")}],
    )
    first, last = (only, target) if summary_first else (target, only)
    rest = [p for p in sorted(tmp_path.rglob("*.jsonl")) if p not in (first, last)]
    for path in [first, *rest, last]:  # one file at a time, projections caught up after each
        ingest(store, iter_transcripts([path]))
    views = _views(store)
    assert list(views) == [s]  # summary-only files are not conversations
    assert views[s]["title"] == "Found by leafUuid"
    assert store.stats()["conversations"] == 1
    rebuild_reproduces_live(store)


def test_summaries_in_the_same_file_newest_wins(store: Store, tmp_path: Path) -> None:
    s = uid("in-file")
    write(
        session_file(tmp_path, s),
        [
            user(s, "u1", "first prompt"),
            {"type": "summary", "summary": "older summary", "leafUuid": uid("u1")},
            assistant(s, "a1", "m", "r", tokens(1, 1), parent=uid("u1")),
            {"type": "summary", "summary": "newer summary", "leafUuid": uid("a1")},
        ],
    )
    ingest(store, iter_transcripts([tmp_path]))
    assert _views(store)[s]["title"] == "newer summary"


def test_corpus_titles(store: Store, corpus: Path) -> None:
    """Known titles of real files: 1.0.x summaries attach to the older file they point into."""
    ingest(store, iter_transcripts([corpus]))
    views = _views(store)
    # Two summaries point into it: one in d3ad4cdc-….jsonl, then (files are committed in name order,
    # also on a Redis that has not seen the ingest script yet) the newer one in the summary-only
    # ff71dbed-….jsonl, which wins.
    assert views["ba79134d-b6e9-4867-af0c-6941038c9e4b"]["title"] == "AI Music Generation from Word Embeddings"
    assert views["d3ad4cdc-5657-435d-98fa-0035d53e383d"]["title"] == "AI Music Generation: Diverse Embedding Mapping"
    assert views["fed8ce56-bc79-401f-a83e-af084253362f"]["title"] == "push to github"
    assert views["1af7fc5e-8455-4414-9ccd-011d40f70b2a"]["title"] == "Empty Repo Setup: CLAUDE.md Foundation Created"
    assert views["fe5e1c67-53e7-4862-81ae-d0e013e3270b"]["title"] == "/orchestrator create TODO app by Next.js"
    assert "ff71dbed-a4f2-4284-a4fc-fe2fb90de929" not in views
    assert all(v["project"] and v["first_ts"] and v["last_ts"] >= v["first_ts"] for v in views.values())


# --- counts, times, subagents -----------------------------------------------------------------------
def test_counts_times_and_subagents_with_sidecars(store: Store, tmp_path: Path) -> None:
    s = uid("counted")
    write(
        session_file(tmp_path, s),
        [
            {"type": "file-history-snapshot", "messageId": "x", "snapshot": {}, "isSnapshotUpdate": False},
            user(s, "u1", "go", at="2026-03-01T10:00:00.000Z"),
            assistant(s, "a1", "m", "r", tokens(1, 1), at="2026-03-01T09:59:59.000Z"),  # earlier than the prompt
        ],
    )
    write(
        subagent_file(tmp_path, s, "aaaa111"),
        [user(s, "s1", "Explore", isSidechain=True, agentId="aaaa111", at="2026-03-01T10:05:00.000Z")],
    )
    write(subagent_file(tmp_path, s, "bbbb222"), [user(s, "s2", "Review", isSidechain=True, agentId="bbbb222")])
    meta = subagent_file(tmp_path, s, "aaaa111").with_suffix("").with_suffix(".meta.json")
    meta.write_text(json.dumps({"agentType": "Explore", "description": "Find the config", "toolUseId": "toolu_1"}))
    ingest(store, iter_transcripts([tmp_path]))

    v = _views(store)[s]
    assert (v["events"], v["messages"]) == (6, 4)  # 4 transcript records + snapshot + the sidecar event
    assert (v["first_ts"], v["last_ts"]) == ("2026-03-01T09:59:59.000Z", "2026-03-01T10:05:00.000Z")
    assert v["project"] == PROJECT
    assert v["subagents"] == [
        {"id": "aaaa111", "type": "Explore", "description": "Find the config"},
        {"id": "bbbb222", "type": None, "description": None},
    ]
    rebuild_reproduces_live(store)

    # A changed sidecar is a revision: the newest content wins; the same one again changes nothing.
    meta.write_text(json.dumps({"agentType": "general-purpose", "description": "Find it all"}))
    os.utime(meta, ns=(10**9, 10**9))
    ingest(store, iter_transcripts([tmp_path]))
    ingest(store, iter_transcripts([tmp_path]))
    assert _views(store)[s]["subagents"][0] == {
        "id": "aaaa111",
        "type": "general-purpose",
        "description": "Find it all",
    }
    assert store.stats()["revisions"] == 1
    rebuild_reproduces_live(store)


def test_a_broken_sidecar_is_a_located_rejection(store: Store, tmp_path: Path) -> None:
    s = uid("broken-sidecar")
    sub = write(subagent_file(tmp_path, s, "ccc3333"), [user(s, "s1", "x", isSidechain=True, agentId="ccc3333")])
    meta = sub.parent / "agent-ccc3333.meta.json"
    meta.write_text("{not json")
    report = ingest(store, iter_transcripts([tmp_path]))
    assert report.events_added == 1
    assert store.stats()["rejected"] == 1
    rejected = json.loads(store.r.lindex(store.keys.rejects, 0))
    assert rejected["file"].endswith("agent-ccc3333.meta.json") and rejected["reason"].startswith(
        "sidecar: invalid JSON"
    )
    assert _views(store)[s]["subagents"] == [{"id": "ccc3333", "type": None, "description": None}]


# --- links between conversations --------------------------------------------------------------------
def _linked(root: Path) -> tuple[str, str, str, str]:
    a, b, c, d = uid("origin"), uid("resumed"), uid("compacted"), uid("forked")
    write(
        session_file(root, a),
        [user(a, "a-u", "start"), assistant(a, "a-leaf", "ma", "ra", tokens(1, 1), parent=uid("a-u"))],
    )
    # b continues a: its first record's parent is a's last record (resume into a new file)
    write(
        session_file(root, b),
        [
            user(b, "b-u", "go on", parent=uid("a-leaf")),
            assistant(b, "b-a", "mb", "rb", tokens(1, 1), parent=uid("b-u")),
        ],
    )
    boundary = {
        "parentUuid": None,
        "logicalParentUuid": uid("a-leaf"),
        "isSidechain": False,
        "type": "system",
        "subtype": "compact_boundary",
        "sessionId": c,
        "uuid": uid("c-b"),
        "timestamp": ts(3),
        "compactMetadata": {"trigger": "auto", "preTokens": 170000},
    }
    write(
        session_file(root, c),
        [
            boundary,
            user(c, "c-u", "summary…", parent=uid("c-b"), isCompactSummary=True),
            user(c, "c-p", "next", parent=uid("c-u")),
        ],
    )
    fork = {"sessionId": a, "messageUuid": uid("a-u")}
    write(
        session_file(root, d),
        [user(d, "d-u", "start", forkedFrom=fork), assistant(d, "d-a", "md", "rd", tokens(1, 1), parent=uid("d-u"))],
    )
    return a, b, c, d


@pytest.mark.parametrize("order", ["origin-first", "origin-last"])
def test_links_to_resumed_compacted_and_forked_from(store: Store, tmp_path: Path, order: str) -> None:
    a, b, c, d = _linked(tmp_path)
    files = [session_file(tmp_path, x) for x in (a, b, c, d)]
    if order == "origin-last":
        files = files[1:] + files[:1]
    for path in files:  # one file at a time, projections caught up after each
        ingest(store, iter_transcripts([path]))
    views = _views(store)
    links = {k: (v["resumed_from"], v["compacted_from"], v["forked_from"]) for k, v in views.items()}
    assert links == {a: ([], [], []), b: ([a], [], []), c: ([], [a], []), d: ([], [], [a])}
    rebuild_reproduces_live(store)


def test_active_flag_follows_the_configured_window(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = uid("active")
    write(session_file(tmp_path, s), [user(s, "u", "hi", at="2026-03-01T10:00:00.000Z")])
    ingest(store, iter_transcripts([tmp_path]))
    last = ts_ms("2026-03-01T10:00:00.000Z")
    assert last is not None
    now = last + 15 * 60_000
    assert conversation_views(store, now_ms=now)[0]["active"] is False  # default: 10 minutes
    monkeypatch.setenv("AGG_ACTIVE_MINUTES", "20")
    assert active_minutes() == 20
    assert conversation_views(store, now_ms=now)[0]["active"] is True
    assert conversation_views(store, now_ms=now, active_minutes=5)[0]["active"] is False
    monkeypatch.setenv("AGG_ACTIVE_MINUTES", "soon")
    with pytest.raises(ConfigError, match="AGG_ACTIVE_MINUTES"):
        conversation_views(store, now_ms=now)
