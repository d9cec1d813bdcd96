"""Cost per conversation of the shared corpus equals a table computed here from Anthropic's published list
prices (typed in below, not read from agg), with 1-hour cache writes at their own rate; long-context
responses at the long-context rates; a model without a price is null and named, never $0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.listing import conversation, conversations
from aggregator.projections import Projector
from aggregator.store import Store
from aggregator.usage import conversation_cost, report
from tests.support import oracle
from tests.support.records import assistant, session_file, uid, user, write
from tests.support.store import rebuild_reproduces_live

# USD per million tokens: input, output, cache read, 5-minute cache write, 1-hour cache write
# (platform.claude.com/docs/en/about-claude/pricing, as of 2026-12).
PUBLISHED = {
    "claude-opus-4-6": (5, 25, 0.5, 6.25, 10),
    "claude-opus-4-5-20251101": (5, 25, 0.5, 6.25, 10),
    "claude-sonnet-4-20250514": (3, 15, 0.3, 3.75, 6),
    "claude-sonnet-4-5-20250929": (3, 15, 0.3, 3.75, 6),
    "claude-haiku-4-5-20251001": (1, 5, 0.1, 1.25, 2),
}
SONNET_LONG = (6, 22.5, 0.6, 7.5, 12)  # Sonnet 4 / 4.5 when the prompt exceeds 200K tokens


def expected_costs(paths: list[Path]) -> dict[str, float]:
    """Cost per conversation: each (message.id, requestId) once, with each usage field's largest value,
    toward the conversation it was first seen in; the 1-hour share of cache writes at its own price."""
    responses: dict[tuple[Any, Any], dict[str, Any]] = {}
    for path in paths:
        file_session = oracle.session_of(path)
        for raw in path.read_bytes().split(b"\n"):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            msg = obj.get("message") if isinstance(obj, dict) else None
            if obj.get("type") != "assistant" or not isinstance(msg, dict) or not isinstance(msg.get("usage"), dict):
                continue
            if msg.get("model") == "<synthetic>":
                continue
            u = msg["usage"]
            split = u.get("cache_creation") or {}
            got = [
                u.get("input_tokens") or 0,
                u.get("output_tokens") or 0,
                u.get("cache_read_input_tokens") or 0,
                u.get("cache_creation_input_tokens") or 0,
                split.get("ephemeral_1h_input_tokens") or 0,
            ]
            key = (msg.get("id"), obj.get("requestId"))
            r = responses.setdefault(
                key, {"conv": obj.get("sessionId") or file_session, "model": msg["model"], "max": [0] * 5}
            )
            r["max"] = [max(a, b) for a, b in zip(r["max"], got, strict=True)]
    costs: dict[str, float] = {}
    for r in responses.values():
        inp, out, read, write_all, write_1h = r["max"]
        p_in, p_out, p_read, p_5m, p_1h = PUBLISHED[r["model"]]
        cost = (inp * p_in + out * p_out + read * p_read + (write_all - write_1h) * p_5m + write_1h * p_1h) / 1e6
        costs[r["conv"]] = costs.get(r["conv"], 0.0) + cost
    return costs


def test_cost_per_conversation_equals_the_published_prices(store: Store, corpus: Path) -> None:
    sources = list(iter_transcripts([corpus]))
    want = expected_costs([Path(s.path) for s in sources])
    assert len(want) == 27 and sum(want.values()) > 30  # every corpus session with usage, 334e78d3 too
    ingest(store, sources)
    rows = {r["key"]: r["cost_usd"] for r in report(store, "conversation")["rows"]}
    assert set(rows) == set(want)
    for conv, cost in want.items():
        assert rows[conv] == pytest.approx(cost, abs=1e-6), conv
    listed = {c["key"]: c["cost_usd"] for c in conversations(store)["conversations"]}
    assert all(listed[c] == rows[c] for c in want)
    assert all(conversation_cost(store, c) == conversation(store, c)["cost_usd"] == rows[c] for c in want)
    rep = report(store, "model")
    assert rep["total"]["cost_usd"] == pytest.approx(sum(want.values()), abs=1e-5)
    assert rep["total"]["cache_creation_1h"] > 0 and rep["prices"]["unpriced"] == []
    rebuild_reproduces_live(store)  # the split and the cells are projections like the rest


def test_long_prompts_are_priced_at_long_context_rates(store: Store, tmp_path: Path) -> None:
    s = uid("long")
    big = {"input_tokens": 150_000, "output_tokens": 1_000, "cache_read_input_tokens": 60_000}
    small = {"input_tokens": 100_000, "output_tokens": 1_000, "cache_read_input_tokens": 60_000}
    write(
        session_file(tmp_path, s),
        [
            user(s, "q", "read all of it"),
            assistant(s, "a1", "msg_long", "req_long", big, model="claude-sonnet-4-5-20250929"),
            assistant(s, "a2", "msg_short", "req_short", small, model="claude-sonnet-4-5-20250929"),
            assistant(s, "a3", "msg_opus", "req_opus", big, model="claude-opus-4-6"),
        ],
    )
    ingest(store, list(iter_transcripts([tmp_path])))
    cost = report(store, "conversation")["rows"][0]["cost_usd"]
    p_in, p_out, p_read = SONNET_LONG[:3]
    long_cost = (150_000 * p_in + 1_000 * p_out + 60_000 * p_read) / 1e6
    s_in, s_out, s_read = PUBLISHED["claude-sonnet-4-5-20250929"][:3]
    short_cost = (100_000 * s_in + 1_000 * s_out + 60_000 * s_read) / 1e6
    o_in, o_out, o_read = PUBLISHED["claude-opus-4-6"][:3]  # Opus 4.6: one price across its 1M context
    opus_cost = (150_000 * o_in + 1_000 * o_out + 60_000 * o_read) / 1e6
    assert cost == pytest.approx(long_cost + short_cost + opus_cost, abs=1e-6)


def test_a_model_without_a_price_is_null_and_named(store: Store, tmp_path: Path) -> None:
    s, t = uid("priced"), uid("unpriced")
    write(
        session_file(tmp_path, s),
        [user(s, "q1", "hi"), assistant(s, "a1", "msg_a", "req_a", {"input_tokens": 1000, "output_tokens": 10})],
    )
    write(
        session_file(tmp_path, t),
        [
            user(t, "q2", "hi"),
            assistant(t, "a2", "msg_b", "req_b", {"input_tokens": 1000, "output_tokens": 10}, model="gpt-9-turbo"),
        ],
    )
    ingest(store, list(iter_transcripts([tmp_path])))
    rep = report(store, "conversation")
    costs = {r["key"]: r["cost_usd"] for r in rep["rows"]}
    assert costs[s] == pytest.approx((1000 * 5 + 10 * 25) / 1e6) and costs[t] is None
    assert rep["total"]["cost_usd"] is None  # an unknown part makes the sum unknown, not smaller
    assert rep["prices"]["unpriced"] == ["gpt-9-turbo"]
    by_model = {r["key"]: r["cost_usd"] for r in report(store, "model")["rows"]}
    assert by_model["gpt-9-turbo"] is None and by_model["claude-opus-4-6"] is not None
    listed = conversations(store)
    assert listed["unpriced"] == ["gpt-9-turbo"]
    assert {c["key"]: c["cost_usd"] for c in listed["conversations"]}[t] is None
    assert conversation(store, t)["cost_usd"] is None and conversation(store, s)["cost_usd"] == costs[s]


def test_one_conversations_cost_reads_only_its_own_cells(store: Store, tmp_path: Path) -> None:
    """Keys holding a scan pattern's wildcards (``*``, ``?``, ``[…]``, ``\\``) match only themselves."""
    names = ["x", "x*", "x?", "x[x]", "[x]", "x\\", 'x"', "xx"]
    for n, name in enumerate(names, 1):
        usage = {"input_tokens": 1000 * n, "output_tokens": 10}
        write(session_file(tmp_path, uid(name)), [user(name, "q", "hi"), assistant(name, "a", f"m{n}", f"r{n}", usage)])
    ingest(store, list(iter_transcripts([tmp_path])))
    rows = {r["key"]: r["cost_usd"] for r in report(store, "conversation")["rows"]}
    assert set(rows) == set(names)
    for name in names:
        assert conversation_cost(store, name) == rows[name], name
    assert conversation_cost(store, "x[") is None and conversation_cost(store, "no such") is None


def test_a_rebuild_drops_the_usage_hashes_of_earlier_versions(store: Store, tmp_path: Path) -> None:
    s = uid("legacy")
    write(session_file(tmp_path, s), [user(s, "q", "hi"), assistant(s, "a", "msg_l", "req_l", {"input_tokens": 5})])
    ingest(store, list(iter_transcripts([tmp_path])))
    old = [store.keys.usage_tally(dim) for dim in ("project", "model", "day")]
    for key in old:
        store.r.hset(key, '["x","input"]', 5)  # as agg kept them before the tallies
    Projector(store).rebuild()
    assert not any(store.r.exists(key) for key in old)
    assert report(store, "day")["total"]["input"] == 5
