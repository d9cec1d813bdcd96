"""Turns end to end: real `agg worker` processes, a real redis-server, a real local HTTP server
speaking the OpenAI and Anthropic protocols (devtools/fakellm.py)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import agg_env, run_agg, wait_until
from devtools.fakellm import FakeLLM
from devtools.redisproc import RedisProcess
from devtools.turnkit import FAST, Transcripts, Workers, last_event_seq, record, turn_records
from workers import prompt
from workers.config import TurnConfig
from workers.providers import estimate_tokens
from workers.status import turn_figures

KEY = "sk-agg-test-" + os.urandom(12).hex()


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    server = FakeLLM(key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
def workers(redis_server: RedisProcess, tmp_path: Path, r: redis.Redis) -> Iterator[Workers]:
    w = Workers(redis_server, tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def transcripts(store: Store, tmp_path: Path) -> Transcripts:
    return Transcripts(store, tmp_path)


def openai_env(llm: FakeLLM, **extra: str) -> dict[str, str]:
    return {"AGG_LLM_PROVIDER": "openai", "AGG_LLM_BASE_URL": llm.url + "/v1", "AGG_LLM_API_KEY": KEY, **extra}


def anthropic_env(llm: FakeLLM, **extra: str) -> dict[str, str]:
    return {"AGG_LLM_PROVIDER": "anthropic", "AGG_LLM_BASE_URL": llm.url, "AGG_LLM_API_KEY": KEY, **extra}


def settled(store: Store, convs: list[str]) -> bool:
    """Every conversation's newest turn saw its newest event, and nothing is pending."""
    r: Any = store.client
    k = store.keys
    if r.zcard(k.dirty) or r.zcard(k.turns_queued) or r.zcard(k.turns_running) or r.zcard(k.turns_due):
        return False
    for conv in convs:
        turns = turn_records(store, conv)
        if not turns or turns[-1]["turn"]["upto_seq"] < last_event_seq(store, conv):
            return False
    return True


def status(workers: Workers) -> dict[str, Any]:
    out = run_agg(["status", "--json"], workers.env())
    return dict(json.loads(out.stdout))


# --- the burst test ------------------------------------------------------------------------------
def test_fifty_conversations_in_bursts_with_four_workers(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store
) -> None:
    """Per conversation no two turns overlap, the last turn saw the last event, and bursts
    coalesce: calls <= conversations x (bursts + 1)."""
    convs = [f"conv-{i}" for i in range(50)]
    bursts, lines = 3, 4
    llm.latency_s = 0.03
    workers.start(4, **openai_env(llm, AGG_TURN_DEBOUNCE_S="0.5"))
    for b in range(bursts):
        for conv in convs:
            transcripts.burst(conv, b, lines)  # 4 batches, each marking the conversation dirty
        time.sleep(0.3)  # the next burst may land while turns of this one are queued or running
    wait_until(lambda: settled(store, convs), timeout=90, what="every conversation's last event to be covered")

    assert llm.overlaps == [], f"overlapping calls for {llm.overlaps}"
    for conv in convs:
        spans = sorted((q.start, q.end) for q in llm.calls(conv, outcome=None))
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"{conv}: a call started before the previous one ended"
        turns = turn_records(store, conv)
        assert len({t["uuid"] for t in turns}) == len(turns)  # each committed once
        uptos = [t["turn"]["upto_seq"] for t in turns]
        assert uptos == sorted(set(uptos)), f"{conv}: turns went back or repeated: {uptos}"
        assert uptos[-1] >= last_event_seq(store, conv)
        assert turns[-1]["turn"]["kind"] == "summary" and turns[-1]["turn"]["title"] == f"Title of {conv}"
        assert turns[-1]["turn"]["summary"] == f"up to {conv} b{bursts - 1} l{lines - 1}"
        assert len(llm.calls(conv)) <= bursts + 1
    calls = len(llm.calls())
    events = bursts * lines * len(convs)
    assert calls <= len(convs) * (bursts + 1) < events
    st = status(workers)["turns"]
    assert st["committed"] == sum(len(turn_records(store, c)) for c in convs)
    assert (st["queued"], st["running"], st["parked"], st["failed"]) == (0, 0, 0, 0)


