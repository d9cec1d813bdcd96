"""`agg run` and its parts: settings checked before anything starts, a Redis it cannot use, a part
that exits with a usage error, a warm stop that must not hang."""

from __future__ import annotations

import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aggregator.config import Settings
from aggregator.lifecycle import StopFlag
from aggregator.live.supervisor import Part, Supervisor
from devtools.agg import agg_env
from devtools.redisproc import RedisProcess

STOP_INSIDE_WAIT = """
import os, signal, time
from aggregator.lifecycle import StopFlag

flag = StopFlag().install()
with flag._lock:  # where the main thread is while it waits on the flag
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, on this thread
    time.sleep(0.05)
print("stopped:", flag.reason, flag.wait(0))
"""


def test_a_stop_signal_inside_a_wait_does_not_deadlock() -> None:
    """A SIGTERM handled while the main thread holds the stop flag's lock (inside its wait) sets
    the flag; with a plain lock (``threading.Event``) the handler blocked on it for good."""
    out = subprocess.run([sys.executable, "-c", STOP_INSIDE_WAIT], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "stopped: SIGTERM True", out.stderr[-2000:]


# --- agg run: settings and Redis checked before anything starts ----------------------------------
def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`agg [args] run`, which must end by itself (it would run forever if it started)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "run"], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AGG_ACTIVE_MINUTES", "-1", "agg: bad AGG_ACTIVE_MINUTES '-1': give a number of minutes >= 0"),
        ("AGG_WATCH_RESCAN_S", "soon", "agg: bad AGG_WATCH_RESCAN_S 'soon': give a number of seconds >= 0.1"),
        ("AGG_TURN_CONCURRENCY", "0", "AGG_TURN_CONCURRENCY"),
        ("AGG_TURN", "no_such_module:turn", "agg: AGG_TURN='no_such_module:turn': cannot import no_such_module"),
    ],
)
def test_run_refuses_a_bad_setting_before_starting_anything(
    redis_server: RedisProcess, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    """A setting only one part reads (the writer's AGG_ACTIVE_MINUTES, the worker's AGG_TURN_*)
    stops `agg run` at once, with one line — no part started, no crash loop."""
    env = agg_env(redis_server, tmp_path, **{variable: value})
    proc = _run(env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "data" / "state" / "watch-agg.json").exists()  # nothing was started


def test_run_stops_when_a_part_exits_with_a_usage_error(redis_server: RedisProcess, tmp_path: Path) -> None:
    """A part exiting with status 2 (bad usage or configuration) would only fail again: `agg run`
    stops everything with one line and exit 2 instead of restarting it forever."""
    settings = Settings(
        redis_url=redis_server.url, data_dir=tmp_path / "data", claude_dirs=[tmp_path / "claude"], host="testhost"
    )
    parts = [Part("watch", ("watch",)), Part("broken", ("writer", "--interval", "-3"))]
    sup = Supervisor(settings, parts, StopFlag())
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    t.start()
    t.join(timeout=60)
    if t.is_alive():
        sup.stop.set("the test gave up")
        t.join(timeout=60)
        raise AssertionError("agg run kept restarting a part that exits with a usage error")
    assert result == [2]
    assert sup.children is not None and sup.children.children[1].exits == [2]  # started once, not again
    assert not sup.children.children[0].running  # the others were stopped


class _NotRedis(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1024)
        self.request.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n<html>no</html>")


@pytest.mark.parametrize("case", ["wrong password", "not Redis", "nothing there", "bad URL"])
def test_run_stops_with_one_line_on_a_redis_it_cannot_use(
    redis_server: RedisProcess, tmp_path: Path, case: str
) -> None:
    """A Redis `agg run` cannot use at all stops it at once with one line (a Redis that goes away
    later is waited out: tests/process/test_run.py::test_run_speaks_like_a_service)."""
    server = socketserver.TCPServer(("127.0.0.1", 0), _NotRedis)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url, code = {
            "wrong password": (f"unix://{redis_server.socket_path}?password=wrong", 3),
            "not Redis": (f"redis://127.0.0.1:{server.server_address[1]}", 3),
            "nothing there": ("redis://127.0.0.1:1", 3),
            "bad URL": (f"http://127.0.0.1:{server.server_address[1]}", 2),  # never the shared 6379
        }[case]
        proc = _run(agg_env(redis_server, tmp_path, AGG_REDIS_URL=url))
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agg: "), proc.stderr[-2000:]
    assert "wrong" not in lines[0]  # the password is never printed
