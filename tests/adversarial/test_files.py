"""A hostile file system, for real: a full disk under current.json, files and directories the
process may not read, a transcript symlink to a file outside the claude dirs, the same file under
two paths, an unterminated 60 MB line that keeps growing.

Real `agg` processes against a real redis-server; permissions are tested on a process that keeps
root's uid but not the powers that bypass them (``setpriv``), disks are small tmpfs mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.faults import NO_DAC, fill, tmpfs
from tests.support.live import Agg, append, file_lines, record, state
from tests.support.records import line


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with RedisProcess(tmp_path / "redis", password="files-pw") as s:
        yield s


def _store(server: RedisProcess) -> Store:
    return Store(server.client(), Keys("agg"), HOST)


def _ingest(env: dict[str, str], *paths: Path, prefix: list[str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "cli", "ingest", "--json", *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def _session(tmp_path: Path, name: str, count: int, *, project: str = "p", first: int = 0) -> Path:
    path = tmp_path / "claude" / "projects" / project / f"{name}.jsonl"
    for i in range(first, first + count):
        append(path, line(record(name, i)))
    return path


# --- current.json on a full disk ---------------------------------------------------------------
def test_writer_on_a_full_disk_keeps_the_old_file_and_retries(server: RedisProcess, tmp_path: Path) -> None:
    """The disk holding current.json fills up: the writer keeps the old file whole, says so once
    (log and `agg status`), keeps running, and writes again once there is room."""
    env = agg_env(server, tmp_path)
    store = _store(server)
    _session(tmp_path, "a", 3)
    with tmpfs(tmp_path / "out", "1m") as disk:
        out = disk / "current.json"
        watch = Agg(["watch"], env, tmp_path, name="watch").start()
        writer = Agg(["writer", "--interval", "0.1", "--output", str(out)], env, tmp_path, name="writer").start()
        try:

            def written_seq() -> int:
                try:
                    return int(json.loads(out.read_bytes())["seq"])
                except (OSError, ValueError):
                    return -1

            wait_until(lambda: store.last_seq() == 3 and written_seq() == 3, "a first snapshot")
            old = out.read_bytes()
            filler = fill(disk, leave=0)
            _session(tmp_path, "a", 5, first=3)
            wait_until(lambda: "No space left" in (state(tmp_path / "data", "writer").get("error") or ""), "the error")
            time.sleep(1.5)  # several attempts
            assert writer.alive() and out.read_bytes() == old
            assert not list(disk.glob(".current.json.*"))  # no temp file left behind
            status = run_agg(["status"], env).stdout
            assert "cannot write" in status and "No space left" in status
            assert writer.log().count("cannot write") == 1  # said once, not per attempt
            filler.unlink()
            wait_until(lambda: written_seq() == store.last_seq() == 8, "the snapshot written again")
            wait_until(lambda: state(tmp_path / "data", "writer").get("error") is None, "the error cleared")
            assert writer.stop() == 0 and watch.stop() == 0
            assert "Traceback" not in writer.log()
        finally:
            writer.__exit__()
            watch.__exit__()


def test_writer_once_on_a_full_disk_says_one_line(server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(server, tmp_path)
    _session(tmp_path, "a", 3)
    run_agg(["ingest"], env)
    with tmpfs(tmp_path / "out", "1m") as disk:
        out = disk / "current.json"
        run_agg(["writer", "--once", "--output", str(out)], env)
        old = out.read_bytes()
        fill(disk, leave=0)
        _session(tmp_path, "a", 3, first=3)
        run_agg(["ingest"], env)
        proc = run_agg(["writer", "--once", "--output", str(out)], env, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [
            f"agg: cannot write {out}: No space left on device; the old file is kept"
        ]
        assert out.read_bytes() == old


# --- unreadable files and directories ------------------------------------------------------------
def test_a_file_unreadable_at_first_is_read_once_readable(server: RedisProcess, tmp_path: Path) -> None:
    """An unreadable transcript and an unreadable project dir: skipped, logged, named in
    `agg status`, and read as soon as they can be (not only when a line is appended)."""
    env = agg_env(server, tmp_path)
    store = _store(server)
    _session(tmp_path, "a", 2)
    b = _session(tmp_path, "b", 3)
    c = _session(tmp_path, "c", 4, project="q")
    b.chmod(0)
    c.parent.chmod(0)
    watch = Agg(["watch"], env, tmp_path, name="watch", prefix=NO_DAC).start()
    try:
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
        wait_until(lambda: store.stats()["events"] == 2, "the readable file")
        st = state(tmp_path / "data", "watch")
        skipped = {Path(s["file"]).name: s["reason"] for s in st["skipped"]["first"]}
        assert st["skipped"]["count"] == 2
        assert skipped == {"b.jsonl": "unreadable: Permission denied", "q": "unreadable directory: Permission denied"}
        status = run_agg(["status"], env).stdout
        assert "skipped      2 not read" in status and "b.jsonl (unreadable: Permission denied)" in status
        assert "skipped" in watch.log() and "b.jsonl" in watch.log()  # the watcher said so
        b.chmod(0o644)
        c.parent.chmod(0o755)
        wait_until(lambda: store.stats()["events"] == 9, "both to be read once readable")
        wait_until(lambda: state(tmp_path / "data", "watch")["skipped"]["count"] == 0, "the list to empty")
        assert watch.stop() == 0
    finally:
        b.chmod(0o644)
        c.parent.chmod(0o755)
        watch.__exit__()


def test_ingest_names_an_unreadable_directory(server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(server, tmp_path)
    _session(tmp_path, "a", 2)
    c = _session(tmp_path, "c", 4, project="q")
    c.parent.chmod(0)
    try:
        report = _ingest(env, prefix=NO_DAC)
    finally:
        c.parent.chmod(0o755)
    assert report["events_added"] == 2
    assert report["files_skipped"] == 1
    assert report["skipped"] == [{"file": str(c.parent), "reason": "unreadable directory: Permission denied"}]
    # `agg status` names it too (no watcher runs here to retry it), until an ingest reads it.
    status = run_agg(["status"], env).stdout
    assert "skipped      1 not read by the last agg ingest" in status
    assert f"{c.parent} (unreadable directory: Permission denied)" in status
    assert json.loads(run_agg(["status", "--json"], env).stdout)["ingest"]["skipped"]["first"] == report["skipped"]
    assert _ingest(env)["events_added"] == 4
    assert "skipped      " not in run_agg(["status"], env).stdout


# --- symlinks -----------------------------------------------------------------------------------
def test_a_symlink_out_of_the_claude_dirs_is_not_followed(server: RedisProcess, tmp_path: Path) -> None:
    """A transcript symlink to a file outside the claude dirs (say /etc/passwd) is skipped and
    reported, by `agg ingest` and by `agg watch`: none of its bytes reach the store. A link to a
    transcript inside them is followed, and the file counted once."""
    env = agg_env(server, tmp_path)
    store = _store(server)
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nsecret-token: hunter2\n")
    a = _session(tmp_path, "a", 3)
    (a.parent / "passwd.jsonl").symlink_to(secret)
    (a.parent / "alias.jsonl").symlink_to(a)
    report = _ingest(env)
    assert (report["files"], report["events_added"], report["rejected"], report["duplicates"]) == (1, 3, 0, 0)
    assert report["skipped"] == [
        {"file": str(a.parent / "passwd.jsonl"), "reason": "a symlink to a file outside the claude dirs: not followed"}
    ]
    watch = Agg(["watch"], env, tmp_path, name="watch").start()
    try:
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
        (a.parent / "shadow.jsonl").symlink_to(secret)  # made while it watches
        wait_until(
            lambda: state(tmp_path / "data", "watch").get("skipped", {}).get("count") == 2, "the new link reported"
        )
        _session(tmp_path, "a", 1, first=3)
        wait_until(lambda: store.stats()["events"] == 4, "the next line")
        assert watch.stop() == 0
    finally:
        watch.__exit__()
    r: Any = store.client
    assert store.stats()["rejected"] == 0 and r.llen(store.keys.rejects) == 0
    assert b"hunter2" not in b"".join(r.lrange(store.keys.rejects, 0, -1))


def test_a_file_reached_by_two_paths_counts_once(server: RedisProcess, corpus: Path, tmp_path: Path) -> None:
    """The corpus ingested, then again through a symlink to its claude dir: nothing is counted a
    second time — lines, rejected, duplicates, files."""
    env = agg_env(server, tmp_path)
    first = _ingest(env)
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "claude")
    again = _ingest(env, alias)
    assert (again["lines"], again["events_added"], again["duplicates"], again["rejected"]) == (0, 0, 0, 0)
    st = json.loads(run_agg(["status", "--json"], env).stdout)
    assert st["files"] == first["files"]
    assert (st["lines"], st["rejected"], st["duplicates"]) == (first["lines"], first["rejected"], first["duplicates"])


def test_replacement_is_still_seen_through_a_symlinked_dir(server: RedisProcess, tmp_path: Path) -> None:
    """Keyed by its resolved path, a file replaced by rename is still seen as replaced (another
    inode) and reconciled, whichever spelling reaches it."""
    env = agg_env(server, tmp_path)
    a = _session(tmp_path, "a", 3)
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "claude")
    assert _ingest(env, alias)["events_added"] == 3
    new = a.with_name("a.new")
    shutil.copy(a, new)
    with open(new, "ab") as f:
        f.write(line(record("a", 3)))
    os.replace(new, a)
    report = _ingest(env)
    assert (report["files_reset"], report["events_added"], report["duplicates"]) == (1, 1, 3)


# --- an unterminated long line ------------------------------------------------------------------
def _rchar(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/io").read_text().splitlines():
        if ln.startswith("rchar:"):
            return int(ln.split()[1])
    raise AssertionError("no rchar")


def test_an_unterminated_long_line_is_not_read_again_on_every_append(server: RedisProcess, tmp_path: Path) -> None:
    """A 60 MB last line without its newline, growing by 1 KB at a time: each sync reads the new
    bytes only (measured as the bytes the watcher process read), and the line is stored once its
    newline comes."""
    env = agg_env(server, tmp_path)
    store = _store(server)
    path = _session(tmp_path, "long", 1)
    head = b'{"type":"user","uuid":"long-1","sessionId":"long","message":{"role":"user","content":"'
    size = 60 << 20
    with open(path, "ab") as f:
        f.write(head + b"x" * size)
    watch = Agg(["watch"], env, tmp_path, name="watch").start()
    try:
        wait_until(lambda: store.stats()["events"] == 1, "the first line")
        time.sleep(1)  # the first sync has scanned the unterminated line
        before = _rchar(watch.pid)
        appends = 10
        for _ in range(appends):
            append(path, b"y" * 1024)
            time.sleep(0.3)  # each append gets its own sync (notification, then the 1 s stat)
        append(path, b'"}}\n')
        wait_until(lambda: store.stats()["events"] == 2, "the long line once complete")
        read = _rchar(watch.pid) - before
        print(f"the watcher read {read / 1e6:.1f} MB for {appends} KB appended to a {size >> 20} MB line")
        # Read again from its start on each sync, the line would cost 60 MB per append; read from
        # where the last scan stopped, it costs the appended bytes, plus one read of the whole
        # line when it is complete.
        assert read < size * 1.5, f"the watcher read {read / 1e6:.0f} MB for {appends} KB appended"
        assert file_lines(path)[-1] == list(store.replay("long"))[-1][1]
        assert watch.stop() == 0
    finally:
        watch.__exit__()
