"""`agg tail` and the Subscription API on a Redis Cluster: per bucket, stored events after a
position, then live ones, each once, in increasing seq order; a position printed on stop resumes."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from aggregator.buckets import Buckets, bucket_of
from aggregator.keys import Keys
from aggregator.live.subscribe import Subscription
from devtools.agg import REPO, agg_env, run_agg, wait_until
from devtools.cluster import Cluster
from devtools.redisproc import RedisProcess
from tests.cluster.conftest import cluster_env
from tests.support.live import Agg, Reader, append, record
from tests.support.records import line

PROJECT_A = "-Users-chip-dev-ai-music"  # bucket 10
PROJECT_B = "-home-marco-projects-spotter"  # bucket 5


def _start_tail(args: list[str], env: dict[str, str], tmp_path: Path, name: str = "tail") -> tuple[Agg, Reader]:
    tail = Agg(["tail", *args], env, tmp_path, name=name).start(stdout=subprocess.PIPE)
    assert tail.proc is not None
    reader = Reader(tail.proc.stdout)
    reader.start()
    return tail, reader


def _stop(tail: Agg, reader: Reader) -> str:
    """Stop tail (SIGTERM) and return the position it printed to resume from."""
    assert tail.stop() == 0
    reader.join(5)
    found = re.findall(r"^agg: resume with --since (\S+)$", tail.log(), re.M)
    assert found, tail.log()
    return str(found[-1])


def _heads(buckets: Buckets) -> dict[int, int]:
    return {b: s.last_seq() for b, s in enumerate(buckets) if s.last_seq()}


def _per_bucket(envs: list[dict[str, Any]]) -> dict[int, list[int]]:
    seqs: dict[int, list[int]] = defaultdict(list)
    for e in envs:
        seqs[e["bucket"]].append(e["seq"])
    return dict(seqs)


def _event(e: dict[str, Any]) -> tuple[Any, ...]:
    """What an event is, wherever it is stored (seq and bucket aside)."""
    return (e["conv"], e["conv_seq"], e["id"], e["type"], e["revision"])


def _grow(corpus: Path, project: str, n: int, start: int = 0) -> Path:
    """Append ``n`` lines to a new transcript of ``project`` (a conversation of its own)."""
    conv = f"live-{project[-6:]}"
    path = corpus / project / f"{conv}.jsonl"
    for i in range(start, start + n):
        append(path, line(record(conv, i)))
    return path


def test_tail_since_0_prints_every_event_once_then_live_ones(
    cluster: Cluster,
    tmp_path: Path,
    namespace: str,
    corpus: Path,
    buckets: Buckets,
    redis_server: RedisProcess,
    r: redis.Redis,
) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    run_agg(["ingest", "--json"], env)
    heads = _heads(buckets)
    assert len(heads) > 3  # the corpus is spread over several buckets
    total = sum(heads.values())
    tail, reader = _start_tail(["--since", "0"], env, tmp_path)
    with tail:
        wait_until(lambda: len(reader.envs) >= total, "tail to print the stored events", timeout=60)
        _grow(corpus, PROJECT_A, 3)
        _grow(corpus, PROJECT_B, 2)
        run_agg(["ingest"], env)
        wait_until(lambda: len(reader.envs) >= total + 5, "tail to print the live events")
        time.sleep(0.5)  # nothing more comes
        position = _stop(tail, reader)
    heads = _heads(buckets)
    got = _per_bucket(reader.envs)
    assert got == {b: list(range(1, h + 1)) for b, h in heads.items()}  # every event once, in order per bucket
    assert len(reader.envs) == total + 5
    assert position == ",".join(f"{b}:{h}" for b, h in sorted(heads.items()))
    live = [e for e in reader.envs if e["conv"].startswith("live-")]
    assert [(e["bucket"], e["conv_seq"]) for e in live if e["bucket"] == bucket_of(PROJECT_A)] == [
        (bucket_of(PROJECT_A), i) for i in (1, 2, 3)
    ]
    assert len(live) == 5

    # The same events as a single Redis prints for the same files, seq and bucket aside.
    single = agg_env(redis_server, tmp_path, AGG_DATA_DIR=str(tmp_path / "single"))
    run_agg(["ingest"], single)
    one, one_reader = _start_tail(["--since", "0"], single, tmp_path, name="single")
    with one:
        wait_until(lambda: len(one_reader.envs) >= total + 5, "the single Redis' tail", timeout=60)
        time.sleep(0.3)
        assert one.stop() == 0
    one_reader.join(5)
    assert "resume with" not in one.log()  # a single Redis: as before
    assert "bucket" not in one_reader.envs[0]
    assert sorted(map(_event, one_reader.envs)) == sorted(map(_event, reader.envs))


def test_resume_from_a_printed_position_gives_exactly_the_rest(
    cluster: Cluster, tmp_path: Path, namespace: str, corpus: Path, buckets: Buckets
) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    run_agg(["ingest"], env)
    total = sum(_heads(buckets).values())
    tail, reader = _start_tail(["--since", "0"], env, tmp_path)
    with tail:
        wait_until(lambda: len(reader.envs) >= total, "tail to print the stored events", timeout=60)
        position = _stop(tail, reader)
    first = _per_bucket(reader.envs)

    # Committed while no tail ran: a resumed tail prints exactly these, then live ones.
    _grow(corpus, PROJECT_A, 4)
    _grow(corpus, PROJECT_B, 1)
    run_agg(["ingest"], env)
    tail, reader = _start_tail(["--since", position], env, tmp_path, name="resumed")
    with tail:
        wait_until(lambda: len(reader.envs) >= 5, "the events committed meanwhile")
        _grow(corpus, PROJECT_A, 2, start=4)
        run_agg(["ingest"], env)
        wait_until(lambda: len(reader.envs) >= 7, "the live events")
        time.sleep(0.5)
        again = _stop(tail, reader)
    heads = _heads(buckets)
    rest = _per_bucket(reader.envs)
    assert rest == {b: list(range(first[b][-1] + 1, heads[b] + 1)) for b in rest}
    assert set(rest) == {bucket_of(PROJECT_A), bucket_of(PROJECT_B)}
    assert again == ",".join(f"{b}:{h}" for b, h in sorted(heads.items()))

    # A position naming some buckets: those from after their seq, every other one from its start.
    a, b = bucket_of(PROJECT_A), bucket_of(PROJECT_B)
    cut = {a: heads[a] // 2, b: heads[b] - 1}
    tail, reader = _start_tail(["--since", f"{a}:{cut[a]},{b}:{cut[b]}"], env, tmp_path, name="partial")
    with tail:
        want = sum(h - cut.get(k, 0) for k, h in heads.items())
        wait_until(lambda: len(reader.envs) >= want, "the events after the position", timeout=60)
        time.sleep(0.3)
        _stop(tail, reader)
    assert _per_bucket(reader.envs) == {k: list(range(cut.get(k, 0) + 1, h + 1)) for k, h in heads.items()}


def test_tail_one_conversation(cluster: Cluster, tmp_path: Path, namespace: str, buckets: Buckets) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    projects = tmp_path / "claude" / "projects"
    for i in range(3):
        append(projects / PROJECT_A / "c1.jsonl", line(record("c1", i)))
        append(projects / PROJECT_B / "c2.jsonl", line(record("c2", i)))
    run_agg(["ingest"], env)
    tail, reader = _start_tail(["--conversation", "c1", "--since", "0"], env, tmp_path)
    late, late_reader = _start_tail(["--conversation", "c3", "--since", "0"], env, tmp_path, name="late")  # not yet
    with tail, late:
        wait_until(lambda: len(reader.envs) == 3, "the stored events of c1")
        wait_until(lambda: "waiting for it" in late.log(), "tail to wait for c3")
        for i in range(3, 6):
            append(projects / PROJECT_B / "c2.jsonl", line(record("c2", i)))
            append(projects / PROJECT_A / "c1.jsonl", line(record("c1", i)))
            append(projects / PROJECT_B / "c3.jsonl", line(record("c3", i)))
            run_agg(["ingest"], env)
        wait_until(lambda: len(reader.envs) == 6, "the live events of c1")
        wait_until(lambda: len(late_reader.envs) == 3, "the events of c3, once it exists")
        time.sleep(0.3)
        position = _stop(tail, reader)
        _stop(late, late_reader)
    assert [e["conv_seq"] for e in reader.envs] == [1, 2, 3, 4, 5, 6]
    assert {(e["conv"], e["bucket"]) for e in reader.envs} == {("c1", bucket_of(PROJECT_A))}
    seqs = [e["seq"] for e in reader.envs]
    assert seqs == sorted(set(seqs))
    assert position == f"{bucket_of(PROJECT_A)}:{seqs[-1]}"
    assert [(e["conv"], e["conv_seq"], e["bucket"]) for e in late_reader.envs] == [
        ("c3", i, bucket_of(PROJECT_B)) for i in (1, 2, 3)
    ]


def test_tail_refuses_a_single_seq_on_a_cluster(cluster: Cluster, tmp_path: Path, namespace: str) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    proc = run_agg(["tail", "--since", "5"], env, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "agg: on a Redis Cluster seq is per bucket: give a position like 3:5 (bucket:seq), or 0 for all"
    ]
    bad = run_agg(["tail", "--since", "16:3"], env, check=False)
    assert bad.returncode == 2 and "bucket 16 does not exist" in bad.stderr


class _Consumer(threading.Thread):
    """Iterates a subscription on a thread of its own; stopped (and joined) when the block ends."""

    def __init__(self, sub: Subscription) -> None:
        super().__init__(daemon=True)
        self.sub = sub
        self.envs: list[dict[str, Any]] = []

    def run(self) -> None:
        for env in self.sub:
            self.envs.append(env)

    def __enter__(self) -> _Consumer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sub.close()
        self.join(5)
        assert not self.is_alive()


def _ingest_lines(buckets: Buckets, src: Path, project: str, conv: str, n: int, start: int = 0) -> None:
    from aggregator.ingest import ingest_buckets
    from aggregator.layout import iter_transcripts

    for i in range(start, start + n):
        append(src / "projects" / project / f"{conv}.jsonl", line(record(conv, i)))
    ingest_buckets(buckets, iter_transcripts([src]))


def test_subscription_api_since_a_position_and_live(
    cclient: RedisCluster, namespace: str, buckets: Buckets, tmp_path: Path
) -> None:
    src = tmp_path / "claude"
    _ingest_lines(buckets, src, PROJECT_A, "s", 5)
    _ingest_lines(buckets, src, PROJECT_B, "t", 3)
    a, b = bucket_of(PROJECT_A), bucket_of(PROJECT_B)
    sub = Subscription(cclient, Keys(namespace), since={a: 2}, poll_s=0.1)
    with _Consumer(sub) as c:
        wait_until(lambda: len(c.envs) == 6, "the stored events after the position")
        _ingest_lines(buckets, src, PROJECT_B, "t", 1, start=3)
        wait_until(lambda: len(c.envs) == 7, "the live event")
        time.sleep(0.3)
        assert sub.position() == ",".join(f"{k}:{v}" for k, v in sorted({a: 5, b: 4}.items()))
    assert _per_bucket(c.envs) == {a: [3, 4, 5], b: [1, 2, 3, 4]}
    assert {e["conv"] for e in c.envs if e["bucket"] == a} == {"s"}


def test_subscription_fills_what_a_cut_off_subscriber_missed(
    cluster: Cluster, cclient: RedisCluster, namespace: str, buckets: Buckets, tmp_path: Path
) -> None:
    """Every node cuts its pub/sub clients off now and then while two buckets are written:
    each bucket's gap is read from its log."""
    src = tmp_path / "claude"
    sub = Subscription(cclient, Keys(namespace), since=0, poll_s=0.1, check_s=30)
    nodes = [n.client() for n in cluster.nodes]
    a, b = bucket_of(PROJECT_A), bucket_of(PROJECT_B)
    with _Consumer(sub) as c:
        wait_until(lambda: sub._pubsub is not None, "the subscription")
        halt = threading.Event()

        def killer() -> None:
            while not halt.wait(0.05):
                for n in nodes:
                    n.client_kill_filter(_type="pubsub")

        k = threading.Thread(target=killer, daemon=True)
        k.start()
        for i in range(20):
            _ingest_lines(buckets, src, PROJECT_A, "s", 3, start=3 * i)
            _ingest_lines(buckets, src, PROJECT_B, "t", 2, start=2 * i)
        halt.set()
        k.join()
        heads = _heads(buckets)
        # A message published after the last cut reaches the subscriber, which sees the gap
        # (check_s is too long for the quiet-time check to find it first).
        _ingest_lines(buckets, src, PROJECT_A, "s", 1, start=60)
        _ingest_lines(buckets, src, PROJECT_B, "t", 1, start=40)
        wait_until(lambda: len(c.envs) == heads[a] + heads[b] + 2, "every event", timeout=20)
        time.sleep(0.3)
    assert sub.reconnects > 0
    assert _per_bucket(c.envs) == {a: list(range(1, heads[a] + 2)), b: list(range(1, heads[b] + 2))}


