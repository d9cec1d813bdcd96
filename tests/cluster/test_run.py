"""`agg run` on a Redis Cluster: the watcher puts each project's files in its bucket, the writer's
`current.json` joins the buckets, and both carry on through a master's failover."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson

from aggregator.buckets import Buckets, bucket_of
from devtools.agg import run_agg, wait_until
from devtools.cluster import Cluster
from devtools.redisproc import RedisProcess
from tests.cluster.conftest import cluster_env
from tests.support.live import Agg, append, record
from tests.support.records import line


def _current(path: Path) -> dict:  # type: ignore[type-arg]
    try:
        return dict(orjson.loads(path.read_bytes()))
    except (OSError, ValueError):
        return {}


def _events(path: Path, conv: str) -> int | None:
    """``conv``'s event count in the ``current.json`` at ``path`` (None if not there)."""
    return next((c["events"] for c in _current(path).get("conversations", []) if c["key"] == conv), None)


def _single_current(tmp_path: Path, corpus: Path) -> dict:  # type: ignore[type-arg]
    """`current.json` of the same files on a single Redis, through `agg ingest` and the writer."""
    with RedisProcess(tmp_path / "single") as server:
        from devtools.agg import agg_env

        env = agg_env(server, tmp_path / "s")
        run_agg(["ingest", str(corpus)], env)
        out = tmp_path / "single.json"
        with Agg(["writer", "--output", str(out), "--interval", "0.2"], env, tmp_path):
            wait_until(lambda: _current(out).get("conversations"), "the single store's current.json")
        return _current(out)


def test_run_fills_the_buckets_and_current_json_joins_them(
    cluster: Cluster, tmp_path: Path, namespace: str, corpus: Path, buckets: Buckets
) -> None:
    claude = corpus.parent  # the copy is <tmp>/claude/projects: the claude dir cluster_env names
    out = tmp_path / "current.json"
    single = _single_current(tmp_path, claude / "projects")
    with (
        RedisProcess(tmp_path / "queue") as queue,
        Agg(["run", "--no-web", "--output", str(out), "--interval", "0.2"],
            cluster_env(cluster, tmp_path, namespace, AGG_QUEUE_URL=queue.url), tmp_path) as agg,
    ):  # fmt: skip
        total = sum(c["events"] for c in single["conversations"])
        doc = wait_until(
            lambda: (d := _current(out)) and sum(c["events"] for c in d["conversations"]) == total and d,
            "current.json with every event", timeout=60,
        )  # fmt: skip
        assert {c["key"] for c in doc["conversations"]} == {c["key"] for c in single["conversations"]}
        ours = {c["key"]: (c["events"], c["usage"], c["title"]) for c in doc["conversations"]}
        theirs = {c["key"]: (c["events"], c["usage"], c["title"]) for c in single["conversations"]}
        assert ours == theirs
        real = [m for m in doc["messages"] if not m.get("separator")]
        assert [(m["conv"], m["id"]) for m in real] == [
            (m["conv"], m["id"]) for m in single["messages"] if not m.get("separator")
        ]
        assert doc["seq"] == sum(doc["seqs"].values()) == sum(s.last_seq() for s in buckets)
        # A new line in one project is committed into that project's bucket and shows up.
        project = "-home-u-new-project"
        path = claude / "projects" / project / "s-new.jsonl"
        append(path, line(record("s-new", 1, text="hello from a new project")))
        wait_until(lambda: any(c["key"] == "s-new" for c in _current(out).get("conversations", [])), "the new line")
        holding = [s.keys.ns for s in buckets if "s-new" in s.conversations()]
        assert holding == [buckets.stores[bucket_of(project)].keys.ns]
        wait_until(lambda: "ready: watch, writer, worker running" in agg.log(), "the ready line, with a worker")
        wait_until(lambda: queue.client().keys("rq:*"), "the worker's keys on the queue's Redis")
        assert agg.stop() == 0
    assert "Traceback" not in agg.log() and "exited with code" not in agg.log()
    # `agg writer --once` on the same store writes the same snapshot.
    once = tmp_path / "once.json"
    run_agg(["writer", "--once", "--output", str(once)], cluster_env(cluster, tmp_path, namespace))
    final = _current(out)
    assert {c["key"]: c["events"] for c in _current(once)["conversations"]} == {
        c["key"]: c["events"] for c in final["conversations"]
    }
    assert _current(once)["seqs"] == final["seqs"]


def test_run_carries_on_through_a_masters_failover(tmp_path: Path, corpus: Path) -> None:
    """kill -9 the master serving a project's bucket while `agg run` watches, its replica cut off
    first so that it lacks the master's last writes: the replica takes over, the watcher and the
    writer wait it out, every line is stored once — those the dead master took are read again
    from the files — and current.json shows what the store holds, not what it lost."""
    from aggregator.connection import cluster_client
    from aggregator.keys import Keys
    from devtools.agg import HOST
    from tests.support.live import file_lines, replayed

    claude = corpus.parent
    project = "-home-u-failover"
    with Cluster(tmp_path / "cluster", masters=3, replicas=1) as cl:
        env = cluster_env(cl, tmp_path, "agg")
        client = cluster_client(cl.url)
        b = Buckets(client, Keys("agg"), HOST, cluster=True)
        out = tmp_path / "current.json"
        with Agg(["run", "--no-web", "--output", str(out), "--interval", "0.2"], env, tmp_path) as agg:
            wait_until(lambda: _current(out).get("conversations"), "a first current.json", timeout=60)
            node = client.get_node_from_key(b.stores[bucket_of(project)].keys.seq)
            victim = cl.ports.index(int(node.port))
            standby = cl.replica_of(victim)
            path = claude / "projects" / project / "s-fail.jsonl"
            stopped = cl.nodes[standby].proc
            assert stopped is not None
            os.kill(stopped.pid, signal.SIGSTOP)
            try:
                # Its link cut while it is stopped, the replica misses what the master takes next.
                cl.node_client(victim).client_kill_filter(_type="replica")
                for n in range(1, 21):
                    append(path, line(record("s-fail", n)))
                wait_until(lambda: _events(out, "s-fail") == 20, "the first 20 lines, from the master about to die")
                cl.kill_master(victim, wait=False)
            finally:
                os.kill(stopped.pid, signal.SIGCONT)
            cl.wait_failover()
            assert "s-fail" not in b.stores[bucket_of(project)].conversations()  # the replica lacks them
            for n in range(21, 41):
                append(path, line(record("s-fail", n)))
            wait_until(
                lambda: _events(out, "s-fail") == 40, "all 40 lines in current.json after the failover", timeout=90
            )
            assert agg.stop() == 0
        assert "Traceback" not in agg.log() and "is back" in agg.log()
        assert "need a standalone Redis for their queue" in agg.log()  # no AGG_QUEUE_URL: no worker
        client.close()
        client = cluster_client(cl.url)
        b = Buckets(client, Keys("agg"), HOST, cluster=True)
        store = b.stores[bucket_of(project)]
        assert replayed(store)["s-fail"] == file_lines(path)
        for s in b:
            for conv, bodies in replayed(s).items():
                assert len(bodies) == len(set(bodies)), conv  # nothing doubled
        client.close()
