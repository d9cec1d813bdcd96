"""The reading commands on a Redis Cluster give the answers a single Redis gives for the same corpus.

One corpus is ingested with the real ``agg ingest`` twice, under fresh namespaces: into the session's
cluster (16 buckets) and into the session's single Redis (one store). Each reading command then
runs on both and its ``--json`` (or its bytes) is compared, with only what legitimately differs
taken out: seqs (per bucket on a cluster), the Redis URL and version, the namespace, the data dir's
paths and the moment of the ingest. The commands that loop over every conversation run in this
process (click's runner) rather than one subprocess each, for time.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aggregator.buckets import bucket_of
from cli.main import cli
from devtools.agg import run_agg
from tests.cluster.conftest import Pair
from tests.support import records


def _invoke(env: dict[str, str], args: list[str]) -> bytes:
    """``agg ARGS`` in this process: its stdout (bytes); it must succeed."""
    res = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert res.exit_code == 0, (args, res.output)
    return res.stdout_bytes


def _drop(obj: dict[str, Any], *paths: str) -> dict[str, Any]:
    """``obj`` without the fields at ``paths`` (``a.b`` a field of a field)."""
    out = copy.deepcopy(obj)
    for path in paths:
        *parents, last = path.split(".")
        d = out
        for p in parents:
            d = d.get(p) or {}
        d.pop(last, None)
    return out


# --- status -------------------------------------------------------------------------------------------


def test_status_sums_the_buckets_as_a_single_redis_counts_them(pair: Pair) -> None:
    on_cluster, on_single = pair.both(["status", "--json"])
    c = on_cluster["cluster"]
    assert c["buckets"] == 16 and c["masters"] == 3
    used = sorted({bucket_of(p.name) for p in pair.corpus.iterdir() if p.is_dir()})
    assert c["buckets_used"] == used and len(used) > 1
    assert len(on_cluster["seq"]) == 16 and isinstance(on_single["seq"], int)
    assert on_single["events"] > 0 and on_single["conversations"] > 0 and on_single["files"] > 0
    assert "cluster" not in on_single
    differ = (
        "redis", "namespace", "seq", "projections.seq", "cluster", "last_ingest_at", "ingest", "watcher", "writer",
    )  # fmt: skip
    assert _drop(on_cluster, *differ) == _drop(on_single, *differ)
    text = run_agg(["status"], pair.cluster).stdout
    assert f"cluster      3 masters, {len(used)} of 16 buckets used" in text
    assert "cluster " not in run_agg(["status"], pair.single).stdout


def test_status_memory_is_every_masters_together(pair: Pair) -> None:
    """``redis.used_memory_bytes`` on a cluster: what the masters the store is spread over use
    together, not one node's (within 10 %: memory moves between the readings)."""
    on_cluster, _ = pair.both(["status", "--json"])
    client = pair.buckets.client
    masters = [int(client.get_redis_connection(n).info("memory")["used_memory"]) for n in client.get_primaries()]
    assert len(masters) == 3
    assert abs(on_cluster["redis"]["used_memory_bytes"] - sum(masters)) < 0.1 * sum(masters)


def test_status_digest_is_the_same_on_every_run(pair: Pair) -> None:
    first = json.loads(run_agg(["status", "--json", "--digest"], pair.cluster).stdout)
    again = json.loads(run_agg(["status", "--json", "--digest"], pair.cluster).stdout)
    assert first["projections"]["digest"] == again["projections"]["digest"]
    assert len(first["projections"]["digest"]) == 40


# --- usage -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["conversation", "project", "model", "day", "week", "month"])
@pytest.mark.parametrize("dates", [[], ["--since", "2025-01-01"], ["--until", "2025-09-30"]], ids=str)
def test_usage_adds_the_buckets_up_to_the_single_redis_table(pair: Pair, by: str, dates: list[str]) -> None:
    on_cluster, on_single = pair.both(["usage", "--by", by, "--json", *dates])
    assert len(on_cluster["seq"]) == 16 and isinstance(on_single["seq"], int)
    assert on_single["rows"] and on_single["total"]["total"] > 0
    assert _drop(on_cluster, "seq") == _drop(on_single, "seq")


def test_usage_as_a_table_is_the_same(pair: Pair) -> None:
    args = ["usage", "--by", "project"]
    assert run_agg(args, pair.cluster).stdout == run_agg(args, pair.single).stdout


# --- list ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["--limit", "0"], [], ["--limit", "5"], ["--project", "session-share"], ["--since", "2025-10-01"]],
    ids=str,
)
def test_list_is_the_same_list(pair: Pair, args: list[str]) -> None:
    on_cluster, on_single = pair.both(["list", "--json", *args])
    assert on_single["total"] > 0
    assert on_cluster == on_single