# --- crashes ---------------------------------------------------------------------------------------
def holder_pid(r: redis.Redis, store: Store, conv: str) -> int:
    holder = r.hget(store.keys.turn(conv), "holder")
    assert holder, f"{conv} has no lease holder"
    return int(holder.decode().rsplit(":", 1)[1])


def test_kill9_mid_turn_redoes_the_turn_once(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store, r: redis.Redis
) -> None:
    ws = workers.start(2, **openai_env(llm))
    llm.delay("conv-0", 30.0)  # the first call of conv-0 hangs: its worker will be killed
    transcripts.burst("conv-0", 0, 2)
    wait_until(lambda: llm.calls("conv-0", outcome=None), what="the first call of conv-0")
    victim = holder_pid(r, store, "conv-0")
    assert victim in [w.pid for w in ws]
    os.kill(victim, signal.SIGKILL)
    for i in range(1, 6):  # the other conversations go on meanwhile
        transcripts.burst(f"conv-{i}", 0, 2)

    convs = [f"conv-{i}" for i in range(6)]
    wait_until(lambda: settled(store, convs), timeout=30, what="the turn to be redone")
    turns = turn_records(store, "conv-0")
    assert len(turns) == 1 and turns[0]["turn"]["upto_seq"] == last_event_seq(store, "conv-0")
    assert len(llm.calls("conv-0", outcome=None)) == 2  # the killed call, and the redo
    stats = r.hgetall(store.keys.turns_stats)
    assert int(stats[b"abandoned"]) == 1
    for conv in convs[1:]:
        assert len(turn_records(store, conv)) == 1


@pytest.mark.slow
def test_paused_worker_cannot_commit_over_newer_turn(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store, r: redis.Redis
) -> None:
    """A worker frozen past its lease (SIGSTOP) wakes up with its answer: the fenced commit
    refuses it, because another worker redid the turn under a newer epoch."""
    workers.start(2, **openai_env(llm))
    llm.delay("conv-0", 1.0)
    transcripts.burst("conv-0", 0, 2)
    wait_until(lambda: llm.calls("conv-0", outcome=None), what="the first call")
    frozen = holder_pid(r, store, "conv-0")
    os.kill(frozen, signal.SIGSTOP)
    try:
        wait_until(lambda: turn_records(store, "conv-0"), timeout=30, what="the other worker to redo the turn")
    finally:
        os.kill(frozen, signal.SIGCONT)
    wait_until(lambda: int(r.hget(store.keys.turns_stats, "stale") or 0) >= 1, what="the stale commit to be refused")
    time.sleep(0.5)
    turns = turn_records(store, "conv-0")
    assert len(turns) == 1
    assert int(r.hget(store.keys.turn("conv-0"), "epoch")) == 2


def test_warm_shutdown_finishes_the_running_turn(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store
) -> None:
    (w,) = workers.start(1, "-v", **openai_env(llm))  # -v: RQ's "warm shut down" line
    llm.delay("conv-0", 1.5)
    transcripts.burst("conv-0", 0, 2)
    wait_until(lambda: llm.calls("conv-0", outcome=None), what="the call to start")
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0
    assert len(turn_records(store, "conv-0")) == 1
    assert "warm shut down" in w.logs()


# --- provider faults ------------------------------------------------------------------------------
def test_faults_are_retried_then_parked_then_resumed(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store
) -> None:
    """429 + Retry-After, 500, a timeout and malformed JSON use up the attempts: the turn is parked
    (visible in `agg status`) without holding up another conversation, and resumes once the
    provider recovers."""
    llm.fail_next("429", "500", "timeout", "malformed", retry_after="1", conv="conv-0")
    workers.start(2, **anthropic_env(llm, AGG_TURN_PARK_S="5"))
    transcripts.burst("conv-0", 0, 2)
    figures = lambda: turn_figures(store.client, store.keys, "agg-turns")["turns"]  # noqa: E731
    wait_until(lambda: figures()["parked"] == 1, what="conv-0 to be parked", every=0.01)
    st = figures()
    (parked,) = st["parked_conversations"]
    assert parked["conv"] == "conv-0" and parked["fails"] == 1
    assert "malformed answer" in parked["error"]
    assert st["failed"] == 1
    # the same, as a user sees it (while the 5 s parking lasts)
    wait_until(lambda: "1 parked" in (t := run_agg(["status"], workers.env()).stdout) and "conv-0" in t)

    transcripts.burst("conv-1", 0, 2)  # not held up by the parked conversation
    wait_until(lambda: turn_records(store, "conv-1"), what="conv-1's turn")
    wait_until(lambda: settled(store, ["conv-0", "conv-1"]), timeout=30, what="conv-0 to resume")

    tried = llm.calls("conv-0", outcome=None)
    assert [q.outcome for q in tried] == ["429", "500", "timeout", "malformed", "ok"]
    assert tried[1].start - tried[0].end >= 1.0  # Retry-After: 1 was honoured
    assert all(q.path == "/v1/messages" and q.auth_ok for q in tried)
    st = status(workers)["turns"]
    assert (st["parked"], st["parked_conversations"], st["committed"]) == (0, [], 2)


