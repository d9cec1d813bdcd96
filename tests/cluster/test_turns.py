"""LLM turns on a Redis Cluster store: real `agg worker` processes, RQ on a standalone Redis
(``AGG_QUEUE_URL``), each turn's state and result in its conversation's bucket, and the local
fake LLM server (devtools/fakellm.py)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from aggregator.buckets import Buckets, bucket_of
from aggregator.connection import cluster_client
from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import classify
from aggregator.store import Store
from devtools.agg import agg_env, run_agg, wait_until
from devtools.cluster import Cluster
from devtools.fakellm import FakeLLM
from devtools.redisproc import RedisProcess
from devtools.turnkit import FAST, Workers, last_event_seq, record, turn_records
from tests.cluster.conftest import cluster_env
from workers.config import TurnConfig
from workers.dispatch import Scheduler
from workers.providers import OfflineProvider
from workers.status import turn_figures
from workers.turns import TurnRunner

KEY = "sk-agg-test-" + os.urandom(12).hex()


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[RedisProcess]:
    """The standalone Redis of the turn queue."""
    with RedisProcess(tmp_path / "queue", appendonly=False, password="queue-pw") as server:
        yield server


@pytest.fixture
def qclient(queue: RedisProcess) -> Iterator[redis.Redis]:
    client = queue.client()
    yield client
    client.close()


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    server = FakeLLM(key=KEY).start()
    yield server
    server.stop()


def openai_env(llm: FakeLLM) -> dict[str, str]:
    return {"AGG_LLM_PROVIDER": "openai", "AGG_LLM_BASE_URL": llm.url + "/v1", "AGG_LLM_API_KEY": KEY}


def projects_in_distinct_buckets(n: int) -> list[str]:
    """``n`` project names whose conversations land in ``n`` different buckets."""
    out: dict[int, str] = {}
    for i in itertools.count():
        out.setdefault(bucket_of(f"-home-u-proj-{i}"), f"-home-u-proj-{i}")
        if len(out) == n:
            return list(out.values())
    raise AssertionError("unreachable")


@dataclass
class Projects:
    """Transcript files of several projects, each ingested in-process into its project's bucket."""

    buckets: Buckets
    root: Path
    project_of: dict[str, str] = field(default_factory=dict)

    def store(self, conv: str) -> Store:
        return self.buckets.for_project(self.project_of[conv])

    def append(self, project: str, conv: str, *records: dict[str, Any]) -> None:
        self.project_of[conv] = project
        path = self.root / "claude" / "projects" / project / f"{conv}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        source = classify(str(path))
        assert source is not None
        ingest(self.store(conv), [source], project=False)

    def burst(self, project: str, conv: str, b: int, lines: int) -> None:
        """``lines`` messages (alternating roles) of burst ``b``, each ingested as its own batch."""
        for i in range(lines):
            role = "user" if i % 2 == 0 else "assistant"
            self.append(project, conv, record(conv, f"{conv} b{b} l{i} talks about item {i}", role))


@dataclass
class ClusterWorkers(Workers):
    """Real `agg worker` processes on the cluster store, registered on the queue's Redis."""

    base: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base, **FAST, **extra}


def worker_env(cluster: Cluster, tmp_path: Path, namespace: str, queue: RedisProcess, **extra: str) -> dict[str, str]:
    return cluster_env(cluster, tmp_path, namespace, AGG_QUEUE_URL=queue.url, **extra)


def all_keys(client: Any, pattern: str) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=1000))


# --- the corpus, as on a single Redis --------------------------------------------------------------
def turns_by_conv(stores: list[Store]) -> dict[str, list[dict[str, Any]]]:
    """Every conversation's turn results (title, summary), for stores holding each once."""
    out: dict[str, list[dict[str, Any]]] = {}
    for store in stores:
        for conv in store.conversations():
            out[conv] = [{k: t["turn"][k] for k in ("kind", "title", "summary")} for t in turn_records(store, conv)]
    return out