def test_list_as_text_is_the_same(pair: Pair) -> None:
    args = ["list", "--limit", "0"]
    assert run_agg(args, pair.cluster).stdout == run_agg(args, pair.single).stdout


# --- replay, show, export ----------------------------------------------------------------------------------


def test_every_conversation_replays_byte_for_byte_as_on_a_single_redis(pair: Pair) -> None:
    convs = pair.conversations()
    assert len(convs) >= 20
    for conv in convs:
        for fmt in ("jsonl", "text"):
            got = _invoke(pair.cluster, ["replay", conv, "--format", fmt])
            assert got and got == _invoke(pair.single, ["replay", conv, "--format", fmt]), (conv, fmt)


def test_a_replay_is_the_transcript_s_lines(pair: Pair) -> None:
    """Not only equal to the single Redis': each main transcript's lines, in order (the corpus' own
    files hold nothing agg rejects but the lines it counts as such)."""
    f = next(iter(sorted(pair.corpus.glob("*/*.jsonl"))))
    got = run_agg(["replay", f.stem], pair.cluster).stdout.splitlines()
    lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
    assert got and set(got) <= set(lines)


def test_every_conversation_shows_and_exports_as_on_a_single_redis(pair: Pair, tmp_path: Path) -> None:
    for conv in pair.conversations():
        for args in (["show", conv], *(["export", conv, "--format", f] for f in ("markdown", "html", "jsonl"))):
            got = _invoke(pair.cluster, args)
            assert got and got == _invoke(pair.single, args), args
    conv = pair.conversations()[0]
    out = tmp_path / "c.html"
    run_agg(["export", conv, "--format", "html", "-o", str(out)], pair.cluster)
    assert out.read_bytes() == _invoke(pair.single, ["export", conv, "--format", "html"])


def test_a_conversation_is_found_by_prefix_or_file_in_its_bucket(pair: Pair) -> None:
    convs = pair.conversations()
    conv = convs[-1]
    prefix = next(conv[:n] for n in range(4, len(conv)) if sum(c.startswith(conv[:n]) for c in convs) == 1)
    whole = run_agg(["replay", conv], pair.cluster).stdout
    assert run_agg(["replay", prefix], pair.cluster).stdout == whole
    path = next(pair.corpus.glob(f"*/{conv}.jsonl"), None) or Path(f"{conv}.jsonl")
    assert run_agg(["export", str(path), "--format", "jsonl"], pair.cluster).stdout == whole
    missing = run_agg(["show", "zzzz-not-a-conversation"], pair.cluster, check=False)
    assert missing.returncode == 4 and missing.stderr.count("\n") == 1 and "no conversation" in missing.stderr
    shared = next(n for n in range(1, 4) if len({c[:n] for c in convs}) < len(convs))
    both = next(c[:shared] for c in convs if sum(d.startswith(c[:shared]) for d in convs) > 1)
    amb = run_agg(["show", both], pair.cluster, check=False)
    assert amb.returncode == 4 and "give more of the key" in amb.stderr
    named = [c for c in convs if c.startswith(both)]
    assert sorted(named) == named and f"({', '.join(named)})" in amb.stderr  # key order: a bucket's seq means nothing
    assert run_agg(["show", both], pair.single, check=False).stderr.startswith(f"agg: {both!r} matches {len(named)} ")


# --- rebuild ---------------------------------------------------------------------------------------------


def test_rebuild_recomputes_every_bucket_with_a_digest_stable_over_runs(pair: Pair) -> None:
    first = json.loads(run_agg(["replay", "--rebuild", "--json"], pair.cluster).stdout)
    again = json.loads(run_agg(["replay", "--rebuild", "--json"], pair.cluster).stdout)
    single = json.loads(run_agg(["replay", "--rebuild", "--json"], pair.single).stdout)
    assert first["buckets"] == 16 and len(first["seq"]) == 16
    assert first["digest"] == first["digest_before"] == again["digest"] == again["digest_before"]
    assert first["entries"] == single["entries"] and first["conversations"] == single["conversations"]
    assert first["rebuilt"] == single["rebuilt"]
    assert first["search_index"]["docs"] == single["search_index"]["docs"] > 0
    status = json.loads(run_agg(["status", "--json", "--digest"], pair.cluster).stdout)
    assert status["projections"]["digest"] == first["digest"]
    text = run_agg(["replay", "--rebuild"], pair.cluster).stdout
    assert f"digest {first['digest']} (unchanged)" in text