def test_rate_limit_holds_across_two_workers(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store
) -> None:
    """120 requests/min (one every 0.5 s), burst 1, shared by two worker processes: measured at
    the server, no run of consecutive requests comes faster than the limit allows."""
    interval = 0.5
    workers.start(2, **openai_env(llm, AGG_LLM_RPM="120", AGG_LLM_RPM_BURST="1"))
    convs = [f"conv-{i}" for i in range(10)]
    for conv in convs:
        transcripts.burst(conv, 0, 1)
    wait_until(lambda: settled(store, convs), timeout=60, what="all turns")
    times = sorted(q.start for q in llm.calls(outcome=None))
    assert len(times) == len(convs)
    # GCRA with burst 1: request n+k is let through at least k intervals after request n. The
    # request then reaches the server after a variable delay (< one interval here).
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert j - i <= (times[j] - times[i]) / interval + 1, (i, j, times[j] - times[i])
    span = times[-1] - times[0]
    print(f"rate limit: {len(times)} requests in {span:.2f} s, limit allows {span / interval + 1:.1f}")


def test_daily_budget_stops_paid_turns_until_the_next_utc_day(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store, r: redis.Redis
) -> None:
    """Two workers share a day's budget of tokens: once the next request would not fit, no call is
    made (counted at the server), turns wait — scheduled, not parked — and `agg status` says until
    when; when the day changes (here: the budget's day moved back, as midnight would) they go on.
    Each day's calls, as the server counted them, stay within the cap."""
    convs = [f"conv-{i}" for i in range(8)]
    one = [("user", "conv-0 b0 l0 talks about item 0"), ("assistant", "conv-0 b0 l1 talks about item 1")]
    estimate = estimate_tokens(prompt.SYSTEM + prompt.build("", "", one)) + TurnConfig().max_output_tokens
    cap = estimate * 3 // 2  # one turn's request fits, then hardly another: the day ends early
    workers.start(2, **openai_env(llm, AGG_LLM_DAILY_TOKENS=str(cap)))
    for conv in convs[:6]:
        transcripts.burst(conv, 0, 2)
    figures = lambda: turn_figures(store.client, store.keys, "agg-turns")["turns"]  # noqa: E731
    budget = lambda: figures()["budget"]  # noqa: E731

    def used_up() -> bool:
        """Used up with no request in flight (whose estimate, not yet its count, is charged), the
        same in two readings."""
        a, b = figures(), figures()
        return bool(a["budget"] and a["budget"]["exhausted"] and a == b and not a["running"] and not a["queued"])

    wait_until(used_up, timeout=60, what="the budget to be used up")

    days = 0
    while True:
        days += 1
        calls = llm.calls()
        b = budget()
        assert b["cap"] == cap and b["calls"] == len(calls) and b["tokens"] == sum(q.tokens for q in calls) <= cap
        waiting = [c for c in convs if r.zscore(store.keys.turns_due, c) is not None]
        if days == 1:
            assert 0 < len(calls) < 6 and waiting, "the cap should hold some turns back"
            # more work while the budget is used up: scheduled, never dispatched, nothing sent
            for conv in convs[6:]:
                transcripts.burst(conv, 0, 2)
            wait_until(lambda: r.zcard(store.keys.dirty) == 0, what="the scheduler to see the new work")
            dispatched = int(r.hget(store.keys.turns_stats, "dispatched"))
            time.sleep(1.0)  # 20 dispatch intervals: any claim would show
            assert int(r.hget(store.keys.turns_stats, "dispatched")) == dispatched
            assert len(llm.calls(outcome=None)) == len(calls)
            text = run_agg(["status"], workers.env()).stdout  # as a user sees it
            assert f"used up, turns resume at {b['resumes_at']}" in text
            assert b["resumes_at"] == f"{date.fromisoformat(b['day']) + timedelta(days=1)}T00:00:00.000Z"
        st = figures()
        assert (st["parked"], st["failed"]) == (0, 0)  # waiting is not failing
        if settled(store, convs):
            break
        assert b["exhausted"] and waiting
        # midnight: the day the budget holds is no longer today
        r.hset(store.keys.llm_budget, "day", int(r.hget(store.keys.llm_budget, "day")) - 1)
        llm.requests.clear()
        wait_until(lambda: used_up() or settled(store, convs), timeout=60, what="the next day's turns")
    assert days >= 2
    assert all(turn_records(store, c)[-1]["turn"]["title"] == f"Title of {c}" for c in convs)


