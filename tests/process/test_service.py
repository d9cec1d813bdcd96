"""Running in the background: the systemd unit, the launchd agent, and the Procfile under honcho."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aggregator.config import Settings
from aggregator.embedded import find_redis_server
from aggregator.keys import Keys
from aggregator.live.install import launchd_plist, setup_procfile, systemd_unit
from aggregator.store import Store
from devtools.agg import REPO, run_agg, wait_until
from tests.support.live import append, descendants, line, record, state


def _settings(tmp_path: Path, url: str | None = None) -> Settings:
    return Settings(redis_url=url, data_dir=tmp_path / "data", claude_dirs=[tmp_path / "claude"], host="h")


def test_systemd_unit(tmp_path: Path) -> None:
    unit = systemd_unit(_settings(tmp_path), None)
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.read_string(unit)
    assert cp["Service"]["ExecStart"].endswith('"run"')
    assert cp["Service"]["KillMode"] == "mixed" and cp["Install"]["WantedBy"] == "default.target"
    assert f'Environment="AGG_DATA_DIR={tmp_path / "data"}"' in unit.splitlines()
    secret = systemd_unit(_settings(tmp_path, "redis://:hunter2@db:6379/0"), Path("/x/agg.env"))
    assert "hunter2" not in secret and "EnvironmentFile=/x/agg.env" in secret


def test_printed_systemd_unit_names_its_env_file_as_systemd_expands_it(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path / "home"), AGG_DATA_DIR=str(tmp_path / "data"))
    unit = run_agg(["service", "systemd"], dict(env, AGG_REDIS_URL="redis://:hunter2@db:6379/0")).stdout
    assert "EnvironmentFile=%h/.config/agg/agg.env" in unit.splitlines() and "hunter2" not in unit
    assert "EnvironmentFile" not in run_agg(["service", "systemd"], env).stdout  # embedded Redis: no URL to hide


def test_service_install_keeps_the_password_private(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path / "home"), AGG_DATA_DIR=str(tmp_path / "data"))
    env["AGG_REDIS_URL"] = "redis://:hunter2@db:6379/0"
    proc = run_agg(["service", "systemd", "--install"], env)
    assert "systemctl --user enable --now agg" in proc.stdout
    unit = tmp_path / "home" / ".config" / "systemd" / "user" / "agg.service"
    envfile = tmp_path / "home" / ".config" / "agg" / "agg.env"
    assert "hunter2" not in unit.read_text() and "hunter2" in envfile.read_text()
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o600
    run_agg(["service", "launchd", "--install"], env)
    plist = tmp_path / "home" / "Library" / "LaunchAgents" / "dev.agg.run.plist"
    assert stat.S_IMODE(plist.stat().st_mode) == 0o600
    assert plistlib.loads(plist.read_bytes())["EnvironmentVariables"]["AGG_REDIS_URL"].endswith("@db:6379/0")


def test_launchd_plist(tmp_path: Path) -> None:
    doc = plistlib.loads(launchd_plist(_settings(tmp_path)))
    assert doc["ProgramArguments"][-1] == "run" and doc["RunAtLoad"] is True
    assert doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["EnvironmentVariables"]["AGG_DATA_DIR"] == str(tmp_path / "data")


def test_procfile_redis_is_private(tmp_path: Path) -> None:
    """`redis-server redis.conf` after `agg service procfile`: no TCP port, 0700 socket, a password."""
    done = setup_procfile(tmp_path)
    for p in (tmp_path / ".env", tmp_path / ".agg" / "redis-procfile.conf"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    env = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    assert "password=" in env["AGG_REDIS_URL"] and "***" in done.redis_url_masked
    proc = subprocess.Popen([find_redis_server(), "redis.conf"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis.from_url(env["AGG_REDIS_URL"], retry=Retry(NoBackoff(), 0))
        wait_until(lambda: _pings(client), "the Procfile's redis-server")
        assert client.config_get("port")["port"] == "0"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        sock = Path(client.connection_pool.connection_kwargs["path"])
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(sock), retry=Retry(NoBackoff(), 0)).ping()
        client.close()
    finally:
        proc.terminate()
        proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False


@pytest.mark.skipif(shutil.which("honcho", path=str(Path(sys.executable).parent)) is None, reason="honcho missing")
def test_procfile_runs_under_honcho(tmp_path: Path) -> None:
    work = tmp_path / "app"
    work.mkdir()
    for name in ("Procfile", "redis.conf", "aggregator/redis.conf"):  # the shipped files, as in a checkout
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, work / name)
    run_agg(["service", "procfile", "--dir", str(work)], dict(os.environ))
    claude = tmp_path / "claude"
    append(claude / "projects" / "p" / "s.jsonl", line(record("s", 0)))
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    env.update(PATH=f"{bindir}:{env.get('PATH', '')}", AGG_CLAUDE_DIR=str(claude), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "honcho.log", "wb")  # noqa: SIM115
    honcho = subprocess.Popen([f"{bindir}/honcho", "start"], cwd=work, env=env, stdout=log, stderr=log)
    data = work / ".agg"
    try:
        current = data / "current.json"
        wait_until(lambda: current.exists() and orjson.loads(current.read_bytes())["seq"] >= 1, "a snapshot", 60)
        append(claude / "projects" / "p" / "s.jsonl", line(record("s", 1)))
        url = dict(ln.split("=", 1) for ln in (work / ".env").read_text().splitlines())["AGG_REDIS_URL"]
        client = redis.Redis.from_url(url)
        wait_until(lambda: client.hexists("agg:{c:s}:cur", "s-1"), "the live append", 60)
        store = Store(client, Keys("agg"))
        # the worker part: an LLM turn (offline provider) about the conversation is appended
        wait_until(lambda: any(b'"type":"agg-turn"' in body for _, body in store.replay("s")), "a turn", 60)
        client.close()
        assert state(data, "watch")["state"] == "watching"
        procs = descendants(honcho.pid)
        assert len(procs) >= 4
        honcho.send_signal(signal.SIGTERM)
        honcho.wait(timeout=30)
    finally:
        if honcho.poll() is None:
            honcho.kill()
        log.close()
    time.sleep(0.5)
    left = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], (tmp_path / "honcho.log").read_text()
