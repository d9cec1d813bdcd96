"""Throwaway redis-server processes for tests and benchmarks.

Each :class:`RedisProcess` runs the same binary the embedded default would use, in its own
directory, on a unix socket (no TCP port — never the machine's shared Redis), optionally with AOF
so that durability can be tested by killing and restarting it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aggregator.embedded import find_redis_server


class RedisProcess:
    """A redis-server this process started and controls (kill -9, restart, stop)."""

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        password: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.workdir / "redis.sock"
        self.password = password
        self.binary = find_redis_server()
        self.args = {
            "port": "0",
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "dir": str(self.workdir),
            "appendonly": "yes" if appendonly else "no",
            "appendfsync": appendfsync,
            "save": "",
            "maxmemory-policy": "noeviction",
            "logfile": str(self.workdir / "redis.log"),
            "proto-max-bulk-len": "512mb",
            **(extra or {}),
        }
        if password:
            self.args["requirepass"] = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"?password={self.password}" if self.password else ""
        return f"unix://{self.socket_path}{auth}"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), password=self.password, **kwargs)  # type: ignore[arg-type]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> RedisProcess:
        if self.running:
            raise RuntimeError("redis-server is already running (stop it first)")  # would orphan it
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        argv = [self.binary]
        for k, v in self.args.items():
            argv += [f"--{k}", v]
        # Password on argv is fine here: throwaway test servers only, never the embedded default.
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        c = self.client(socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log_tail()}")
                try:
                    if c.ping():
                        return self
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
                    pass
                time.sleep(0.01)
        finally:
            c.close()
        raise RuntimeError(f"redis-server did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return " | ".join((self.workdir / "redis.log").read_text().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """``kill -9`` the server (what was not yet fsynced to the AOF is lost)."""
        if self.proc and self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Shut down cleanly (AOF flushed)."""
        if self.proc and self.running:
            c = self.client(socket_timeout=10, retry=Retry(NoBackoff(), 0))  # SHUTDOWN drops the link
            with contextlib.suppress(redis.ConnectionError):
                try:
                    c.shutdown(save=False)
                except redis.ResponseError:
                    # "Errors trying to SHUTDOWN": a cluster replica whose master is gone refuses a
                    # plain one, and the node was left running after the test (its AOF is flushed
                    # either way; FORCE only skips what stops it from exiting).
                    c.shutdown(save=False, now=True, force=True)
            c.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> RedisProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> RedisProcess:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