# --- secrets ----------------------------------------------------------------------------------------
def all_redis_bytes(r: redis.Redis) -> Iterator[tuple[bytes, bytes]]:
    """Every key and value in Redis (zlib-compressed values — RQ job data — decompressed too)."""
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        values: list[bytes] = []
        if kind == b"string":
            values = [r.get(key) or b""]
        elif kind == b"hash":
            values = [x for kv in r.hgetall(key).items() for x in kv]
        elif kind == b"list":
            values = r.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(r.smembers(key))
        elif kind == b"zset":
            values = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            values = [x for _, fields in r.xrange(key) for kv in fields.items() for x in kv]
        yield key, key
        for v in values:
            yield key, v
            try:
                inflated = zlib.decompress(v)
            except zlib.error:
                continue
            yield key, inflated


def test_api_key_never_leaks(
    llm: FakeLLM, workers: Workers, transcripts: Transcripts, store: Store, r: redis.Redis, redis_server: RedisProcess
) -> None:
    """The key reaches the provider and nowhere else: not output, logs, job payloads or Redis —
    even when the provider echoes it back in an error."""
    llm.fail_next("401", conv="conv-0")  # its body echoes "Bearer <key>"; 401 is not retried
    workers.start(1, **openai_env(llm, AGG_TURN_PARK_S="0.3"))
    transcripts.burst("conv-0", 0, 2)
    transcripts.burst("conv-1", 0, 2)
    wait_until(lambda: settled(store, ["conv-0", "conv-1"]), timeout=30, what="turns")
    outcomes = [q.outcome for q in llm.calls("conv-0", outcome=None)]
    assert outcomes == ["401", "ok"]
    assert all(q.auth_ok for q in llm.calls(outcome=None))  # the key was really sent
    assert int(r.hget(store.keys.turns_stats, "failed")) == 1

    secret = KEY.encode()
    outputs = [run_agg(["status"], workers.env()), run_agg(["status", "--json"], workers.env())]
    workers.stop_all()
    texts = [o.stdout + o.stderr for o in outputs] + [workers.logs()]
    assert "answered 401 (check AGG_LLM_API_KEY)" in workers.logs()
    for t in texts:
        assert KEY not in t
    job_keys = [k for k in r.scan_iter("rq:job:*")]
    assert job_keys, "expected RQ job hashes to inspect"
    for key, value in all_redis_bytes(r):
        assert secret not in value, f"the API key is in Redis under {key!r}"
    r.bgrewriteaof()
    time.sleep(0.5)
    for path in Path(redis_server.workdir).rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), f"the API key is in {path}"


def aof_bytes(redis_server: RedisProcess) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in Path(redis_server.workdir).rglob("*") if p.is_file()]


