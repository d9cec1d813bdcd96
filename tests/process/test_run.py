"""`agg run`: the supervised service starts, restarts a crashed part, and stops leaving nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from aggregator.embedded import EmbeddedRedis
from aggregator.store import Store
from devtools.agg import agg_env, embedded_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.live import Agg, append, descendants, gone, line, record, state


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_on_embedded_redis_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    env = embedded_env(tmp_path)
    session = tmp_path / "claude" / "projects" / "p" / "s.jsonl"
    append(session, line(record("s", 0)))
    data = tmp_path / "data"
    emb = EmbeddedRedis(data)
    run = Agg(["run", "--interval", "0.2"], env, tmp_path, name="run")
    with run:
        wait_until(lambda: state(data, "watch").get("state") == "watching", "the watcher", timeout=60)
        wait_until(lambda: (data / "current.json").exists(), "the first snapshot")
        redis_pid = emb.pid()
        assert redis_pid is not None and psutil.pid_exists(redis_pid)
        procs = descendants(run.pid)
        names = " ".join(" ".join(p.cmdline()) for p in procs)
        assert "watch" in names and "writer" in names and "worker" in names
        status = run_agg(["status"], env).stdout
        assert "watcher      watching" in status and "another Redis" not in status  # the same embedded one
        # a line appended right before the stop is committed on the way out
        append(session, line(record("s", 1)))
        assert run.stop(sig) == 0
    assert gone(redis_pid)  # the embedded Redis it started is stopped
    for p in procs:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    assert state(data, "watch")["state"] == "stopped"
    assert "stopping the embedded Redis" in run.log()
    try:
        st = json.loads(run_agg(["status", "--json"], env).stdout)  # starts the embedded Redis again
        assert st["events"] - st["turns"]["committed"] == 2  # both lines (and any LLM turn's event)
        assert st["watcher"]["state"] == "not running"
    finally:
        EmbeddedRedis(data).stop()


def test_run_restarts_a_crashed_part(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    (tmp_path / "claude" / "projects").mkdir(parents=True)
    data = tmp_path / "data"
    run = Agg(["run", "--interval", "0.2"], env, tmp_path, name="run")
    with run:
        first = wait_until(lambda: state(data, "watch").get("state") == "watching" and state(data, "watch")["pid"], "w")
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            st = state(data, "watch")
            return st.get("pid") not in (None, first) and st.get("state") == "watching"

        wait_until(restarted, "a new watcher")
        append(tmp_path / "claude" / "projects" / "p" / "s.jsonl", line(record("s", 0)))
        wait_until(lambda: store.stats()["events"] == 1, "the new watcher to store a line")
        procs = descendants(run.pid)
        assert run.stop() == 0
    assert "watch exited with code -9; restarting" in run.log()
    for p in procs:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    assert redis_server.client().ping()  # a Redis given by URL is not stopped


def test_run_refuses_while_a_watcher_serves_the_data_dir(redis_server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    (tmp_path / "claude" / "projects").mkdir(parents=True)
    with Agg(["watch"], env, tmp_path, name="watch"):
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
        proc = run_agg(["run"], env, check=False, timeout=30)
    assert proc.returncode == 5 and "already serves" in proc.stderr


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) +agg\.[\w.]+: ")


def test_run_speaks_like_a_service(tmp_path: Path) -> None:
    """`agg run`'s terminal: one ready line (what runs, the data dir, current.json, the Redis —
    masked), then one line per thing a user cares about — a rejected line and its file, a Redis
    outage and its end, a part restarted — in one format; no job-queue chatter; nothing while idle."""
    server = RedisProcess(tmp_path / "redis", password="speak-pw").start()
    env = agg_env(server, tmp_path)
    session = tmp_path / "claude" / "projects" / "p" / "s.jsonl"
    append(session, line(record("s", 0)) + b"{not json\n")
    data = tmp_path / "data"
    run = Agg(["run", "--interval", "0.2"], env, tmp_path, name="run")
    try:
        with run:
            wait_until(lambda: "ready:" in run.log(), "the ready line", timeout=60)
            wait_until(lambda: server.client().hget("agg:turns:stats", "committed"), "an LLM turn", timeout=60)
            quiet = run.log()
            time.sleep(5)  # idle: not a line
            assert run.log() == quiet
            server.kill()
            wait_until(lambda: state(data, "watch").get("state") == "waiting for Redis", "the outage noticed")
            server.start()
            wait_until(lambda: state(data, "watch").get("state") == "watching", "the watcher back", timeout=60)
            append(session, line(record("s", 1)))  # a Redis that went away later is waited out
            wait_until(lambda: state(data, "writer").get("state") == "writing", "the writer back", timeout=60)
            writer_pid = state(data, "writer")["pid"]
            os.kill(writer_pid, signal.SIGKILL)
            wait_until(lambda: "restarted writer" in run.log(), "the writer restarted")
            assert run.stop() == 0
        log = run.log()
    finally:
        server.kill()
    lines = re.split(r"\n(?!    )", log.strip())  # one per record: the ready line's details are indented
    assert all(LOG_LINE.match(ln) for ln in lines), [ln for ln in lines if not LOG_LINE.match(ln)]
    (ready,) = [ln for ln in lines if "ready:" in ln]
    details = dict(re.findall(r"\n    (.{13}) (.*)", ready))
    assert details["data dir     "] == str(data) and details["current.json "] == str(data / "current.json")
    assert details["Redis        "].endswith("password=*** (given)") and "LLM turns    " in details
    assert "speak-pw" not in log
    assert any("s.jsonl: 1 line(s) rejected" in ln for ln in lines)
    assert any("writer exited with code -9; restarting" in ln for ln in lines)
    for part in ("watch", "writer"):
        assert sum(f"agg.{part}: Redis at" in ln and "unavailable" in ln for ln in lines) == 1, part
        assert sum(f"agg.{part}: Redis at" in ln and "is back" in ln for ln in lines) == 1, part
    for chatter in ("Job OK", "cleaning registries", "Listening on", "Successfully completed", "result is kept"):
        assert chatter not in log
