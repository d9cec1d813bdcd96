"""`agg watch` as a real process on a real Redis: every kind of file change, and kill -9."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import redis

from aggregator.store import Store
from devtools.agg import agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.live import (
    Agg,
    Appender,
    append,
    file_lines,
    line,
    record,
    replayed,
    state,
)


def _events(store: Store) -> int:
    return store.stats()["events"]


def test_watch_follows_every_kind_of_change(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    projects = tmp_path / "claude" / "projects"
    main = projects / "p1" / "s1.jsonl"
    append(main, b"".join(line(record("s1", i)) for i in range(3)))  # before the watcher starts
    env = agg_env(redis_server, tmp_path)
    with Agg(["watch"], env, tmp_path, name="watch") as watch:
        wait_until(lambda: _events(store) == 3, "the rescan at start")

        # append
        append(main, line(record("s1", 3)) + line(record("s1", 4)))
        wait_until(lambda: _events(store) == 5, "appended lines")
        assert store.stats()["duplicates"] == 0  # resumed at its cursor, not re-read

        # split write: half a line waits for its newline, then is stored whole
        half = line(record("s1", 5))
        append(main, half[:40])
        time.sleep(1.5)  # longer than the hot stat period: the watcher has looked at the file
        assert _events(store) == 5 and store.stats()["rejected"] == 0
        append(main, half[40:])
        wait_until(lambda: _events(store) == 6, "the completed line")
        assert store.stats()["rejected"] == 0

        # truncate: earlier events stay, the new content is read from the start
        main.write_bytes(line(record("s1", 100)) + line(record("s1", 101)))
        wait_until(lambda: _events(store) == 8, "lines after truncation")

        # rewrite in place (same size, one line changed): a revision
        data = main.read_bytes()
        changed = data.replace(b"line 101 of s1", b"LINE 101 of s1")
        assert len(changed) == len(data)
        with open(main, "r+b") as f:
            f.write(changed)
        wait_until(lambda: store.stats()["revisions"] == 1, "the rewritten line as a revision")

        # replace (new inode via rename): old lines are duplicates, the new one is stored
        tmp = main.with_suffix(".tmp")
        tmp.write_bytes(changed + line(record("s1", 102)))
        os.replace(tmp, main)
        wait_until(lambda: _events(store) == 9, "the line of the replacement file")

        # a new subagent dir (records without sessionId belong to the session of the dir)
        sub = projects / "p1" / "s1" / "subagents" / "agent-abc.jsonl"
        rec = record("s1", 200)
        del rec["sessionId"]
        append(sub, line(rec))
        wait_until(lambda: _events(store) == 10, "the subagent file in a new dir")
        # the two other subagent layouts: a workflow's agents, and 2.0.x agent files at the project root
        wf = projects / "p1" / "s1" / "subagents" / "workflows" / "wf1" / "agent-def.jsonl"
        rec_wf = record("s1", 201)
        del rec_wf["sessionId"]
        append(wf, line(rec_wf))
        wait_until(lambda: _events(store) == 11, "the workflow agent file")
        legacy = projects / "p1" / "agent-xyz.jsonl"
        append(legacy, line(record("s1", 202)))  # legacy files name no session: records carry it
        wait_until(lambda: _events(store) == 12, "the legacy agent file")

        # a new project dir
        append(projects / "p2" / "s2.jsonl", line(record("s2", 0)))
        wait_until(lambda: _events(store) == 13, "a file in a new project dir")

        # delete: its events stay, and the watcher carries on
        before = replayed(store)["s2"]
        (projects / "p2" / "s2.jsonl").unlink()
        append(projects / "p2" / "s3.jsonl", line(record("s3", 0)))
        wait_until(lambda: _events(store) == 14, "a file after a deletion")
        assert replayed(store)["s2"] == before
        assert watch.alive()

    stored = replayed(store)
    first = [line(record("s1", i)).rstrip(b"\n") for i in range(6)]
    later = [line(x).rstrip(b"\n") for x in (rec, rec_wf, record("s1", 202))]
    assert stored["s1"] == first + file_lines(main) + later
    agents = {e.env()["id"]: e.env()["agent"] for e in store.entries_after(0)}
    assert (agents["s1-200"], agents["s1-201"], agents["s1-202"]) == ("abc", "def", "xyz")
    assert store.stats()["rejected"] == 0


def test_kill9_of_watch_many_times(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    """Sessions keep appending (some in split writes) while the watcher is killed again and again."""
    projects = tmp_path / "claude" / "projects"
    appenders = [
        Appender(projects / f"p{i % 2}" / f"k{i}.jsonl", f"k{i}", 250, pause=0.01, split=i % 2 == 0) for i in range(4)
    ]
    env = agg_env(redis_server, tmp_path)
    watch = Agg(["watch"], env, tmp_path, name="watch")
    for a in appenders:
        a.start()
    kills = 0
    try:
        while any(a.is_alive() for a in appenders) or kills < 8:
            watch.start()
            time.sleep(0.3 + 0.1 * (kills % 5))
            watch.kill9()
            kills += 1
        watch.start()
        total = sum(a.count for a in appenders)
        wait_until(lambda: _events(store) >= total, f"all {total} lines after {kills} kills", timeout=60)
        time.sleep(0.5)
    finally:
        watch.__exit__()
    stats = store.stats()
    assert stats["events"] == total and stats["rejected"] == 0
    stored = replayed(store)
    for a in appenders:
        assert stored[a.session] == file_lines(a.path)  # every line once, in file order


def test_status_says_waiting_for_redis(tmp_path: Path, redis_server: RedisProcess) -> None:
    """With Redis unreachable the watcher keeps running and `agg status` reports it."""
    env = agg_env(redis_server, tmp_path, AGG_REDIS_URL=f"unix://{tmp_path}/nothing-here.sock")
    (tmp_path / "claude" / "projects").mkdir(parents=True)
    with Agg(["watch"], env, tmp_path, name="watch") as watch:
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "waiting for Redis", "waiting state")
        proc = run_agg(["status", "--json"], env, check=False)
        assert proc.returncode == 3
        st = json.loads(proc.stdout)
        assert st["redis"]["ok"] is False
        assert st["watcher"]["state"] == "waiting for Redis"
        assert st["watcher"]["pid"] == watch.pid
        assert "nothing-here.sock" in st["watcher"]["error"]
        text = run_agg(["status"], env, check=False)
        assert "watcher      waiting for Redis" in text.stdout
        assert watch.alive()
    st = state(tmp_path / "data", "watch")
    assert st["state"] == "stopped"
    proc = run_agg(["status", "--json"], env, check=False)
    assert json.loads(proc.stdout)["watcher"]["state"] == "not running"


def test_second_watcher_is_refused(redis_server: RedisProcess, r: redis.Redis, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    (tmp_path / "claude" / "projects").mkdir(parents=True)
    with Agg(["watch"], env, tmp_path, name="watch"):
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the first watcher")
        second = run_agg(["watch"], env, check=False, timeout=30)
    assert second.returncode == 5
    assert "already running" in second.stderr and "Traceback" not in second.stderr


def test_polling_mode(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    """`--poll` (network mounts, WSL, Docker) sees appends too."""
    main = tmp_path / "claude" / "projects" / "p" / "s.jsonl"
    append(main, line(record("s", 0)))
    with Agg(["watch", "--poll"], agg_env(redis_server, tmp_path), tmp_path, name="watch"):
        wait_until(lambda: _events(store) == 1, "the rescan")
        append(main, line(record("s", 1)))
        wait_until(lambda: _events(store) == 2, "an append seen by polling")
        assert state(tmp_path / "data", "watch")["polling"] is True


def test_resuming_a_small_file_never_rereads_it(store: Store, tmp_path: Path) -> None:
    """The watcher's pattern, one sync per append: each resumes at its cursor (no false "rewritten")."""
    from aggregator.layout import classify
    from aggregator.tailer import Tailer

    path = tmp_path / "projects" / "p" / "s.jsonl"
    tailer = Tailer(store)
    for i in range(6):
        append(path, line(record("s", i)))
        sf = classify(str(path))
        assert sf is not None
        res = tailer.sync(sf)
        assert (res.reset, res.events_added, res.duplicates) == (None, 1, 0)