# --- rejects ---------------------------------------------------------------------------------------------


def test_rejects_are_every_bucket_s_newest_first(pair: Pair) -> None:
    on_cluster, on_single = pair.both(["rejects", "--json"])
    assert on_cluster["rejected"] == on_single["rejected"] and on_cluster["kept"] == on_single["kept"]

    def key(r: dict[str, Any]) -> str:
        return json.dumps(_drop(r, "at"), sort_keys=True)  # when each ingest ran

    assert sorted(map(key, on_cluster["rejects"])) == sorted(map(key, on_single["rejects"]))
    ats = [r["at"] for r in on_cluster["rejects"]]
    assert ats == sorted(ats, reverse=True)
    assert on_single["rejected"] > 1
    if on_single["rejected"] > 1:
        two = json.loads(run_agg(["rejects", "--json", "--limit", "1"], pair.cluster).stdout)
        assert len(two["rejects"]) == 1 and two["rejects"][0]["at"] == ats[0]


# --- search ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["test"],
        ["function", "--limit", "0"],
        ["session", "--role", "user", "--limit", "0"],
        ['"error handling"', "--limit", "0"],
        ["redis*", "--project", "session-share", "--limit", "0"],
        ["file", "--since", "2025-10-01", "--limit", "0"],
    ],
    ids=str,
)
def test_search_finds_what_a_single_redis_finds(pair: Pair, args: list[str]) -> None:
    on_cluster, on_single = pair.both(["search", "--json", *args])
    assert on_cluster["total"] == on_single["total"]

    def hits(res: dict[str, Any]) -> list[dict[str, Any]]:
        return [_drop(h, "seq") for h in res["hits"]]

    assert hits(on_cluster) == hits(on_single)


def test_search_in_one_conversation(pair: Pair) -> None:
    conv = pair.conversations()[0]
    on_cluster, on_single = pair.both(["search", "--json", "the", "--conversation", conv[:12], "--limit", "0"])
    assert on_cluster["total"] == on_single["total"] > 0
    assert {h["conv"] for h in on_cluster["hits"]} == {conv}


def test_search_follows_each_bucket_s_log_past_what_it_indexed(pair: Pair) -> None:
    """Lines added after a search are found by the next one, in whichever bucket they went (the
    index keeps a position per bucket). Last in this module: it adds to the corpus."""
    pair.both(["search", "--json", "anything"])  # the index caught up with every bucket
    projects = sorted(p.name for p in pair.corpus.iterdir() if p.is_dir())
    words = []
    for n, project in enumerate(projects[:3]):
        session = records.uid(f"new-{n}")
        word = f"zebracorn{n}"
        words.append(word)
        rec = records.user(session, f"u{n}", word, at=records.ts(n))
        records.write(records.session_file(pair.corpus, session, project), [rec])
    for env in (pair.cluster, pair.single):
        run_agg(["ingest", str(pair.corpus), "--json"], env)
    for word in words:
        on_cluster, on_single = pair.both(["search", "--json", word])
        assert on_cluster["total"] == on_single["total"] == 1
        assert _drop(on_cluster["hits"][0], "seq") == _drop(on_single["hits"][0], "seq")
    on_cluster, on_single = pair.both(["search", "--json", "zebracorn*", "--limit", "0"])
    assert on_cluster["total"] == 3
    assert [h["conv"] for h in on_cluster["hits"]] == [h["conv"] for h in on_single["hits"]]


# --- mcp -------------------------------------------------------------------------------------------------


def test_mcp_tools_answer_as_on_a_single_redis(pair: Pair) -> None:
    pytest.importorskip("mcp", reason="the MCP SDK is in the test extras")
    from tests.process.test_mcp import session

    on_cluster, on_single = (asyncio.run(session(env)) for env in (pair.cluster, pair.single))
    assert on_single["search"]["hits"] and on_single["pages"][0]["messages"]

    def hits(res: dict[str, Any]) -> list[dict[str, Any]]:
        return [_drop(h, "seq") for h in res["hits"]]

    for name in ("search", "role"):
        assert hits(on_cluster[name]) == hits(on_single[name]) and on_cluster[name]["total"] == on_single[name]["total"]
    assert on_cluster["list"] == on_single["list"]
    assert on_cluster["pages"] == on_single["pages"]
    assert _drop(on_cluster["usage"], "seq") == _drop(on_single["usage"], "seq")
    for name in ("missing", "no_word", "bad_by"):
        assert on_cluster[name].is_error and on_single[name].is_error
        assert on_cluster[name].content == on_single[name].content
