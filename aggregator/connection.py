"""Opening the Redis agg works against: the one at ``--redis-url``, or the embedded server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.exceptions

from aggregator import defaults
from aggregator.config import Settings
from aggregator.embedded import EmbeddedRedis
from aggregator.endpoint import SCHEMES as _SCHEMES
from aggregator.endpoint import Connection as Connection  # lives there: no redis-py import
from aggregator.endpoint import mask_url as mask_url
from aggregator.errors import AggError, ConfigError, EvictingRedis, NotRedis, RedisUnavailable, first_line

AWAY_TYPES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # includes BusyLoadingError (a restarted Redis loading its AOF)
    redis.TimeoutError,
    redis.ReadOnlyError,  # a replica that has not been promoted yet
    redis.OutOfMemoryError,  # an OOM reply to a plain command (redis-py strips its "OOM" code)
    RedisUnavailable,
    ConnectionError,  # the builtin one, raised by sockets
    # A Redis Cluster failing a master over (redis-py strips the reply's code from the message):
    redis.exceptions.ClusterDownError,  # CLUSTERDOWN, MASTERDOWN
    redis.exceptions.TryAgainError,  # TRYAGAIN
    redis.exceptions.AskError,  # MOVED (a subclass) and ASK: the slot map changed under us
    redis.exceptions.ClusterError,  # redis-py gave up redirecting ("TTL exhausted")
    redis.exceptions.SlotNotCoveredError,  # no node serves the slot yet
)
"""Exception types that mean "Redis is away or cannot take writes right now"."""

AWAY_REPLIES = (
    "OOM command not allowed",  # maxmemory reached (noeviction): memory may come back
    "MISCONF",  # the AOF or RDB cannot be written (disk full): the disk may come back
    "LOADING",  # still loading its data
    "READONLY",  # a replica
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
)
"""Error replies (also inside a script's error text) that mean the same: wait and retry."""


def is_away(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot serve us *right now* but may later — what the
    long-running parts wait out with backoff instead of exiting — rather than a refusal that
    waiting does not change (a wrong password, an unknown command, a bad argument)."""
    if isinstance(exc, redis.AuthenticationError):
        return False
    if isinstance(exc, AWAY_TYPES):
        return True
    return isinstance(exc, redis.ResponseError) and any(code in str(exc) for code in AWAY_REPLIES)


def as_agg_error(exc: BaseException, masked: str = "Redis") -> AggError:
    """The one-line :class:`AggError` for a redis-py error (the CLI prints it; no traceback)."""
    if isinstance(exc, AggError):
        return exc
    where = f"Redis at {masked}" if masked != "Redis" else "Redis"
    if isinstance(exc, redis.AuthenticationError):
        return RedisUnavailable(f"{where} refused our credentials: {first_line(exc)}")
    if isinstance(exc, redis.BusyLoadingError):
        return RedisUnavailable(f"{where} is still loading its data; try again")
    if isinstance(exc, redis.InvalidResponse):  # an HTTP server at the URL, say
        what = masked if masked != "Redis" else "the server"
        return NotRedis(f"{what} does not speak the Redis protocol ({first_line(exc)}): is the URL right?")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return RedisUnavailable(f"lost the connection to {where}: {first_line(exc)}")
    if isinstance(exc, redis.ResponseError):
        return RedisUnavailable(f"{where} answered with an error: {_reply(exc)}")
    if isinstance(exc, redis.RedisError):
        return RedisUnavailable(f"{where} gave an answer agg cannot use: {first_line(exc)}")
    return AggError(first_line(exc))


def _reply(exc: redis.ResponseError) -> str:
    """The error reply itself, without the script wrapper Redis puts around an error raised in Lua
    (``Error running script (call to f_…): @user_script:128: -OOM command not allowed …``)."""
    text = first_line(exc)
    if isinstance(exc, redis.OutOfMemoryError):
        return f"OOM {text}"
    for code in AWAY_REPLIES:
        i = text.find(code)
        if i >= 0:
            return text[i:]
    return text


NO_EVICTION = "noeviction"
"""The only ``maxmemory-policy`` agg accepts: with any other, Redis may drop a cursor, an event or
its body when memory runs short, and nothing tells agg — the store loses data silently
(``tests/adversarial/test_redis.py::test_ingest_refuses_an_evicting_redis``)."""


def refuse_evicting(policy: str | None, where: str) -> None:
    """Raise :class:`EvictingRedis` unless ``policy`` (``maxmemory_policy`` from ``INFO memory``;
    None where INFO is not allowed: nothing to go by) is ``noeviction``."""
    if policy is not None and policy != NO_EVICTION:
        raise EvictingRedis(
            f"{where} may evict agg's keys (its maxmemory-policy is {policy}) and lose events silently: "
            f"set maxmemory-policy {NO_EVICTION} (CONFIG SET maxmemory-policy {NO_EVICTION}, and in its "
            "config) or give agg another Redis"
        )


def _info_field(raw: Any, name: str) -> str | None:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    for ln in text.splitlines():
        if ln.startswith(name + ":"):
            return ln.split(":", 1)[1].strip()
    return None


def check_policy(conn: Any) -> None:
    """On a freshly connected redis-py ``Connection``: refuse a Redis that may evict keys.

    ``INFO memory`` carries the policy even where ``CONFIG`` is disabled (managed Redis). Runs
    from the connect hooks (:func:`connect_hook`, :meth:`aggregator.seqfloor.SeqFloor.hook`), so
    every new connection checks again: a ``CONFIG SET`` may have changed the policy since
    (``tests/adversarial/test_redis.py::test_a_policy_changed_later_is_refused_on_check_and_on_reconnect``).
    """
    try:
        conn.send_command("INFO", "memory")
        info = conn.read_response()
    except redis.ResponseError:  # INFO not allowed for this user: nothing to go by
        return
    path = getattr(conn, "path", None)
    where = f"Redis at unix://{path}" if path else f"Redis at redis://{conn.host}:{conn.port}"
    refuse_evicting(_info_field(info, "maxmemory_policy"), where)


def connect_hook(conn: Any) -> None:
    """redis-py ``redis_connect_func`` of every client agg makes: the usual handshake, then
    :func:`check_policy`."""
    conn.on_connect()
    check_policy(conn)


def _client_options(hook: Any, options: dict[str, object]) -> dict[str, object]:
    """agg's timeouts and connect hook for a redis-py client, overridden by ``options``."""
    return {
        "socket_timeout": defaults.REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": defaults.REDIS_CONNECT_TIMEOUT_S,
        "redis_connect_func": hook,
        **options,
    }


def client_from_url(url: str, **options: object) -> redis.Redis:
    """A client for ``url``; raises :class:`ConfigError` if the URL is not a Redis URL.

    Every connection it opens runs :func:`connect_hook` (or the ``redis_connect_func`` given,
    which must call :func:`check_policy` too)."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(f"bad Redis URL {mask_url(url)!r}: scheme must be one of {', '.join(_SCHEMES)}")
    try:
        return redis.Redis.from_url(url, **_client_options(connect_hook, options))
    except ValueError as e:
        raise ConfigError(f"bad Redis URL {mask_url(url)!r}: {e}") from None


def check(client: redis.Redis, masked: str) -> bool:
    """PING ``client`` and read its ``maxmemory-policy``; map every failure to one line:
    :class:`RedisUnavailable` (:class:`EvictingRedis` for a Redis that may evict keys) or
    :class:`NotRedis`. Returns whether the server is a Redis Cluster node."""
    try:
        client.ping()
        try:
            policy = client.info("memory").get("maxmemory_policy")
            cluster = client.info("cluster").get("cluster_enabled")
        except redis.ResponseError:  # INFO not allowed for this user: nothing to go by
            policy = cluster = None
    except redis.AuthenticationError:
        raise RedisUnavailable(f"Redis at {masked} refused our password") from None
    except redis.BusyLoadingError:
        raise RedisUnavailable(f"Redis at {masked} is still loading its data; try again") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise RedisUnavailable(f"cannot reach Redis at {masked}: {first_line(e)}") from None
    except redis.RedisError as e:
        raise as_agg_error(e, masked) from None
    refuse_evicting(policy, f"Redis at {masked}")
    return cluster in (1, "1")


def cluster_client(url: str, **options: object) -> Any:
    """A ``RedisCluster`` client for the cluster ``url`` names a node of. Every connection it
    opens to any node (failovers included) runs :func:`check_policy` after redis-py's own
    handshake."""
    from redis.cluster import RedisCluster

    try:
        return RedisCluster.from_url(url, **_client_options(check_policy, options))
    except redis.RedisError as e:
        raise as_agg_error(e, mask_url(url)) from None
    except redis.exceptions.RedisClusterException as e:  # not a RedisError: a cluster being created, say
        raise RedisUnavailable(
            f"the Redis Cluster of {mask_url(url)} is not serving every slot yet: {first_line(e)}"
        ) from None


def open_redis(settings: Settings, *, start: bool = True, **options: object) -> Connection:
    """Connect to ``settings.redis_url``, or to the embedded server (starting it if ``start``)."""
    if settings.redis_url:
        client = client_from_url(settings.redis_url, **options)
        conn = Connection(client, settings.redis_url)
    else:
        emb = EmbeddedRedis(settings.data_dir)
        started = emb.ensure_running() if start else False
        conn = Connection(client_from_url(emb.url, **options), emb.url, emb, started)
    if check(conn.client, conn.masked_url):
        conn.client.close()
        conn.client = cluster_client(conn.url, **options)
        conn.cluster = True
    return conn


QUEUE_NEEDED = (
    "Redis at {where} is a Redis Cluster node: LLM turns need a standalone Redis for their queue "
    "(RQ does not run on a cluster): give one with --queue-url or AGG_QUEUE_URL"
)


def queue_url(settings: Settings, conn: Connection) -> str:
    """The URL of the Redis that holds the turn queue (RQ), the LLM limits and the daily budget:
    ``settings.queue_url``, else the store's own (``conn``'s) — which a Redis Cluster cannot be
    (:class:`ConfigError`)."""
    if settings.queue_url:
        return settings.queue_url
    if conn.cluster:
        raise ConfigError(QUEUE_NEEDED.format(where=conn.masked_url))
    return conn.url


def open_queue(settings: Settings, conn: Connection, **options: object) -> Connection:
    """The connection to the turn queue's Redis (:func:`queue_url`): ``conn`` itself when that is
    the store's Redis (close only a connection that is not ``conn``), else a new one, checked like
    the store's and refused if it is a cluster node."""
    if not settings.queue_url:
        queue_url(settings, conn)  # a cluster store needs a queue of its own
        return conn
    queue = Connection(client_from_url(settings.queue_url, **options), settings.queue_url)
    try:
        if check(queue.client, f"{queue.masked_url} (the turn queue)"):
            raise ConfigError(
                f"the turn queue's Redis at {queue.masked_url} is a Redis Cluster node: "
                "AGG_QUEUE_URL must name a standalone Redis (RQ does not run on a cluster)"
            )
    except BaseException:
        queue.close()
        raise
    return queue