def test_the_corpus_gets_its_turns_in_each_bucket_as_on_a_single_redis_and_no_llm_call_offline(
    cluster: Cluster,
    tmp_path: Path,
    namespace: str,
    corpus: Path,
    buckets: Buckets,
    cclient: RedisCluster,
    queue: RedisProcess,
    qclient: redis.Redis,
    llm: FakeLLM,
    redis_server: RedisProcess,
    r: redis.Redis,
) -> None:
    """`agg worker --burst` on the cluster: every conversation's turn is committed once, in its
    bucket, right after the last event it saw — the same results as the same corpus on a single
    Redis. With no provider configured nothing reaches the LLM server, though its URL and key are
    set."""
    llm_settings = {"AGG_LLM_BASE_URL": llm.url + "/v1", "AGG_LLM_API_KEY": KEY}
    env = worker_env(cluster, tmp_path / "c", namespace, queue, **llm_settings)
    run_agg(["ingest", str(corpus)], env)
    run_agg(["worker", "--burst"], env, timeout=300)

    single_env = agg_env(redis_server, tmp_path / "s", **llm_settings)
    run_agg(["ingest", str(corpus)], single_env)
    run_agg(["worker", "--burst"], single_env, timeout=300)
    single = Store(r, Keys("agg"))

    assert llm.requests == []
    on_cluster = turns_by_conv(list(buckets))
    on_single = turns_by_conv([single])
    assert on_cluster == on_single
    committed = sum(len(t) for t in on_cluster.values())
    assert committed > 20 and all(len(t) <= 1 for t in on_cluster.values())

    for store in buckets:
        stats = {k.decode(): int(v) for k, v in cclient.hgetall(store.keys.turns_stats).items()}
        turns = sum(len(turn_records(store, c)) for c in store.conversations())
        assert stats.get("committed", 0) == turns, store.keys.ns
        for conv in store.conversations():
            state = cclient.hgetall(store.keys.turn(conv))
            if int(cclient.hget(store.keys.meta(conv), "msgs") or 0):
                # read up to the conversation's last event, in its own bucket's seqs
                assert int(state[b"done"]) == last_event_seq(store, conv), conv
            if turn_records(store, conv):
                assert turn_records(store, conv)[-1]["turn"]["upto_seq"] == last_event_seq(store, conv)
                assert state[b"committed"] == state[b"epoch"] and state[b"state"] == b"idle"
        for key in (store.keys.dirty, store.keys.turns_due, store.keys.turns_queued, store.keys.turns_running):
            assert cclient.zcard(key) == 0

    # RQ lives on the queue's Redis only; the turn state lives in the buckets only
    assert all_keys(cclient, "rq:*") == []
    assert qclient.exists(f"rq:queue:{namespace}-turns") or all_keys(qclient, "rq:job:*")
    assert all_keys(qclient, f"{namespace}:*") == []
    figures = turn_figures(
        cclient, Keys(namespace), f"{namespace}-turns", buckets=[s.keys for s in buckets], queue_client=qclient
    )["turns"]
    assert figures["committed"] == committed
    assert (figures["queued"], figures["running"], figures["parked"], figures["dirty"]) == (0, 0, 0, 0)
    assert figures["budget"] is None  # offline: nothing counted


# --- bursts with real workers ---------------------------------------------------------------------------
def test_bursts_in_many_buckets_coalesce_and_run_one_turn_at_a_time_per_conversation(
    cluster: Cluster,
    tmp_path: Path,
    namespace: str,
    buckets: Buckets,
    cclient: RedisCluster,
    queue: RedisProcess,
    qclient: redis.Redis,
    llm: FakeLLM,
) -> None:
    """Three `agg worker` processes, conversations in four buckets, three bursts each: per
    conversation no two calls overlap, each generation commits once, the last turn saw the last
    event, and bursts coalesce (calls <= conversations x (bursts + 1) < events)."""
    projects = projects_in_distinct_buckets(4)
    convs = {f"conv-{i}": projects[i % 4] for i in range(16)}
    data = Projects(buckets, tmp_path)
    bursts, lines = 3, 4
    llm.latency_s = 0.03
    env = worker_env(cluster, tmp_path, namespace, queue)
    workers = ClusterWorkers(queue, tmp_path, queue=f"{namespace}-turns", base=env)
    try:
        workers.start(3, **openai_env(llm), AGG_TURN_DEBOUNCE_S="0.5")
        for b in range(bursts):
            for conv, project in convs.items():
                data.burst(project, conv, b, lines)

        def settled() -> bool:
            for store in {id(data.store(c)): data.store(c) for c in convs}.values():
                k = store.keys
                if any(cclient.zcard(key) for key in (k.dirty, k.turns_due, k.turns_queued, k.turns_running)):
                    return False
            for conv in convs:
                turns = turn_records(data.store(conv), conv)
                if not turns or turns[-1]["turn"]["upto_seq"] < last_event_seq(data.store(conv), conv):
                    return False
            return True

        wait_until(settled, timeout=90, what="every conversation's last event to be covered")
        figures = turn_figures(
            cclient, Keys(namespace), f"{namespace}-turns", buckets=[s.keys for s in buckets], queue_client=qclient
        )
    finally:
        workers.stop_all()

    assert len({data.store(c).keys.ns for c in convs}) == 4
    assert llm.overlaps == [], f"overlapping calls for {llm.overlaps}"
    committed = 0
    for conv in convs:
        store = data.store(conv)
        spans = sorted((q.start, q.end) for q in llm.calls(conv, outcome=None))
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"{conv}: a call started before the previous one ended"
        turns = turn_records(store, conv)
        assert len({t["uuid"] for t in turns}) == len(turns)  # each committed once
        uptos = [t["turn"]["upto_seq"] for t in turns]
        assert uptos == sorted(set(uptos)), f"{conv}: turns went back or repeated: {uptos}"
        assert uptos[-1] >= last_event_seq(store, conv)
        assert turns[-1]["turn"]["summary"] == f"up to {conv} b{bursts - 1} l{lines - 1}"
        assert len(llm.calls(conv)) <= bursts + 1
        committed += len(turns)
        # the result is an event of the conversation's bucket, and of no other
        for other in buckets:
            if other is not store:
                assert cclient.zscore(other.keys.convs, conv) is None
    assert len(llm.calls()) <= len(convs) * (bursts + 1) < bursts * lines * len(convs)
    st = figures["turns"]
    assert st["committed"] == committed and st["calls"] == len(llm.calls())
    assert (st["queued"], st["running"], st["parked"], st["failed"]) == (0, 0, 0, 0)
    assert figures["workers"] == 3 and st["budget"]["calls"] == len(llm.calls())


