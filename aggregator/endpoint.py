"""Where agg's Redis is: Redis URLs (masked for display, parsed for the quick client) and the
:class:`Connection` record — importable without redis-py, so that the commands that must start
fast (``agg status``, ``agg usage``: :mod:`aggregator.quickredis`) do not pay for its import.

:mod:`aggregator.connection` re-exports :func:`mask_url` and :class:`Connection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import redis

    from aggregator.embedded import EmbeddedRedis

SCHEMES = ("redis", "rediss", "unix")
"""URL schemes agg accepts for ``--redis-url``."""

DEFAULT_PORT = 6379


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


@dataclass(frozen=True)
class Plain:
    """A Redis reached without TLS and without client options: a unix socket ``path``, or TCP
    ``host`` and ``port``; ``db``, and the credentials to send with ``AUTH``."""

    path: str | None
    host: str
    port: int
    db: int
    username: str | None
    password: str | None


def plain(url: str) -> Plain | None:
    """``url`` as redis-py's ``from_url`` reads it, if it names a plain Redis: ``redis://`` or
    ``unix://`` with no query option but ``password`` and ``db``. None for anything else (TLS,
    client options, a malformed URL): the full client handles those, and says what is wrong."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "unix") or not url.lower().startswith(scheme + "://") or parts.fragment:
        return None
    if set(query) - {"password", "db"} or any(len(v) != 1 for v in query.values()):
        return None
    username = unquote(parts.username) if parts.username else None
    password = query["password"][0] if "password" in query else None
    if parts.password:
        password = unquote(parts.password)  # the userinfo's wins, as in redis-py
    if username and not password:
        return None  # redis-py's handshake differs here; leave it to redis-py
    try:
        db = int(query["db"][0]) if "db" in query else None
        if scheme == "unix":
            if not parts.path:
                return None
            return Plain(unquote(parts.path), "", 0, db or 0, username, password)
        if db is None and parts.path and parts.path != "/":
            db = int(unquote(parts.path).replace("/", ""))
    except ValueError:
        return None
    host = unquote(parts.hostname) if parts.hostname else "localhost"
    return Plain(None, host, port if port is not None else DEFAULT_PORT, db or 0, username, password)


@dataclass
class Connection:
    """An open, answering Redis connection and where it came from."""

    client: redis.Redis
    """redis-py's client, or (:func:`aggregator.quickredis.open_quick`) the quick client."""
    url: str
    """The URL with its password: never print it, print :attr:`masked_url`."""
    embedded: EmbeddedRedis | None = None
    started: bool = False
    """True if opening it started the embedded server."""
    cluster: bool = False
    """True if :attr:`client` is a ``RedisCluster``: the store is split into buckets
    (:mod:`aggregator.buckets`)."""

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def close(self) -> None:
        self.client.close()
