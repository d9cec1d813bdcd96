"""A small read-only Redis client on hiredis' reply parser, for the commands that must start fast.

redis-py imports its asyncio client whatever part of it one imports (its package ``__init__``
does): about 90 ms warm and 250 ms cold, several times what ``agg status`` and ``agg usage``
spend on everything else (README, "Start-up time"). Those two commands only read a few keys, so
they first try this client, which speaks RESP2 over one socket with hiredis (already a
dependency for the ingest path) and answers the read commands they send with the values redis-py
returns for them.

Anything else raises :class:`QuickFallback`, and the command runs again on redis-py, from the
start, doing what it always did: a command this client does not send (every write among them, so
nothing is ever half done here), an error reply, a lost or refused connection, a URL with TLS or
client options, an embedded server that is not up or whose record needs writing, a Redis that may
evict keys. The errors a user sees are therefore redis-py's, word for word; the quick path only
answers when all is well (``tests/process/test_quick_cli.py`` compares both paths' answers).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import hiredis

from aggregator import defaults, scripts
from aggregator.endpoint import Connection, Plain, plain
from aggregator.errors import EmbeddedRedisError, QuickFallback

if TYPE_CHECKING:
    import redis

    from aggregator.config import Settings
    from aggregator.embedded import EmbeddedRedis


Convert = Callable[[Any], Any]


class _ReplyError(QuickFallback):
    """Redis answered with an error (redis-py would raise it, or act on it)."""


def _same(reply: Any) -> Any:
    return reply


def _pairs(reply: Any) -> dict[Any, Any]:
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _scored(reply: Any) -> list[tuple[bytes, float]]:
    return [(m, float(s)) for m, s in zip(reply[::2], reply[1::2], strict=True)]


def parse_info(raw: bytes) -> dict[str, Any]:
    """``INFO``'s reply as redis-py parses it (``redis._parsers.helpers.parse_info``: numbers
    as int or float, ``a=1,b=2`` as dicts, ``module`` lines under ``modules``)."""

    def value(v: str) -> Any:
        if "," not in v and "=" not in v:
            try:
                return float(v) if "." in v else int(v)
            except ValueError:
                return v
        if "=" not in v:
            return [value(x) for x in v.split(",") if x]
        sub: dict[str, Any] = {}
        for item in v.split(","):
            if not item:
                continue
            if "=" in item:
                k, x = item.rsplit("=", 1)
                sub[k] = value(x)
            else:
                sub[item] = True
        return sub

    info: dict[str, Any] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            info.setdefault("__raw__", []).append(line)
            continue
        key, v = line.split(":", 1)
        if key == "cmdstat_host":
            key, v = line.rsplit(":", 1)
        if key == "module":
            info.setdefault("modules", []).append(value(v))
        else:
            info[key] = value(v)
    return info


def _arg(a: Any) -> bytes:
    """An argument as redis-py's encoder sends it."""
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, bool):
        raise QuickFallback("a bool argument")  # redis-py refuses these
    if isinstance(a, int):
        return str(a).encode()
    if isinstance(a, float):
        return repr(a).encode()
    raise QuickFallback(f"an argument of type {type(a).__name__}")


