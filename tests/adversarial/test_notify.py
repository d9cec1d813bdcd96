"""File notifications under a hostile tree, for real: a file or a directory whose name is not
UTF-8, the kernel's inotify watch limit reached.

The watcher's rescans are made long here (``AGG_WATCH_RESCAN_S``, ``AGG_WATCH_STAT_ALL_S``): a new
file can then only be found by a file notification (or by the polling of directories
notifications do not cover), never by a rescan — so each test shows which path served it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.live import Agg, append, record, state
from tests.support.records import line

LONG = {"AGG_WATCH_RESCAN_S": "3600", "AGG_WATCH_STAT_ALL_S": "3600"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path / "redis", password="notify-pw") as s:
        yield s


def _new_session(project: Path, name: str) -> None:
    append(project / f"{name}.jsonl", line(record(name, 0)))


def _stored(store: Store, name: str) -> bool:
    return name in store.conversations()


def test_a_non_utf8_file_name_does_not_end_file_notifications(server: RedisProcess, tmp_path: Path) -> None:
    """A file named with bytes that are not UTF-8 makes watchfiles' engine fail for good; the
    watcher starts its notifications again (and rescans what they missed), so a new session still
    arrives by notification."""
    env = agg_env(server, tmp_path, **LONG)
    store = Store(server.client(), Keys("agg"), HOST)
    project = tmp_path / "claude" / "projects" / "p"
    _new_session(project, "first")
    watch = Agg(["watch"], env, tmp_path, name="watch").start()
    try:
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
        wait_until(lambda: _stored(store, "first"), "the first session")
        bad = os.fsdecode(bytes(project) + b"/bad\xff.jsonl")
        with open(bad, "wb") as f:
            f.write(line(record("bad", 0)))
        # Its creation ended the engine; the rescan after the restart reads it.
        wait_until(lambda: _stored(store, "bad"), "the rescan after the restart to read it")
        _new_session(project, "after")  # no rescan for an hour: only a notification finds it
        wait_until(lambda: _stored(store, "after"), "the new session, by notification")
        assert state(tmp_path / "data", "watch")["notify_restarts"] >= 1
        assert "file notifications failed" in watch.log()
        assert watch.stop() == 0
    finally:
        watch.__exit__()


def test_a_non_utf8_directory_is_polled_and_the_rest_stays_notified(server: RedisProcess, tmp_path: Path) -> None:
    """A project directory whose name is not UTF-8 makes the engine fail as soon as it starts: the
    watcher watches the other projects, polls that one, and says so."""
    env = agg_env(server, tmp_path, **LONG)
    store = Store(server.client(), Keys("agg"), HOST)
    projects = tmp_path / "claude" / "projects"
    good = projects / "p"
    bad = Path(os.fsdecode(bytes(projects) + b"/q\xfe"))
    _new_session(good, "first")
    _new_session(bad, "odd")
    watch = Agg(["watch"], env, tmp_path, name="watch").start()
    try:
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
        wait_until(lambda: _stored(store, "first") and _stored(store, "odd"), "both sessions")
        wait_until(lambda: "leave out 1 directory tree" in watch.log(), "the notifications to be set up again")
        _new_session(good, "notified")
        wait_until(lambda: _stored(store, "notified"), "a new session in a watched project, by notification")
        _new_session(bad, "polled")
        wait_until(lambda: _stored(store, "polled"), "a new session in the polled project")
        assert state(tmp_path / "data", "watch")["notify_polled_dirs"] == 1
        assert watch.stop() == 0
    finally:
        watch.__exit__()


def _ident(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _inotify_watches(pid: int) -> set[tuple[int, int]]:
    """(device, inode) of every directory the inotify instances of process ``pid`` watch."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for ln in text.splitlines():
            if ln.startswith("inotify "):
                f = dict(kv.split(":", 1) for kv in ln.split()[1:])
                kdev = int(f["sdev"], 16)
                out.add((os.makedev(kdev >> 20, kdev & 0xFFFFF), int(f["ino"], 16)))
    return out


LIMIT = 30
"""inotify watches allowed (in the watcher's own user namespace: the machine's limit is untouched)."""


def test_the_inotify_limit_is_said_and_unwatched_dirs_are_polled(server: RedisProcess, tmp_path: Path) -> None:
    """More directories than inotify watches: watchfiles skips the rest silently. The watcher
    compares what it walked with what the kernel watches, says so (log, `agg status`, with the
    sysctl to raise) and polls the rest, so a new session there still arrives."""
    env = agg_env(server, tmp_path, **LONG)
    store = Store(server.client(), Keys("agg"), HOST)
    projects = tmp_path / "claude" / "projects"
    for i in range(2 * LIMIT):
        _new_session(projects / f"p{i:02d}", f"s{i:02d}")
    # A user namespace of its own, whose inotify limit (user.max_inotify_watches) is lowered:
    # a real limit, reached for real, without touching the machine's fs.inotify settings.
    lower = f'echo {LIMIT} > /proc/sys/user/max_inotify_watches && exec "$@"'
    limited = ["unshare", "-U", "-r", "sh", "-c", lower, "sh"]
    watch = Agg(["watch"], env, tmp_path, name="watch", prefix=limited).start()
    try:
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
        unwatched = [d for d in sorted(projects.iterdir()) if _ident(d) not in _inotify_watches(watch.pid)]
        assert len(unwatched) >= LIMIT  # the kernel's view: 2 x LIMIT project dirs, LIMIT watches
        _new_session(unwatched[0], "late")
        wait_until(lambda: _stored(store, "late"), "a new session in an unwatched dir, by polling")
        st = state(tmp_path / "data", "watch")
        note = st.get("notify_note") or ""
        assert "inotify watch limit" in note and "sudo sysctl fs.inotify.max_user_watches=" in note
        assert st["notify_polled_dirs"] >= len(unwatched)
        assert "inotify watch limit" in watch.log()
        assert "inotify watch limit" in run_agg(["status"], env).stdout
        assert watch.stop() == 0
    finally:
        watch.__exit__()