def test_a_bucket_whose_seq_went_back_gets_its_floor_raised(
    cclient: RedisCluster, namespace: str, buckets: Buckets, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "claude"
    _ingest_lines(buckets, src, PROJECT_A, "s", 4)
    _ingest_lines(buckets, src, PROJECT_B, "t", 2)
    a, b = bucket_of(PROJECT_A), bucket_of(PROJECT_B)
    sub = Subscription(cclient, Keys(namespace), since=0, poll_s=0.1, check_s=0.3)
    with _Consumer(sub) as c:
        wait_until(lambda: len(c.envs) == 6, "the stored events")
        lost = buckets.stores[a].keys
        cclient.set(lost.seq, 1)  # bucket a "lost" its last three seqs (restored from an older copy)
        cclient.hset(lost.stats, "log_last", 1)
        wait_until(lambda: int(cclient.get(lost.seq) or 0) == 4, "bucket a's floor raised")
        assert int(cclient.get(buckets.stores[b].keys.seq) or 0) == 2
        _ingest_lines(buckets, src, PROJECT_A, "s", 1, start=4)
        wait_until(lambda: len(c.envs) == 7, "the next event of bucket a")
    assert c.envs[-1]["bucket"] == a and c.envs[-1]["seq"] == 5  # no seq handed out twice
    assert f"bucket {a}'s seq (1) is behind what was delivered (4)" in caplog.text


def test_subscription_moves_to_another_node_when_its_node_dies(tmp_path: Path) -> None:
    """The node the subscription listens on is killed (a master: its replica takes over): it
    listens on another node and reads what it missed from each bucket's log."""
    from aggregator.connection import cluster_client

    with Cluster(tmp_path / "own", masters=3, replicas=1) as own:
        keys = Keys("failover")
        src = tmp_path / "claude"
        before = Buckets(cluster_client(own.url), keys, cluster=True)
        _ingest_lines(before, src, PROJECT_A, "s", 3)
        _ingest_lines(before, src, PROJECT_B, "t", 2)
        sub = Subscription(cluster_client(own.url), keys, since=0, poll_s=0.1, check_s=1.0)
        with _Consumer(sub) as c:
            wait_until(lambda: len(c.envs) == 5, "the stored events")
            node = sub._pubsub.get_pubsub_node()
            i = own.ports.index(int(node.port))
            assert i in own.master_indexes()  # the client's first node, a master
            time.sleep(0.5)  # the replicas have the writes before their master dies
            own.kill_master(i)
            after = Buckets(cluster_client(own.url), keys, cluster=True)
            _ingest_lines(after, src, PROJECT_A, "s", 2, start=3)
            _ingest_lines(after, src, PROJECT_B, "t", 2, start=2)
            wait_until(lambda: len(c.envs) == 9, "the events committed after the node died", timeout=60)
            time.sleep(0.5)
            assert int(sub._pubsub.get_pubsub_node().port) != int(node.port)
        a, b = bucket_of(PROJECT_A), bucket_of(PROJECT_B)
        assert _per_bucket(c.envs) == {a: [1, 2, 3, 4, 5], b: [1, 2, 3, 4]}
        assert sub.reconnects > 0


def test_tail_text_lines_start_with_the_events_place(cluster: Cluster, tmp_path: Path, namespace: str) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    for i in range(3):
        append(tmp_path / "claude" / "projects" / PROJECT_A / "c1.jsonl", line(record("c1", i, text=f"hello {i}")))
    run_agg(["ingest"], env)
    tail = Agg(["tail", "--since", "0", "--format", "text"], env, tmp_path).start(stdout=subprocess.PIPE)
    with tail:
        assert tail.proc is not None and tail.proc.stdout is not None
        lines = [tail.proc.stdout.readline().decode() for _ in range(3)]
        assert tail.stop() == 0
    a = bucket_of(PROJECT_A)
    assert [ln.split()[0] for ln in lines] == [f"{a}:1", f"{a}:2", f"{a}:3"]
    assert [ln.split()[2:5] for ln in lines] == [["c1", "user", "hello"]] * 3
    assert f"agg: resume with --since {a}:3" in tail.log()


def test_the_subscribe_example_on_a_cluster(cluster: Cluster, tmp_path: Path, namespace: str, buckets: Buckets) -> None:
    src = tmp_path / "claude"
    _ingest_lines(buckets, src, PROJECT_A, "s", 3)
    _ingest_lines(buckets, src, PROJECT_B, "t", 2)
    a, b = bucket_of(PROJECT_A), bucket_of(PROJECT_B)
    env = cluster_env(cluster, tmp_path, namespace)
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.examples.subscribe", "--since", f"{a}:1", "--count", "4"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(ln.split()[0] for ln in proc.stdout.splitlines()) == sorted([f"{a}:2", f"{a}:3", f"{b}:1", f"{b}:2"])


def test_a_live_only_subscription_has_no_position_until_it_has_subscribed(
    cclient: RedisCluster, namespace: str, buckets: Buckets, tmp_path: Path
) -> None:
    """Stopped before it knew where each bucket stood, `agg tail` used to say "resume with
    --since 0", which replays everything; a live-only subscription knows its place once subscribed
    (each bucket's head), and one from a position knows it from the start."""
    src = tmp_path / "claude"
    _ingest_lines(buckets, src, PROJECT_A, "s", 3)
    live = Subscription(cclient, Keys(namespace))
    assert not live.started
    stop = threading.Event()
    live.stop = stop
    it = live.raw()
    reader = threading.Thread(target=lambda: list(it), daemon=True)
    reader.start()
    wait_until(lambda: live.started, "the live subscription to know its place")
    a = bucket_of(PROJECT_A)
    assert live.position() == f"{a}:3"  # the head of every bucket: nothing stored is replayed
    stop.set()
    reader.join(timeout=10)
    assert Subscription(cclient, Keys(namespace), since="0").started