def test_credentials_in_the_base_url_never_leak(
    workers: Workers, transcripts: Transcripts, store: Store, r: redis.Redis, redis_server: RedisProcess
) -> None:
    """A gateway URL with a password (``http://user:secret@host/v1``) is shown masked wherever it
    is shown — the parked turn's error, the worker's log, `agg status` — and the password is in no
    output, log, Redis value or AOF file."""
    secret = "pw-" + os.urandom(12).hex()
    unreachable = f"http://gw:{secret}@127.0.0.1:9/v1"  # port 9 (discard): nothing listens
    workers.start(1, "-v", AGG_LLM_PROVIDER="openai", AGG_LLM_BASE_URL=unreachable, AGG_LLM_ATTEMPTS="2")
    transcripts.burst("conv-0", 0, 2)
    wait_until(lambda: r.zcard(store.keys.turns_parked) == 1, timeout=30, what="the turn to be parked")
    error = r.hget(store.keys.turn("conv-0"), "error").decode()
    assert "cannot reach http://gw:***@127.0.0.1:9/v1" in error

    outputs = [run_agg(["status"], workers.env()), run_agg(["status", "--json"], workers.env())]
    assert "gw:***@127.0.0.1:9" in outputs[0].stdout  # the parked error, as a user sees it
    before_rewrite = aof_bytes(redis_server)
    workers.stop_all()
    assert "retrying" in workers.logs() and "gw:***@" in workers.logs()
    for text in [o.stdout + o.stderr for o in outputs] + [workers.logs()]:
        assert secret not in text
    for key, value in all_redis_bytes(r):
        assert secret.encode() not in value, f"the password is in Redis under {key!r}"
    r.bgrewriteaof()
    wait_until(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0, what="the AOF rewrite")
    for path, data in before_rewrite + aof_bytes(redis_server):
        assert secret.encode() not in data, f"the password is in {path}"


# --- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGG_LLM_PROVIDER": "bogus"}, "AGG_LLM_PROVIDER='bogus'"),
        ({"AGG_TURN": "no_such_module_x:fn"}, "cannot import no_such_module_x"),
        ({"AGG_TURN": "not a spec"}, "expected module:function"),
        ({"AGG_TURN_LEASE_S": "soon"}, "AGG_TURN_LEASE_S='soon': expected a number"),
    ],
)
def test_bad_settings_end_with_one_line(
    redis_server: RedisProcess, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cli", "worker", "--burst"],
        env=agg_env(redis_server, tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and message in res.stderr and "Traceback" not in res.stderr


def test_custom_turn_function_runs_under_the_same_guarantees(
    workers: Workers, transcripts: Transcripts, store: Store, tmp_path: Path
) -> None:
    """AGG_TURN=module:function: a bot that answers in each conversation; its result is
    committed as the turn event, with its own kind."""
    workers.start(1, AGG_TURN="tests.support.turnfns:echo_bot", PYTHONPATH=str(Path(__file__).parent.parent))
    transcripts.append("conv-0", record("conv-0", "hello bot"), record("conv-0", "are you there?"))
    wait_until(lambda: settled(store, ["conv-0"]), what="the bot's turn")
    (turn,) = turn_records(store, "conv-0")
    assert turn["turn"]["kind"] == "reply"
    assert turn["turn"]["text"] == "you said: are you there? (2 new messages)"
    assert turn["turn"]["provider"] == "offline" and turn["turn"]["upto_seq"] == last_event_seq(store, "conv-0")


# --- supervision and Redis restarts --------------------------------------------------------------
STOPPED_EARLY = """
import sys, threading
import redis
from rq import Queue
from rq.serializers import JSONSerializer
from workers.worker import TurnWorker

r = redis.Redis.from_url(sys.argv[1])
w = TurnWorker([Queue("agg-turns", connection=r, serializer=JSONSerializer)], connection=r, worker_ttl=60)
w.agg_stop = threading.Event()
w.agg_stop.set()  # what agg worker's own SIGTERM handler does before RQ's handlers are installed
w.work(logging_level="INFO")
print("workers left registered:", r.scard("rq:workers"))
"""


def test_a_stop_requested_before_rq_took_the_signals_is_honoured(redis_server: RedisProcess, r: Any) -> None:
    """A worker told to stop while RQ was still registering it stops at once instead of blocking
    in dequeue (for 45 s, until the pool's stop timeout killed it)."""
    out = subprocess.run(
        [sys.executable, "-c", STOPPED_EARLY, redis_server.url], capture_output=True, text=True, timeout=40, check=True
    )
    assert "stopping on request" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]  # RQ logs to stdout
    assert "workers left registered: 0" in out.stdout


def test_worker_pool_respawns_and_stops_warm(workers: Workers, transcripts: Transcripts, store: Store) -> None:
    """`agg worker --count 2` supervises two real workers: a killed one is replaced, turns go on,
    and SIGTERM stops them all warm."""
    import psutil

    (sup,) = workers.start(1, "--count", "2")
    children = wait_until(lambda: len(psutil.Process(sup.pid).children()) == 2 and psutil.Process(sup.pid).children())
    r: Any = store.client
    wait_until(lambda: r.scard("rq:workers:agg-turns") >= 2, what="both children to register")
    os.kill(children[0].pid, signal.SIGKILL)
    wait_until(
        lambda: {c.pid for c in psutil.Process(sup.pid).children()} - {c.pid for c in children},
        timeout=20,
        what="a replacement worker",
    )
    transcripts.burst("conv-0", 0, 2)
    wait_until(lambda: settled(store, ["conv-0"]), what="a turn run by the pool")
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=30) == 0
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)
    assert "stopped 2 workers" in sup.logs()


