"""Opening the Redis agg works against: the one at ``--redis-url``, or the embedded server."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from aggregator import defaults
from aggregator.config import Settings
from aggregator.embedded import EmbeddedRedis
from aggregator.errors import AggError, ConfigError, RedisUnavailable, first_line

_SCHEMES = ("redis", "rediss", "unix")

AWAY_TYPES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # includes BusyLoadingError (a restarted Redis loading its AOF)
    redis.TimeoutError,
    redis.ReadOnlyError,  # a replica that has not been promoted yet
    redis.OutOfMemoryError,  # an OOM reply to a plain command (redis-py strips its "OOM" code)
    RedisUnavailable,
    ConnectionError,  # the builtin one, raised by sockets
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
    for code in AWAY_REPLIES:
        i = text.find(code)
        if i >= 0:
            return text[i:]
    return text


def mask_url(url: str) -> str:
    """``url`` with any password (userinfo or ``?password=``) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*")
    masked = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if parts.scheme == "unix" and not netloc:
        masked = masked.replace("unix:", "unix://", 1)  # urlunsplit drops the empty authority
    return masked


def client_from_url(url: str, **options: object) -> redis.Redis:
    """A client for ``url``; raises :class:`ConfigError` if the URL is not a Redis URL."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(f"bad Redis URL {mask_url(url)!r}: scheme must be one of {', '.join(_SCHEMES)}")
    kwargs: dict[str, object] = {
        "socket_timeout": defaults.REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": defaults.REDIS_CONNECT_TIMEOUT_S,
    }
    kwargs.update(options)
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as e:
        raise ConfigError(f"bad Redis URL {mask_url(url)!r}: {e}") from None


@dataclass
class Connection:
    """An open, answering Redis connection and where it came from."""

    client: redis.Redis
    url: str
    """The URL with its password: never print it, print :attr:`masked_url`."""
    embedded: EmbeddedRedis | None = None
    started: bool = False
    """True if opening it started the embedded server."""

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def close(self) -> None:
        self.client.close()


def check(client: redis.Redis, masked: str) -> None:
    """PING ``client``; map every failure to one :class:`RedisUnavailable` line."""
    try:
        client.ping()
    except redis.AuthenticationError:
        raise RedisUnavailable(f"Redis at {masked} refused our password") from None
    except redis.BusyLoadingError:
        raise RedisUnavailable(f"Redis at {masked} is still loading its data; try again") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise RedisUnavailable(f"cannot reach Redis at {masked}: {first_line(e)}") from None
    except redis.RedisError as e:
        raise as_agg_error(e, masked) from None


def open_redis(settings: Settings, *, start: bool = True, **options: object) -> Connection:
    """Connect to ``settings.redis_url``, or to the embedded server (starting it if ``start``)."""
    if settings.redis_url:
        client = client_from_url(settings.redis_url, **options)
        conn = Connection(client, settings.redis_url)
    else:
        emb = EmbeddedRedis(settings.data_dir)
        started = emb.ensure_running() if start else False
        conn = Connection(client_from_url(emb.url, **options), emb.url, emb, started)
    check(conn.client, conn.masked_url)
    return conn