class QuickRedis:
    """One connection, read commands only (see the module docstring); the subset of redis-py's
    ``Redis`` interface that ``agg status`` and ``agg usage`` use."""

    def __init__(self, sock: socket.socket, read_only_scripts: Mapping[str, str | None]) -> None:
        self._sock = sock
        self._reader = hiredis.Reader()
        self.read_only_scripts = dict(read_only_scripts)
        """Lua scripts this client may run: script → None (any call is read-only) or the first
        argument that makes a call read-only (e.g. the budget's ``peek``)."""

    @classmethod
    def connect(cls, target: Plain, read_only_scripts: Mapping[str, str | None]) -> QuickRedis:
        """Connect, ``AUTH`` and ``SELECT`` as redis-py would; :class:`QuickFallback` on any failure."""
        timeout = defaults.QUICK_REDIS_TIMEOUT_S
        try:
            if target.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(target.path)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((target.host, target.port), timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise QuickFallback(f"cannot connect: {e}") from None
        client = cls(sock, read_only_scripts)
        try:
            if target.password is not None:
                who = (target.username,) if target.username else ()
                client._call("AUTH", *who, target.password)
            if target.db:
                client._call("SELECT", target.db)
        except BaseException:
            client.close()
            raise
        return client

    # --- the wire ------------------------------------------------------------------------------
    def _send(self, commands: list[tuple[Any, ...]]) -> None:
        packed: list[Any] = [tuple(_arg(a) for a in c) for c in commands]  # hiredis' stub: 1-tuples only
        data = b"".join(hiredis.pack_command(p) for p in packed)
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise QuickFallback(f"lost the connection: {e}") from None

    def _read(self) -> Any:
        try:
            while True:
                reply = self._reader.gets()
                if reply is not False:
                    break
                data = self._sock.recv(1 << 16)
                if not data:
                    raise QuickFallback("the server closed the connection")
                self._reader.feed(data)
        except (OSError, hiredis.ProtocolError) as e:
            raise QuickFallback(f"lost the connection: {e}") from None
        if isinstance(reply, hiredis.ReplyError):
            raise _ReplyError(str(reply))
        return reply

    def _call(self, *args: Any) -> Any:
        self._send([args])
        return self._read()

    def execute_batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once and read every reply (a pipeline without a transaction)."""
        if not commands:
            return []
        self._send(commands)
        return [self._read() for _ in commands]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    # --- redis-py's interface, as far as status and usage use it --------------------------------
    def ping(self) -> bool:
        return bool(self._call("PING") == b"PONG")

    def info(self, section: str | None = None) -> dict[str, Any]:
        return parse_info(self._call("INFO", *((section,) if section else ())))

    def get(self, name: str) -> bytes | None:
        return cast("bytes | None", self._call("GET", name))

    def hget(self, name: str, key: str) -> bytes | None:
        return cast("bytes | None", self._call("HGET", name, key))

    def hgetall(self, name: str) -> dict[bytes, bytes]:
        return _pairs(self._call("HGETALL", name))

    def hmget(self, name: str, keys: list[str], *args: str) -> list[bytes | None]:
        return cast("list[bytes | None]", self._call("HMGET", name, *keys, *args))

    def exists(self, *names: str) -> int:
        return int(self._call("EXISTS", *names))

    def smembers(self, name: str) -> set[bytes]:
        return set(self._call("SMEMBERS", name))

    def scard(self, name: str) -> int:
        return int(self._call("SCARD", name))

    def zcard(self, name: str) -> int:
        return int(self._call("ZCARD", name))

    def zcount(self, name: str, low: float | str, high: float | str) -> int:
        return int(self._call("ZCOUNT", name, low, high))

    def llen(self, name: str) -> int:
        return int(self._call("LLEN", name))

    def zrange(self, name: str, start: int, end: int, withscores: bool = False) -> list[Any]:
        if withscores:
            return _scored(self._call("ZRANGE", name, start, end, "WITHSCORES"))
        return cast("list[bytes]", self._call("ZRANGE", name, start, end))

    def pipeline(self, transaction: bool = True) -> QuickPipeline:
        if transaction:
            raise QuickFallback("a transaction")
        return QuickPipeline(self)

    def register_script(self, script: str) -> QuickScript:
        return QuickScript(self, script)

    def __getattr__(self, name: str) -> Any:
        """Any other part of redis-py's interface: the full client's job."""
        if name.startswith("__"):
            raise AttributeError(name)
        raise QuickFallback(f"redis-py's {name}")


def require_full(client: object, why: str) -> None:
    """Raise :class:`QuickFallback` if ``client`` is the quick client: for code about to hand it
    to a library that expects redis-py (RQ)."""
    if isinstance(client, QuickRedis):
        raise QuickFallback(why)


class QuickPipeline:
    """redis-py's ``pipeline(transaction=False)``: commands queued, sent at once by :meth:`execute`."""

    def __init__(self, client: QuickRedis) -> None:
        self._client = client
        self._queued: list[tuple[tuple[Any, ...], Convert]] = []

    def _queue(self, convert: Convert, *args: Any) -> QuickPipeline:
        self._queued.append((args, convert))
        return self

    def zcard(self, name: str) -> QuickPipeline:
        return self._queue(int, "ZCARD", name)

    def zcount(self, name: str, low: float | str, high: float | str) -> QuickPipeline:
        return self._queue(int, "ZCOUNT", name, low, high)

    def scard(self, name: str) -> QuickPipeline:
        return self._queue(int, "SCARD", name)

    def llen(self, name: str) -> QuickPipeline:
        return self._queue(int, "LLEN", name)

    def hgetall(self, name: str) -> QuickPipeline:
        return self._queue(_pairs, "HGETALL", name)

    def hmget(self, name: str, keys: str | list[str], *args: str) -> QuickPipeline:
        return self._queue(_same, "HMGET", name, *([keys] if isinstance(keys, str) else keys), *args)

    def zrange(self, name: str, start: int, end: int, withscores: bool = False) -> QuickPipeline:
        if withscores:
            return self._queue(_scored, "ZRANGE", name, start, end, "WITHSCORES")
        return self._queue(_same, "ZRANGE", name, start, end)

    def __getattr__(self, name: str) -> Any:
        """Any other command: the full client's job (as :meth:`QuickRedis.__getattr__`)."""
        if name.startswith("__"):
            raise AttributeError(name)
        raise QuickFallback(f"redis-py's pipeline {name}")

    def execute(self) -> list[Any]:
        queued, self._queued = self._queued, []
        replies = self._client.execute_batch([args for args, _ in queued])
        return [convert(r) for (_, convert), r in zip(queued, replies, strict=True)]


class QuickScript:
    """redis-py's registered script, for read-only scripts: ``EVALSHA``, else ``EVAL`` (which
    loads it, as redis-py's ``SCRIPT LOAD`` would)."""

    def __init__(self, client: QuickRedis, script: str) -> None:
        self._client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    def __call__(self, keys: list[Any] | None = None, args: list[Any] | None = None) -> Any:
        keys, args = list(keys or []), list(args or [])
        allowed = self._client.read_only_scripts
        if self.script not in allowed or (allowed[self.script] is not None and args[:1] != [allowed[self.script]]):
            raise QuickFallback("a script that may write")
        try:
            return self._client._call("EVALSHA", self.sha, len(keys), *keys, *args)
        except _ReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return self._client._call("EVAL", self.script, len(keys), *keys, *args)


def open_quick(settings: Settings, read_only_scripts: Mapping[str, str | None] | None = None) -> Connection:
    """What :func:`aggregator.connection.open_redis` opens, on the quick client, when nothing needs
    doing first (:class:`QuickFallback` otherwise): the Redis answers, does not evict keys, and —
    for the embedded one — runs, and runs a binary its data's record already names."""
    allowed = {**scripts.READ_ONLY, **(read_only_scripts or {})}
    emb = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        from aggregator.embedded import EmbeddedRedis

        emb = EmbeddedRedis(settings.data_dir)
        url = _embedded_url(emb)
    target = plain(url)
    if target is None:
        raise QuickFallback("a URL the quick client does not handle")
    client = QuickRedis.connect(target, allowed)
    try:
        # What aggregator.connection.check asks, in its order: PING first, which a Redis that
        # cannot write its AOF answers with MISCONF although it still serves reads
        # (tests/adversarial/test_redis.py::test_a_full_disk_under_the_embedded_redis_is_said_at_once).
        if not client.ping():
            raise QuickFallback("PING not answered with PONG")
        policy = client.info("memory").get("maxmemory_policy")
        if policy is not None and policy != "noeviction":
            raise QuickFallback("a Redis that may evict keys")  # redis-py's check says so, once
        if client.info("cluster").get("cluster_enabled") in (1, "1"):
            raise QuickFallback("a Redis Cluster node")  # refused by redis-py's check, in one line
        if emb is not None:
            try:
                if emb.to_record(client.info("server")) is not None:
                    raise QuickFallback("the embedded server's record needs writing")
            except EmbeddedRedisError:
                raise QuickFallback("an embedded server that cannot read its data") from None
    except BaseException:
        client.close()
        raise
    return Connection(cast("redis.Redis", client), url, emb)


def _embedded_url(emb: EmbeddedRedis) -> str:
    """The embedded server's URL if it looks up: its socket and its password exist, and the
    socket's directory passes the checks made before anything is sent through it."""
    if not emb.password_path.exists() or not os.path.exists(emb.socket_path):
        raise QuickFallback("the embedded server is not running")
    try:
        return emb.url
    except (EmbeddedRedisError, OSError):
        raise QuickFallback("a socket directory to refuse") from None