@pytest.mark.slow
def test_workers_survive_a_redis_restart(llm: FakeLLM, tmp_path: Path) -> None:
    """kill -9 of redis-server (AOF, fsync always) while workers run: they wait, reconnect and
    carry on; every conversation still ends with a turn that saw its last event."""
    server = RedisProcess(tmp_path / "own-redis", appendfsync="always", password="pw2").start()
    w = Workers(server, tmp_path)
    try:
        w.start(2, **openai_env(llm))
        store = Store(server.client(), Keys("agg"), "testhost")
        t = Transcripts(store, tmp_path)
        for i in range(5):
            t.burst(f"conv-{i}", 0, 2)
        convs = [f"conv-{i}" for i in range(5)]
        wait_until(lambda: settled(store, convs), what="turns before the restart")
        server.kill()
        time.sleep(1.0)
        server.start()
        store = Store(server.client(), Keys("agg"), "testhost")
        t.store = store
        for i in range(10):
            t.burst(f"conv-{i}", 1, 2)
        convs = [f"conv-{i}" for i in range(10)]
        wait_until(lambda: settled(store, convs), timeout=60, what="turns after the restart")
        assert all(p.proc.poll() is None for p in w.procs), w.logs()[-3000:]
    finally:
        w.stop_all()
        server.stop()


def test_a_queue_redis_of_its_own_holds_rq_the_limits_and_the_budget(
    llm: FakeLLM, redis_server: RedisProcess, r: redis.Redis, transcripts: Transcripts, store: Store, tmp_path: Path
) -> None:
    """``AGG_QUEUE_URL`` on a single Redis: RQ's keys, the shared limits and the day's budget go to
    that Redis, the turn state stays next to the conversation, and `agg worker --burst` commits the
    turns as without it."""
    queue = RedisProcess(tmp_path / "queue", appendonly=False, password="pw3").start()
    q = queue.client()
    try:
        for i in range(3):
            transcripts.burst(f"conv-{i}", 0, 2)
        # 3 requests at once, then 1 each 10 s: the limit keys outlive the run by far
        limits = {"AGG_LLM_RPM": "6", "AGG_LLM_RPM_BURST": "3", "AGG_LLM_DAILY_TOKENS": "1000000"}
        env = agg_env(redis_server, tmp_path, **{**FAST, "AGG_QUEUE_URL": queue.url, **openai_env(llm, **limits)})
        run_agg(["worker", "--burst"], env, timeout=120)
        convs = [f"conv-{i}" for i in range(3)]
        assert settled(store, convs) and len(llm.calls()) == 3
        assert r.keys("rq:*") == [] and q.keys("rq:job:*")
        assert r.keys("agg:limit:*") == [] and q.keys("agg:limit:openai:*")
        assert not r.exists("agg:llm:budget") and int(q.hget("agg:llm:budget", "calls") or 0) == 3
        assert q.keys("agg:{c:*") == [] and all(r.exists(store.keys.turn(c)) for c in convs)
        figures = turn_figures(r, store.keys, "agg-turns", queue_client=q)["turns"]
        assert figures["committed"] == 3 and figures["budget"]["calls"] == 3
        assert turn_figures(r, store.keys, "agg-turns")["turns"]["budget"] is None  # not on the store's Redis
        # agg status reads them where they are (it read the store's Redis: no budget, no RQ jobs)
        status = json.loads(run_agg(["status", "--json"], env).stdout)["turns"]
        assert status["committed"] == 3 and status["budget"]["calls"] == 3
    finally:
        q.close()
        queue.stop()
