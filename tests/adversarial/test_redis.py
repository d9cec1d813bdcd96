"""Redis-facing faults, caused for real: a Redis that evicts keys, a server that is not Redis, the
embedded server's AOF on a full disk, a Redis error in the middle of an ingest, and a socket
directory under /tmp that another user planted.

Each test starts its own redis-server (or agg's embedded one in a temp data dir); the ones that
mount a tmpfs or play another user need root and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from aggregator.config import Settings
from aggregator.connection import check, client_from_url
from aggregator.errors import EvictingRedis
from aggregator.ingest import _ProjectorProcess
from aggregator.keys import Keys
from aggregator.seqfloor import SeqFloor
from aggregator.store import Store
from devtools.agg import HOST, agg_env, embedded_env, run_agg, wait_until
from devtools.cluster import Cluster
from devtools.redisproc import RedisProcess
from tests.support import oracle
from tests.support.cli import one_line_error
from tests.support.live import Agg, append, gone, record, state
from tests.support.records import line

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs / plays another user: needs root")

EVICTING = {"maxmemory": "10mb", "maxmemory-policy": "allkeys-lru"}


# --- an evicting Redis ---------------------------------------------------------------------------
def test_ingest_refuses_an_evicting_redis(tmp_path: Path, corpus: Path) -> None:
    """Issue 9 item 1: on `allkeys-lru` with 10 MB, ingest of the corpus used to exit 0 while Redis
    evicted cursors and events (6,252 events counted for 5,925 lines, 1,372 replayable)."""
    with RedisProcess(tmp_path / "redis", extra=EVICTING) as server:
        proc = run_agg(["ingest", str(corpus), "--json"], agg_env(server, tmp_path), check=False)
        one_line_error(proc, 3, "maxmemory-policy is allkeys-lru")
        assert "noeviction" in proc.stderr and proc.stdout == ""
        assert server.client().dbsize() == 0  # refused before writing anything


def test_a_cluster_node_is_served_its_password_never_printed_and_an_evicting_master_refused(
    tmp_path: Path, corpus: Path
) -> None:
    """Given a Redis Cluster node, agg ingest used to fail on its first cross-slot script with a
    traceback from the projecting child. It now stores into the cluster's buckets (tests/cluster/)
    and reads them back; a wrong password is one line without either password; and a master that
    may evict keys — any of them, not only the one in the URL — is refused before anything is
    written to it."""
    with Cluster(tmp_path / "cluster", masters=3, replicas=0) as cluster:
        settings = Settings(redis_url=cluster.url, data_dir=tmp_path / "data", claude_dirs=[corpus], host=HOST)
        env = {**os.environ, **settings.to_env()}
        proc = run_agg(["ingest", str(corpus)], env)
        assert "5935 lines" in proc.stdout and cluster.password not in proc.stdout + proc.stderr
        assert json.loads(run_agg(["rejects", "--json"], env).stdout)["rejected"] == 10
        wrong = {**env, "AGG_REDIS_URL": cluster.url.replace(cluster.password, "not-the-password")}
        proc = run_agg(["status"], wrong, check=False)
        one_line_error(proc, 3, "refused our password")
        assert cluster.password not in proc.stderr and "not-the-password" not in proc.stderr
        # Every master but the one the URL names may evict: each is refused when agg reaches it.
        url_port = int(cluster.url.rsplit(":", 1)[1])
        for i in cluster.master_indexes():
            if cluster.ports[i] != url_port:
                cluster.node_client(i).config_set("maxmemory-policy", "allkeys-lru")
        for n in range(40):  # projects in every bucket, so every master is written to
            (corpus / f"-home-u-p{n}").mkdir()
            (corpus / f"-home-u-p{n}" / "s.jsonl").write_text(line(record(f"s{n}", 1)).decode())
        proc = run_agg(["ingest", str(corpus)], env, check=False)
        one_line_error(proc, 3, "maxmemory-policy is allkeys-lru")
        assert cluster.password not in proc.stderr


def test_a_policy_changed_later_is_refused_on_check_and_on_reconnect(tmp_path: Path) -> None:
    """`CONFIG SET maxmemory-policy` while agg is connected: the next check, and every new
    connection (one-shot clients and the long-running parts' seq-floor hook), refuse the store."""
    with RedisProcess(tmp_path / "redis") as server:
        admin = server.client()
        plain = client_from_url(server.url)
        hooked = client_from_url(server.url, **SeqFloor(Keys("agg")).client_options())
        for c in (plain, hooked):
            check(c, "test")
        admin.config_set("maxmemory-policy", "volatile-lru")
        with pytest.raises(EvictingRedis, match="volatile-lru"):
            check(plain, "test")
        admin.client_kill_filter(_type="normal", skipme=True)
        for c in (plain, hooked):
            with pytest.raises(EvictingRedis, match="noeviction"):
                c.set("k", "v")  # the reconnect itself refuses, before the command is sent
        assert admin.get("k") is None
        admin.config_set("maxmemory-policy", "noeviction")
        assert plain.set("k", "v") and hooked.get("k") == b"v"


def test_the_watcher_waits_while_redis_may_evict_and_resumes(tmp_path: Path) -> None:
    """A running watcher whose Redis becomes evicting stops committing, says why in its state
    (it does not exit), and stores the lines once the policy is back to noeviction."""
    session = tmp_path / "claude" / "projects" / "p" / "s1.jsonl"
    append(session, line(record("s1", 0)))
    with RedisProcess(tmp_path / "redis") as server:
        env = agg_env(server, tmp_path)
        store = Store(server.client(), Keys("agg"), HOST)
        data = tmp_path / "data"
        with Agg(["watch"], env, tmp_path) as watch:
            wait_until(lambda: store.stats()["events"] == 1, "the first line")
            admin = server.client()
            admin.config_set("maxmemory-policy", "allkeys-lfu")
            admin.client_kill_filter(_type="normal", skipme=True)
            append(session, line(record("s1", 1)))
            wait_until(lambda: "maxmemory-policy" in (state(data, "watch").get("error") or ""), "the reason")
            assert watch.alive() and store.stats()["events"] == 1
            admin.config_set("maxmemory-policy", "noeviction")
            wait_until(lambda: store.stats()["events"] == 2, "the line after the policy was fixed")
            assert watch.alive()


# --- a server that is not Redis --------------------------------------------------------------------
@pytest.fixture
def http_url() -> Iterator[str]:
    """``redis://`` pointing at a plain HTTP server (what a wrong port in --redis-url reaches)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("args", [["status"], ["ingest"], ["watch"], ["writer"], ["writer", "--once"]])
def test_a_server_that_is_not_redis_is_one_line(tmp_path: Path, corpus: Path, http_url: str, args: list[str]) -> None:
    """Issue 9 item 12: a traceback (or, for watch and writer, waiting forever) before."""
    env = embedded_env(tmp_path, AGG_REDIS_URL=http_url)
    proc = run_agg(args, env, check=False, timeout=60)
    one_line_error(proc, 3, "does not speak the Redis protocol")
    assert http_url in proc.stderr


def test_status_json_names_a_server_that_is_not_redis(tmp_path: Path, http_url: str) -> None:
    proc = run_agg(["status", "--json"], embedded_env(tmp_path, AGG_REDIS_URL=http_url), check=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    st = json.loads(proc.stdout)
    assert st["redis"]["ok"] is False and "does not speak the Redis protocol" in st["redis"]["error"]


# --- a Redis error in the middle of an ingest --------------------------------------------------------
def test_a_redis_error_mid_ingest_is_one_line_without_the_childs_traceback(tmp_path: Path, corpus: Path) -> None:
    """Redis runs out of memory (noeviction) during the ingest: the parent says so in one line
    and the forked child projecting the log, which meets the same refusal, adds nothing."""
    with RedisProcess(tmp_path / "redis", extra={"maxmemory": "6mb"}) as server:
        proc = run_agg(["ingest", str(corpus)], agg_env(server, tmp_path), check=False)
        one_line_error(proc, 3, "OOM command not allowed when used memory")


def test_the_projecting_child_leaves_a_redis_error_to_its_parent(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The child `agg ingest` forks to project the log meets Redis gone: it exits without the
    traceback it used to print next to the parent's one line."""
    with RedisProcess(tmp_path / "redis") as server:
        store = Store(client_from_url(server.url), Keys("agg"), HOST)
        store.r.ping()
        server.kill()
        helper = _ProjectorProcess(store)
        assert helper.proc is not None
        helper.proc.join(60)
        helper.stop()
    assert helper.proc.exitcode == 1
    assert "Traceback" not in capfd.readouterr().err


# --- the embedded Redis' AOF on a full disk ----------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted (after stopping whatever runs on it) at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        _kill_embedded(mnt / "data")
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _kill_embedded(data_dir: Path) -> None:
    """Teardown: make sure no redis-server of ``data_dir`` survives the test."""
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid = int((data_dir / "redis" / "redis.pid").read_text())
        proc = psutil.Process(pid)
        if proc.name() == "redis-server":
            proc.kill()
            proc.wait(10)


def test_a_full_disk_under_the_embedded_redis_is_said_at_once(small_disk: Path, tmp_path: Path, corpus: Path) -> None:
    """Issue 9 item 9: `agg status` used to wait 30 s and say "redis-server did not answer",
    although the server was up and answering MISCONF."""
    env = embedded_env(tmp_path, AGG_DATA_DIR=str(small_disk / "data"))
    run_agg(["redis", "start"], env)
    ingest = run_agg(["ingest", str(corpus)], env, check=False)
    one_line_error(ingest, 3, "MISCONF")  # and no traceback of the projecting child
    status = run_agg(["status"], env, check=False)
    one_line_error(status, 3, "MISCONF Errors writing to the AOF file")
    st = json.loads(run_agg(["status", "--json"], env, check=False).stdout)
    assert st["redis"]["ok"] is False and "MISCONF" in st["redis"]["error"]
    pid = int((small_disk / "data" / "redis" / "redis.pid").read_text())
    assert run_agg(["redis", "stop"], env).stdout.strip() == "stopped"  # it answers: stop it
    assert gone(pid)


# --- the socket directory under /tmp -----------------------------------------------------------------
class Listener(threading.Thread):
    """An attacker's unix socket: records every byte a client sends it, answers nothing."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.received = b""
        self.connections = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.settimeout(1)
            with contextlib.suppress(OSError), conn:
                self.received += conn.recv(65536)

    def close(self) -> None:
        self.done.set()
        self.join(5)
        self.sock.close()


@pytest.fixture
def long_data_dir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], Path]]:
    """A data dir too long for ``<data dir>/run/redis.sock`` (the socket falls back to a directory
    of its own), with a private TMPDIR standing in for /tmp and no XDG_RUNTIME_DIR."""
    data = tmp_path / ("d" * 90)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)  # like /tmp
    env = embedded_env(tmp_path, AGG_DATA_DIR=str(data), TMPDIR=str(tmp))
    env.pop("XDG_RUNTIME_DIR", None)
    try:
        yield data, env, tmp / f"agg-{os.getuid()}"
    finally:
        _kill_embedded(data)


def _assert_refused(proc: subprocess.CompletedProcess[str], fallback: Path, why: str) -> None:
    one_line_error(proc, 3, str(fallback))
    assert why in proc.stderr and "XDG_RUNTIME_DIR" in proc.stderr


def test_a_planted_symlink_gets_neither_the_password_nor_a_chmod(
    long_data_dir: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    """Issue 9 item 4, as the probe did it: the victim used agg before (its data dir has a
    password); the attacker replaces the socket directory by a symlink to a directory of its
    own where it listens on the socket's name. agg used to chmod the target 0700 and send
    `AUTH default <password>` to the listener."""
    data, env, fallback = long_data_dir
    started = re.match(r"started: (\S+\.sock) ", run_agg(["redis", "start"], env).stdout)
    assert started is not None
    sock_name = Path(started.group(1)).name
    run_agg(["redis", "stop"], env)
    shutil.rmtree(fallback)
    attacker = tmp_path / "attacker"
    attacker.mkdir(mode=0o755)
    listener = Listener(attacker / sock_name)
    listener.start()
    fallback.symlink_to(attacker)
    try:
        procs = [run_agg(args, env, check=False) for args in (["status"], ["redis", "start"], ["replay", "--rebuild"])]
    finally:
        listener.close()
    password = (data / "redis" / "password").read_text().strip()
    assert password.encode() not in listener.received and listener.connections == 0
    assert stat.S_IMODE(attacker.stat().st_mode) == 0o755
    for proc in procs:
        _assert_refused(proc, fallback, "is a symlink")
    assert not (data / "redis" / "redis.pid").exists() or gone(int((data / "redis" / "redis.pid").read_text()))


@needs_root
def test_a_directory_another_user_created_is_refused(long_data_dir: tuple[Path, dict[str, str], Path]) -> None:
    _data, env, fallback = long_data_dir
    fallback.mkdir(mode=0o700)
    os.chown(fallback, 65534, 65534)  # nobody
    _assert_refused(run_agg(["status"], env, check=False), fallback, "owned by uid 65534")
    st = fallback.lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, 0o700) and list(fallback.iterdir()) == []


def test_a_directory_open_to_others_is_refused_not_chmoded(long_data_dir: tuple[Path, dict[str, str], Path]) -> None:
    _data, env, fallback = long_data_dir
    fallback.mkdir()
    os.chmod(fallback, 0o755)
    _assert_refused(run_agg(["status"], env, check=False), fallback, "mode 0755")
    assert stat.S_IMODE(fallback.lstat().st_mode) == 0o755


def test_the_socket_goes_to_xdg_runtime_dir_when_there_is_one(
    long_data_dir: tuple[Path, dict[str, str], Path], tmp_path: Path, corpus: Path
) -> None:
    _data, env, fallback = long_data_dir
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env["XDG_RUNTIME_DIR"] = str(xdg)
    run_agg(["ingest", str(corpus)], env)
    st = json.loads(run_agg(["status", "--json"], env).stdout)
    assert st["events"] == oracle.read(oracle.transcripts(corpus)).events
    socks = list((xdg / "agg").glob("*.sock"))
    assert len(socks) == 1 and str(socks[0]) in st["redis"]["url"]
    assert stat.S_IMODE((xdg / "agg").stat().st_mode) == 0o700 and not fallback.exists()
    assert run_agg(["redis", "stop"], env).stdout.strip() == "stopped"


def test_a_private_fallback_directory_is_used(long_data_dir: tuple[Path, dict[str, str], Path]) -> None:
    """The ordinary case still works: the directory is created 0700 and reused."""
    _data, env, fallback = long_data_dir
    assert run_agg(["redis", "start"], env).stdout.startswith(f"started: {fallback}/")
    assert run_agg(["status", "--json"], env).returncode == 0
    st = fallback.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    assert run_agg(["redis", "stop"], env).stdout.strip() == "stopped"