def test_status_reports_the_live_service(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    projects = tmp_path / "claude" / "projects"
    append(projects / "p" / "a.jsonl", line(record("a", 0)))
    append(projects / "q" / "b.jsonl", line(record("b", 0)))
    env = agg_env(redis_server, tmp_path)
    with Agg(["watch"], env, tmp_path, name="watch") as watch:
        wait_until(lambda: _events(store) == 2, "both files")
        half = line(record("a", 1))[:30]
        append(projects / "p" / "a.jsonl", half)  # a partial line: on disk, not committed
        st = json.loads(run_agg(["status", "--json"], env).stdout)
    assert st["watcher"]["state"] == "watching" and st["watcher"]["pid"] == watch.pid
    assert st["roots"] == [{"path": str(tmp_path / "claude"), "exists": True, "files": 2, "lag_bytes": len(half)}]
    assert st["lag_bytes"] == len(half)
    assert st["last_ingest_at"] is not None and st["last_snapshot_at"] is None
    assert st["writer"]["state"] == "not running"


def test_a_claude_dir_that_appears_later(redis_server: RedisProcess, store: Store, tmp_path: Path) -> None:
    """Started before Claude Code ever ran: the dir is picked up when it appears."""
    with Agg(["watch"], agg_env(redis_server, tmp_path), tmp_path, name="watch"):
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
        assert state(tmp_path / "data", "watch")["roots"][0]["exists"] is False
        # the config dir comes first, with prompt history: not a transcript, not read
        append(tmp_path / "claude" / "history.jsonl", line(record("history", 0)))
        time.sleep(5.5)  # longer than the check for claude dirs that appear
        append(tmp_path / "claude" / "projects" / "p" / "s.jsonl", line(record("s", 0)))
        wait_until(lambda: _events(store) == 1, "the file in the new claude dir")
        append(tmp_path / "claude" / "projects" / "p" / "s.jsonl", line(record("s", 1)))
        wait_until(lambda: _events(store) == 2, "an append, now watched")
    assert store.conversations() == ["s"]
