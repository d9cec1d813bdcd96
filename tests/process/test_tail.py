"""`agg tail` and the Subscription API: stored events, then live ones, no gap, no duplicate."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.live.subscribe import Subscription
from aggregator.store import Store
from devtools.agg import REPO, agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.live import Agg, Reader, append, line, record


def _start_tail(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[Agg, Reader]:
    tail = Agg(["tail", *args], env, tmp_path, name="tail").start(stdout=subprocess.PIPE)
    assert tail.proc is not None
    reader = Reader(tail.proc.stdout)
    reader.start()
    return tail, reader


def test_tail_since_0_started_mid_ingest(
    redis_server: RedisProcess, store: Store, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)  # its claude dir holds the corpus copy
    ingest_proc = subprocess.Popen([sys.executable, "-m", "cli", "ingest"], env=env, cwd=REPO)
    try:
        wait_until(lambda: store.last_seq() > 0, "the ingest to have started", every=0.005)
        tail, reader = _start_tail(["--since", "0"], env, tmp_path)
        with tail:
            assert ingest_proc.wait(timeout=120) == 0
            last = store.last_seq()
            wait_until(lambda: reader.envs and reader.envs[-1]["seq"] == last, "tail to print the last event")
            assert tail.stop() == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            ingest_proc.kill()
    reader.join(5)
    seqs = [e["seq"] for e in reader.envs]
    assert seqs == list(range(1, last + 1))  # every event once, in increasing seq order
    assert {"seq", "conv", "conv_seq", "id", "type", "ts", "agent", "revision"} <= set(reader.envs[0])


def test_tail_through_disconnects(
    redis_server: RedisProcess, r: redis.Redis, store: Store, corpus: Path, tmp_path: Path
) -> None:
    """Redis cuts off a subscriber that reads too slowly; tail reconnects and fills the gap."""
    env = agg_env(redis_server, tmp_path)  # its claude dir holds the corpus copy
    old = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    tail, reader = _start_tail([], env, tmp_path)
    try:
        with tail:
            time.sleep(1.0)  # subscribed (live only: nothing stored yet)
            r.config_set("client-output-buffer-limit", "pubsub 4kb 4kb 0")
            stop = threading.Event()

            def killer() -> None:  # and cut every subscriber off now and then, for good measure
                while not stop.wait(0.2):
                    r.client_kill_filter(_type="pubsub")

            k = threading.Thread(target=killer, daemon=True)
            k.start()
            ingest(store, iter_transcripts([tmp_path / "claude"]))
            stop.set()
            k.join()
            r.config_set("client-output-buffer-limit", old)
            last = store.last_seq()
            wait_until(lambda: reader.envs and reader.envs[-1]["seq"] == last, "tail to catch up", timeout=60)
            assert tail.stop() == 0
            assert "subscription lost" in tail.log()
    finally:
        r.config_set("client-output-buffer-limit", old)
    assert [e["seq"] for e in reader.envs] == list(range(1, last + 1))


def test_tail_one_conversation(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    src = tmp_path / "claude" / "projects" / "p"
    for i in range(3):
        append(src / "c1.jsonl", line(record("c1", i)))
        append(src / "c2.jsonl", line(record("c2", i)))
    ingest(store, iter_transcripts([tmp_path / "claude"]))
    tail, reader = _start_tail(["--conversation", "c1", "--since", "0"], env, tmp_path)
    with tail:
        wait_until(lambda: len(reader.envs) == 3, "the stored events of c1")
        for i in range(3, 6):
            append(src / "c2.jsonl", line(record("c2", i)))
            append(src / "c1.jsonl", line(record("c1", i)))
            ingest(store, iter_transcripts([tmp_path / "claude"]))
        wait_until(lambda: len(reader.envs) == 6, "the live events of c1")
        time.sleep(0.3)
        assert tail.stop() == 0
    assert [e["conv_seq"] for e in reader.envs] == [1, 2, 3, 4, 5, 6]
    assert {e["conv"] for e in reader.envs} == {"c1"}
    seqs = [e["seq"] for e in reader.envs]
    assert seqs == sorted(set(seqs))


def test_subscription_api_since_and_live(store: Store, r: redis.Redis, tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    append(src, b"".join(line(record("s", i)) for i in range(5)))
    ingest(store, iter_transcripts([src]))
    got: list[int] = []
    stop = threading.Event()
    sub = Subscription(r, store.keys, since=2, stop=stop, poll_s=0.1)

    def consume() -> None:
        for env in sub:
            got.append(env["seq"])

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    wait_until(lambda: got == [3, 4, 5], "the stored events after 2")
    append(src, line(record("s", 5)))
    ingest(store, iter_transcripts([src]))
    wait_until(lambda: got == [3, 4, 5, 6], "the live event")
    stop.set()
    t.join(5)
    assert not t.is_alive()


def test_subscribe_example_script(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    append(src, b"".join(line(record("s", i)) for i in range(4)))
    ingest(store, iter_transcripts([src]))
    env = dict(os.environ, AGG_REDIS_URL=redis_server.url)
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.examples.subscribe", "--since", "1", "--count", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert [ln.split()[0] for ln in proc.stdout.splitlines()] == ["2", "3", "4"]


def test_tail_refuses_a_position_per_bucket_on_a_single_redis(redis_server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    for since, said in (
        ("3:120", "agg: --since 3:120: a position per bucket is for a store on a Redis Cluster; give a seq"),
        ("-1", "'-1' is not a seq (0 or more), nor a position like 3:120,7:55 (Redis Cluster)"),
    ):
        proc = run_agg(["tail", "--since", since], env, check=False)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert said in proc.stderr and "Traceback" not in proc.stderr