# --- in-process: the shared cap, and what a worker needs ------------------------------------------------
def test_the_cap_of_concurrent_turns_holds_across_buckets(
    buckets: Buckets, tmp_path: Path, cclient: RedisCluster, qclient: redis.Redis, namespace: str
) -> None:
    """Two schedulers, conversations in several buckets, a cap of 3: three turns are claimed in all;
    one more once one of them ends."""
    cfg = TurnConfig(debounce_ms=0, cooldown_ms=0, lease_ms=5_000, concurrency=3)
    keys = [s.keys for s in buckets]
    claimed: list[tuple[str, int, int]] = []
    submit = claimed.append
    scheds = [
        Scheduler(cclient, Keys(namespace), cfg, None, submit=lambda *a: submit(a), buckets=keys, queue_client=qclient)
        for _ in "ab"
    ]
    data = Projects(buckets, tmp_path)
    projects = projects_in_distinct_buckets(5)
    for i in range(10):
        data.append(projects[i % 5], f"conv-{i}", record(f"conv-{i}", "hello"))
    for s in scheds * 3:
        s.tick(burst=True)
    assert len(claimed) == 3
    for conv, _, b in claimed:
        assert buckets.stores[b] is data.store(conv)
    runner = TurnRunner(cclient, Keys(namespace), cfg, provider=OfflineProvider(), buckets=keys, queue_client=qclient)
    conv, gen, b = claimed[0]
    assert runner.run(conv, gen, b) == "committed"
    assert [t["turn"]["summary"] for t in turn_records(data.store(conv), conv)] == ["Requests: hello"]
    scheds[1].tick(burst=True)
    assert len(claimed) == 4
    assert not qclient.exists(Keys(namespace).turns_dispatch)  # each tick let go of the lock


def test_a_worker_on_a_cluster_needs_a_standalone_queue_redis(
    cluster: Cluster, tmp_path: Path, namespace: str, queue: RedisProcess
) -> None:
    for extra, says in (
        ({}, "give one with --queue-url or AGG_QUEUE_URL"),
        ({"AGG_QUEUE_URL": cluster.url}, "AGG_QUEUE_URL must name a standalone Redis"),
    ):
        for args in (["worker", "--burst"], ["worker", "--count", "2"]):
            out = run_agg(args, cluster_env(cluster, tmp_path, namespace, **extra), check=False, timeout=60)
            assert out.returncode == 2, out.stderr
            (line,) = out.stderr.strip().splitlines()
            assert line.startswith("agg: ") and says in line, line
            assert "pw" not in line  # the URL is shown masked


