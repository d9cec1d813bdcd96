"""Opening the Redis agg works against: the one at ``--redis-url``, or the embedded server."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from aggregator import defaults
from aggregator.config import Settings
from aggregator.embedded import EmbeddedRedis
from aggregator.errors import ConfigError, RedisUnavailable, first_line

_SCHEMES = ("redis", "rediss", "unix")


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
    except redis.ResponseError as e:
        raise RedisUnavailable(f"Redis at {masked} answered with an error: {e}") from None


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
