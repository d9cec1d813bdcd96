"""Turns in-process against a real redis-server: the turn event, rolling summaries, budgets,
custom turn functions, the backfill age limit, reconciliation, limits, projections."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.parse import facts, loads
from aggregator.projections import Projector
from aggregator.store import Store
from devtools.agg import agg_env, run_agg
from devtools.redisproc import RedisProcess
from devtools.turnkit import Transcripts, last_event_seq, record, turn_records
from workers import prompt
from workers.config import TurnConfig
from workers.dispatch import Scheduler
from workers.history import TURN_TYPE, read_new
from workers.limits import Limiter
from workers.providers import Completion, OfflineProvider
from workers.turns import TurnRunner, load_turn_function

CONFIG = TurnConfig(debounce_ms=0, cooldown_ms=0, lease_ms=5_000, park_base_ms=1, queued_grace_ms=0)


class Recorder:
    """A provider that records prompts and answers like the offline one."""

    def __init__(self, name: str = "offline") -> None:
        self.name = name
        self.model = "recorder"
        self.prompts: list[str] = []

    def complete(self, system: str, user: str, max_tokens: int) -> Completion:
        self.prompts.append(user)
        return OfflineProvider().complete(system, user, max_tokens)


@dataclass
class Harness:
    """Scheduler + runner in this process: claimed turns run at once, no RQ in between."""

    store: Store
    config: TurnConfig = CONFIG
    provider: Any = None
    turn: str = ""
    claimed: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.provider = self.provider or Recorder()
        self.runner = TurnRunner(
            self.store.client,
            self.store.keys,
            self.config,
            provider=self.provider,
            turn_fn=load_turn_function(self.turn),
        )
        self.scheduler = Scheduler(
            self.store.client, self.store.keys, self.config, None, submit=lambda c, g: self.claimed.append((c, g))
        )

    def drain(self) -> list[str]:
        """Run every pending turn (burst: no debounce); the outcomes, in order."""
        outcomes = []
        for _ in range(1000):
            self.scheduler.tick(burst=True)
            if not self.claimed:
                if not self.scheduler.pending():
                    return outcomes
                time.sleep(0.01)
                continue
            while self.claimed:
                outcomes.append(self.runner.run(*self.claimed.pop(0)))
        raise AssertionError("turns did not settle")


@pytest.fixture
def transcripts(store: Store, tmp_path: Path) -> Transcripts:
    return Transcripts(store, tmp_path)


@pytest.fixture
def harness(store: Store) -> Harness:
    return Harness(store)


# --- the turn event ---------------------------------------------------------------------------------
def log_batch(r: redis.Redis, keys: Keys, seq: int) -> dict[bytes, bytes]:
    ((_, fields),) = r.xrevrange(keys.log, f"{seq}-0", "-", count=1)
    return dict(fields)


def test_turn_event_has_the_shape_of_an_ingested_one(
    harness: Harness, transcripts: Transcripts, store: Store, r: redis.Redis, tmp_path: Path, redis_server: RedisProcess
) -> None:
    transcripts.append("conv-0", record("conv-0", "please fix the build"), record("conv-0", "done", "assistant"))
    assert harness.drain() == ["committed"]
    entries = list(store.entries_after(0))
    assert [e.env()["type"] for e in entries] == ["user", "assistant", TURN_TYPE]
    ingested, turn = entries[1], entries[2]
    env_i, env_t = ingested.env(), turn.env()
    assert list(env_t) == list(env_i)  # same fields, same order
    assert {k: type(v) for k, v in env_t.items() if k not in ("ts", "agent")} == {
        k: type(v) for k, v in env_i.items() if k not in ("ts", "agent")
    }
    assert (env_t["seq"], env_t["conv"], env_t["conv_seq"], env_t["revision"]) == (3, "conv-0", 3, False)
    assert env_t["agent"] is None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", env_t["ts"])
    assert set(log_batch(r, store.keys, 3)) == set(log_batch(r, store.keys, 2))
    assert re.fullmatch(r"[0-9a-f]{32}", turn.digest)
    # facts are what the ingest parser derives from the stored line, as for any ingested line
    stored_line = r.hget(store.keys.body("conv-0"), turn.digest)
    assert isinstance(stored_line, bytes)
    assert orjson.loads(turn.facts) == facts(loads(stored_line), None)
    assert (turn.project, turn.file, turn.file_agent) == ("-proj", "", "")

    # the stored record, replayed byte for byte, is the documented record
    body = list(store.replay("conv-0"))[-1][1]
    out = run_agg(["replay", "conv-0"], agg_env(redis_server, tmp_path)).stdout.encode()
    assert out.splitlines()[-1] == body
    rec = json.loads(body)
    assert list(rec) == ["type", "uuid", "sessionId", "timestamp", "turn"]
    assert (rec["type"], rec["sessionId"], rec["uuid"]) == (TURN_TYPE, "conv-0", env_t["id"])
    assert rec["timestamp"] == env_t["ts"]
    assert list(rec["turn"]) == ["kind", "title", "summary", "upto_seq", "provider", "model"]
    assert rec["turn"]["kind"] == "summary" and rec["turn"]["upto_seq"] == 2
    assert (rec["turn"]["title"], rec["turn"]["summary"]) == ("", "Requests: please fix the build")

    # counted like any event, in every index ingest keeps
    assert store.stats()["events"] == 3 and store.last_seq() == 3
    assert r.hget(store.keys.stats, "log_last") == b"3"
    assert r.hget(store.keys.meta("conv-0"), "n") == b"3"
    assert r.zscore(store.keys.convs, "conv-0") == 3
    assert r.zrange(store.keys.timeline("conv-0"), 0, -1)[-1] == b"3"

    # and the same line ingested from a file gives the same envelope, digest and facts
    other = Store(r, Keys("other"), "testhost")
    path = tmp_path / "again" / "projects" / "-proj" / "conv-0.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(body + b"\n")
    ingest(other, iter_transcripts([path]), project=False)
    (again,) = list(other.entries_after(0))
    assert {**again.env(), "seq": 3, "conv_seq": 3} == env_t
    assert (again.digest, again.facts, again.project) == (turn.digest, turn.facts, turn.project)


def test_turn_event_is_published_on_both_channels(harness: Harness, transcripts: Transcripts, store: Store) -> None:
    transcripts.append("conv-0", record("conv-0", "hello"))
    sub = store.client.pubsub()
    sub.subscribe(store.keys.events_channel, store.keys.conv_channel("conv-0"))
    assert harness.drain() == ["committed"]
    got: dict[bytes, Any] = {}
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        m = sub.get_message(timeout=0.2)
        if m and m["type"] == "message":
            got[m["channel"]] = json.loads(m["data"])
    sub.close()
    assert set(got) == {store.keys.events_channel.encode(), store.keys.conv_channel("conv-0").encode()}
    assert all(e["type"] == TURN_TYPE and e["seq"] == 2 for e in got.values())


def test_a_turn_does_not_ask_for_another_turn(harness: Harness, transcripts: Transcripts, store: Store) -> None:
    transcripts.append("conv-0", record("conv-0", "hello"))
    assert harness.drain() == ["committed"]
    r: Any = store.client
    assert r.zcard(store.keys.dirty) == 0 and r.zcard(store.keys.turns_due) == 0
    assert harness.drain() == []
    transcripts.append("conv-0", record("conv-0", "and one more thing"))
    assert harness.drain() == ["committed"]
    assert harness.drain() == []
    assert len(turn_records(store, "conv-0")) == 2


def test_rebuild_after_turns_reproduces_live_projections(store: Store, corpus: Path) -> None:
    """Real transcripts through the default turn; turn events then fold like any other."""
    ingest(store, iter_transcripts([corpus]))
    h = Harness(store)
    outcomes = h.drain()
    projector = Projector(store)
    projector.catch_up()
    live = projector.digest()
    assert projector.rebuild()["digest"] == live
    committed = 0
    for conv in store.conversations():
        if int(store.client.hget(store.keys.meta(conv), "msgs") or 0):
            # every conversation was read to its end; those with a request got a summary of them
            assert int(store.client.hget(store.keys.turn(conv), "done")) == last_event_seq(store, conv), conv
            turns = turn_records(store, conv)
            if turns:
                assert turns[-1]["turn"]["summary"].startswith("Requests: ")
                assert turns[-1]["turn"]["upto_seq"] == last_event_seq(store, conv)
                committed += 1
    assert outcomes.count("committed") == committed > 0


# --- what a turn reads -------------------------------------------------------------------------------
def test_rolling_summary_is_previous_summary_plus_new_messages(
    harness: Harness, transcripts: Transcripts, store: Store
) -> None:
    transcripts.append("conv-0", record("conv-0", "first question"), record("conv-0", "first answer", "assistant"))
    harness.drain()
    (t1,) = turn_records(store, "conv-0")
    transcripts.append("conv-0", record("conv-0", "second question"))
    harness.drain()
    t2 = turn_records(store, "conv-0")[-1]
    title, summary, messages = prompt.parse(harness.provider.prompts[-1])  # type: ignore[misc]
    assert title == t1["turn"]["title"] == ""  # the offline provider adds no title
    assert summary == t1["turn"]["summary"] == "Requests: first question"
    assert messages == [("user", "second question")]
    assert t2["turn"]["upto_seq"] == last_event_seq(store, "conv-0") > t1["turn"]["upto_seq"]
    assert t2["turn"]["summary"] == "Requests: first question · second question"


def test_tool_output_reaches_the_prompt_as_context_and_asks_for_no_record(
    harness: Harness, transcripts: Transcripts, store: Store
) -> None:
    """What the user did not type is marked ``[context]`` for the model; a window holding no
    request changes nothing the offline provider keeps, so nothing is recorded — but it is seen."""
    tool_use = {"type": "tool_use", "id": "t1", "name": "Glob", "input": {}}
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": "Found 1 file a.css"}
    transcripts.append("conv-0", record("conv-0", "find the stylesheet"), record("conv-0", [tool_use], "assistant"))
    transcripts.append("conv-0", record("conv-0", [tool_result]))
    assert harness.drain() == ["committed"]
    roles = [role for role, _ in prompt.parse(harness.provider.prompts[-1])[2]]  # type: ignore[index]
    assert roles == ["user", "assistant", prompt.CONTEXT]
    transcripts.append("conv-0", record("conv-0", [tool_result]), record("conv-0", "Found it.", "assistant"))
    assert harness.drain() == ["skipped"]
    assert [t["turn"]["summary"] for t in turn_records(store, "conv-0")] == ["Requests: find the stylesheet"]
    assert int(store.client.hget(store.keys.turn("conv-0"), "done")) == last_event_seq(store, "conv-0")


def test_budget_keeps_the_newest_messages_and_reads_no_further(transcripts: Transcripts, store: Store) -> None:
    recs = [record("conv-0", f"message {i:03d} " + "x" * 400, "user" if i % 2 else "assistant") for i in range(300)]
    for i in range(0, 300, 10):
        transcripts.append("conv-0", *recs[i : i + 10])  # 30 log batches
    h = read_new(store, "conv-0", 0, budget_chars=3000, message_max_chars=2000)
    assert h.truncated and 3 <= len(h.messages) <= 8
    assert h.messages[-1].text.startswith("message 299") and h.upto_seq == 300
    assert [m.seq for m in h.messages] == sorted(m.seq for m in h.messages)
    assert sum(len(m.text) for m in h.messages) <= 3000
    assert h.entries < 40  # stopped reading once the budget was full

    harness = Harness(store, CONFIG.with_(budget_tokens=1000))
    harness.drain()
    assert len(harness.provider.prompts[0]) <= 1000 * 4
    assert harness.provider.prompts[0].rstrip().endswith("message 299 " + "x" * 400)


def test_revisions_are_read_in_their_newest_version(transcripts: Transcripts, store: Store, harness: Harness) -> None:
    first = record("conv-0", "draft text")
    transcripts.append("conv-0", first)
    harness.drain()
    transcripts.append("conv-0", {**first, "message": {"role": "user", "content": "final text"}})
    harness.drain()
    assert prompt.parse(harness.provider.prompts[-1])[2] == [("user", "final text")]  # type: ignore[index]


def test_subagent_messages_are_left_out_of_the_prompt(
    transcripts: Transcripts, store: Store, harness: Harness, tmp_path: Path
) -> None:
    transcripts.append("conv-0", record("conv-0", "main question"), commit=False)
    sub = transcripts.dir / "conv-0" / "subagents" / "agent-a1.jsonl"
    sub.parent.mkdir(parents=True)
    sub.write_text(json.dumps({**record("conv-0", "subagent chatter"), "agentId": "a1"}) + "\n")
    ingest(store, iter_transcripts([transcripts.dir]), project=False)
    assert harness.drain() == ["committed"]
    assert [m for _, m in prompt.parse(harness.provider.prompts[-1])[2]] == ["main question"]  # type: ignore[index]
    assert turn_records(store, "conv-0")[0]["turn"]["upto_seq"] == last_event_seq(store, "conv-0") == 2


# --- custom turn functions and failures -----------------------------------------------------------
def test_turn_function_returning_none_records_nothing_but_sees(transcripts: Transcripts, store: Store) -> None:
    h = Harness(store, turn="tests.support.turnfns:nothing")
    transcripts.append("conv-0", record("conv-0", "hello"))
    assert h.drain() == ["skipped"]
    assert turn_records(store, "conv-0") == []
    assert int(store.client.hget(store.keys.turn("conv-0"), "done")) == last_event_seq(store, "conv-0")


def test_turn_result_with_a_lone_surrogate_is_committed(transcripts: Transcripts, store: Store) -> None:
    h = Harness(store, turn="tests.support.turnfns:lone_surrogate")
    transcripts.append("conv-0", record("conv-0", "hello"))
    assert h.drain() == ["committed"]
    assert turn_records(store, "conv-0")[0]["turn"]["text"] == "half an emoji: \ud83d"


@pytest.mark.parametrize(
    ("fn", "error"),
    [("broken", "RuntimeError: the bot fell over"), ("not_json", "not JSON")],
)
def test_failing_turn_function_parks_the_conversation(
    transcripts: Transcripts, store: Store, fn: str, error: str
) -> None:
    h = Harness(store, CONFIG.with_(park_base_ms=60_000), turn=f"tests.support.turnfns:{fn}")
    transcripts.append("conv-0", record("conv-0", "hello"))
    transcripts.append("conv-1", record("conv-1", "hello"))
    assert h.drain() == ["parked", "parked"]
    r: Any = store.client
    assert r.zcard(store.keys.turns_parked) == 2
    assert error in r.hget(store.keys.turn("conv-0"), "error").decode()
    assert int(r.zscore(store.keys.turns_due, "conv-0")) == int(float(r.hget(store.keys.turn("conv-0"), "park_until")))
    # parked means parked: new events do not pull the retry forward, and burst leaves it alone
    transcripts.append("conv-0", record("conv-0", "still there?"))
    assert h.drain() == []


def test_first_backfill_makes_no_paid_calls_for_old_conversations(transcripts: Transcripts, store: Store) -> None:
    """With a network provider, conversations whose newest record is older than the age limit are
    skipped (no call, nothing recorded as seen); one that comes back to life gets its turn, over
    its older messages too."""
    assert TurnConfig.from_env({"AGG_LLM_PROVIDER": "openai"}).max_age_days == 2
    assert TurnConfig.from_env({}).max_age_days == 0
    old = "2024-03-01T10:00:00.000Z"
    for i in range(20):
        transcripts.append(f"conv-{i}", record(f"conv-{i}", f"old question {i}", ts=old))
    transcripts.append("conv-new", record("conv-new", "fresh question"))
    paid = Recorder("openai")
    h = Harness(store, CONFIG.with_(provider="openai", max_age_days=2.0), provider=paid)
    outcomes = h.drain()
    assert sorted(outcomes) == ["committed"] + ["too-old"] * 20
    assert len(paid.prompts) == 1 and "fresh question" in paid.prompts[0]
    assert int(store.client.hget(store.keys.turns_stats, "skipped_old")) == 20

    transcripts.append("conv-3", record("conv-3", "back to this one"))
    assert h.drain() == ["committed"]
    assert [m for _, m in prompt.parse(paid.prompts[-1])[2]] == ["old question 3", "back to this one"]  # type: ignore[index]


# --- reconciliation -----------------------------------------------------------------------------------
def test_reconciler_requeues_a_claim_whose_job_was_lost(transcripts: Transcripts, store: Store) -> None:
    """A scheduler that dies between claiming a turn and enqueueing it leaves it 'queued' with no
    job: the reconciler (here with no grace period) queues it again under a new generation, and
    the lost generation, should its job ever run, is stale."""
    lost: list[tuple[str, int]] = []
    sched = Scheduler(store.client, store.keys, CONFIG, None, submit=lambda c, g: lost.append((c, g)))
    transcripts.append("conv-0", record("conv-0", "hello"))
    assert sched.tick(burst=True) == 1 and lost == [("conv-0", 1)]
    again: list[tuple[str, int]] = []
    sched.submit = lambda c, g: again.append((c, g))
    time.sleep(0.01)
    assert sched.reconcile() == 1 and again == [("conv-0", 2)]
    h = Harness(store)
    assert h.runner.run("conv-0", 1) == "stale-job"
    assert h.runner.run("conv-0", 2) == "committed"
    assert int(store.client.hget(store.keys.turns_stats, "requeued")) == 1


def test_concurrency_cap_is_shared(transcripts: Transcripts, store: Store) -> None:
    claimed: list[tuple[str, int]] = []
    cfg = CONFIG.with_(concurrency=3)
    scheds = [Scheduler(store.client, store.keys, cfg, None, submit=lambda c, g: claimed.append((c, g))) for _ in "ab"]
    for i in range(10):
        transcripts.append(f"conv-{i}", record(f"conv-{i}", "hello"))
    for s in scheds * 3:
        s.tick(burst=True)
    assert len(claimed) == 3
    runner = Harness(store, cfg).runner
    runner.run(*claimed[0])
    scheds[1].tick(burst=True)
    assert len(claimed) == 4


# --- limits --------------------------------------------------------------------------------------------
def test_request_limit_is_never_exceeded(store: Store) -> None:
    """600 requests/min, burst 1: in 1.2 s of trying as fast as possible, at most 1 + 1.2 / 0.1."""
    lim = Limiter(store.client, store.keys, TurnConfig(provider="openai", rpm=600, rpm_burst=1))
    other = Limiter(store.client, store.keys, TurnConfig(provider="openai", rpm=600, rpm_burst=1))
    taken, start = 0, time.monotonic()
    while time.monotonic() - start < 1.2:
        for limiter in (lim, other):
            taken += limiter.try_take(10) == 0
    assert 2 <= taken <= 1 + 12


def test_token_limit_waits_for_the_tokens(store: Store) -> None:
    cfg = TurnConfig(provider="openai", tpm=60_000, budget_tokens=1000, max_output_tokens=200)  # 1 token per ms
    lim = Limiter(store.client, store.keys, cfg)
    assert lim.try_take(1200) == 0
    wait = lim.try_take(600)
    assert 500 <= wait <= 600
    lim.adjust(-1200)  # the call used far fewer tokens than estimated: refunded
    assert lim.try_take(600) == 0
    lim.pause(0.5)
    assert 0 < lim.try_take(1) <= 500


def test_a_used_up_daily_budget_holds_turns_without_parking_them(transcripts: Transcripts, store: Store) -> None:
    """A request that does not fit the day's budget is not sent: the turn is handed back, waits
    scheduled (not parked, not failed), nothing more is dispatched, and a burst ends."""
    paid = Recorder("openai")
    h = Harness(store, CONFIG.with_(provider="openai", daily_tokens=100), provider=paid)
    transcripts.append("conv-0", record("conv-0", "hello"))
    transcripts.append("conv-1", record("conv-1", "hello"))
    assert h.drain() == ["gave-back", "gave-back"]  # both were claimed before the first refusal
    assert paid.prompts == []
    r: Any = store.client
    k = store.keys
    assert r.zcard(k.turns_due) == 2 and r.zcard(k.turns_parked) == 0
    assert int(r.hget(k.turns_stats, "aborted")) == 2 and r.hget(k.turns_stats, "failed") is None
    transcripts.append("conv-2", record("conv-2", "hello"))
    assert h.drain() == []  # nothing claimed for the rest of the day
    assert r.zcard(k.turns_due) == 3 and int(r.hget(k.turns_stats, "dispatched")) == 2