# --- crashes and faults ---------------------------------------------------------------------------------
def test_kill9_mid_turn_redoes_the_turn_once_in_its_bucket_and_a_failing_one_is_parked(
    cluster: Cluster,
    tmp_path: Path,
    namespace: str,
    buckets: Buckets,
    cclient: RedisCluster,
    queue: RedisProcess,
    qclient: redis.Redis,
    llm: FakeLLM,
) -> None:
    """A worker killed while its turn waits for the LLM: the reconciler, reading the bucket's
    ``turns:running``, queues the turn again under a new generation and the other worker commits
    it once. Meanwhile a conversation of another bucket whose provider calls fail is parked, which
    `turn_figures` reports across buckets, and resumes."""
    projects = projects_in_distinct_buckets(3)
    data = Projects(buckets, tmp_path)
    env = worker_env(cluster, tmp_path, namespace, queue)
    workers = ClusterWorkers(queue, tmp_path, queue=f"{namespace}-turns", base=env)

    def figures() -> dict[str, Any]:
        keys = [s.keys for s in buckets]
        return turn_figures(cclient, Keys(namespace), f"{namespace}-turns", buckets=keys, queue_client=qclient)

    try:
        ws = workers.start(2, **openai_env(llm), AGG_TURN_PARK_S="3")
        llm.delay("conv-0", 30.0)  # the first call of conv-0 hangs: its worker will be killed
        llm.fail_next("500", "500", "500", "500", conv="conv-1")  # every attempt of conv-1's first turn
        data.burst(projects[0], "conv-0", 0, 2)
        wait_until(lambda: llm.calls("conv-0", outcome=None), what="the first call of conv-0")
        holder = cclient.hget(data.store("conv-0").keys.turn("conv-0"), "holder")
        assert holder is not None
        victim = int(holder.decode().rsplit(":", 1)[1])
        assert victim in [w.pid for w in ws]
        os.kill(victim, signal.SIGKILL)
        data.burst(projects[1], "conv-1", 0, 2)
        wait_until(lambda: figures()["turns"]["parked"] == 1, what="conv-1 to be parked", every=0.01)
        (parked,) = figures()["turns"]["parked_conversations"]
        assert parked["conv"] == "conv-1" and "500" in parked["error"]
        for i in range(2, 6):  # the other conversations go on meanwhile
            data.burst(projects[i % 3], f"conv-{i}", 0, 2)
        convs = [f"conv-{i}" for i in range(6)]

        def settled() -> bool:
            st = figures()["turns"]
            done = all(turn_records(data.store(c), c) for c in convs)
            return done and (st["queued"], st["running"], st["parked"], st["scheduled"], st["dirty"]) == (0,) * 5

        wait_until(settled, timeout=60, what="the killed turn to be redone and the parked one to resume")
        st = figures()["turns"]
    finally:
        workers.stop_all()
    store0 = data.store("conv-0")
    turns = turn_records(store0, "conv-0")
    assert len(turns) == 1 and turns[0]["turn"]["upto_seq"] == last_event_seq(store0, "conv-0")
    assert len(llm.calls("conv-0", outcome=None)) == 2  # the killed call, and the redo
    assert int(cclient.hget(store0.keys.turns_stats, "abandoned") or 0) == 1
    assert [q.outcome for q in llm.calls("conv-1", outcome=None)] == ["500"] * 4 + ["ok"]
    assert int(cclient.hget(data.store("conv-1").keys.turns_stats, "failed") or 0) == 1
    for i in range(1, 6):
        assert len(turn_records(data.store(f"conv-{i}"), f"conv-{i}")) == 1
    assert (st["abandoned"], st["failed"], st["committed"]) == (1, 1, 6)


@pytest.mark.slow
def test_turns_go_on_after_a_master_fails_over(
    tmp_path: Path, namespace: str, queue: RedisProcess, llm: FakeLLM
) -> None:
    """kill -9 of the master serving a bucket with conversations while two workers run: they wait
    for the replica to take over and carry on; every conversation still ends with a turn that saw
    its last event, each turn committed once."""
    with Cluster(tmp_path / "own-cluster", masters=3, replicas=1) as own:
        client = cluster_client(own.url)
        buckets = Buckets(client, Keys(namespace), "testhost", cluster=True)
        data = Projects(buckets, tmp_path)
        projects = projects_in_distinct_buckets(6)
        convs = {f"conv-{i}": projects[i % 6] for i in range(12)}
        env = worker_env(own, tmp_path, namespace, queue)
        workers = ClusterWorkers(queue, tmp_path, queue=f"{namespace}-turns", base=env)

        def settled() -> bool:
            for conv in convs:
                store = data.store(conv)
                turns = turn_records(store, conv)
                if not turns or turns[-1]["turn"]["upto_seq"] < last_event_seq(store, conv):
                    return False
            return True

        try:
            workers.start(2, **openai_env(llm))
            for conv, project in convs.items():
                data.burst(project, conv, 0, 2)
            wait_until(settled, timeout=60, what="turns before the failover")
            time.sleep(0.5)  # replicas have the turns (replication is asynchronous)
            port = int(client.get_node_from_key(data.store("conv-0").keys.seq).port)
            own.kill_master(own.ports.index(port))
            client.close()
            client = cluster_client(own.url)
            data.buckets = buckets = Buckets(client, Keys(namespace), "testhost", cluster=True)
            for conv, project in convs.items():
                data.burst(project, conv, 1, 2)
            wait_until(settled, timeout=90, what="turns after the failover")
            assert all(w.proc.poll() is None for w in workers.procs), workers.logs()[-3000:]
            for conv in convs:
                turns = turn_records(data.store(conv), conv)
                uptos = [t["turn"]["upto_seq"] for t in turns]
                assert uptos == sorted(set(uptos)) and len(turns) >= 2, (conv, uptos)
                assert turns[-1]["turn"]["summary"] == f"up to {conv} b1 l1"
        finally:
            workers.stop_all()
            client.close()
