"""The exceptions agg raises, as one tree::

    AggError                      anything agg reports to a user as one line
    ├── ConfigError               a bad option, URL, path or environment value
    │   └── QueryError            a search query with nothing to search for
    ├── RedisUnavailable          Redis cannot be reached or refused us (auth, OOM, down)
    │   └── EvictingRedis         its maxmemory-policy may evict agg's keys (not noeviction)
    ├── NotRedis                  the server at the URL does not speak the Redis protocol
    ├── EmbeddedRedisError        the embedded redis-server is missing or would not start
    ├── NotFound                  a named conversation (or other object) does not exist
    ├── AlreadyRunning            another agg process already serves this data dir and namespace
    ├── StoreError                the store is in a state agg cannot work with
    │   ├── CursorConflict        a file cursor moved under us (internal: the tailer retries)
    │   └── StoreReset            the store lost its keys under a running process (it resyncs)
    ├── Interrupted               the user pressed Ctrl-C (exit 130); says what was kept
    └── TurnError                 an LLM turn could not be run
        ├── ProviderError         the provider failed or refused (``transient``: worth a retry)
        └── LimitTimeout          the shared limits held a request back (the turn waits: no failure)

Low-level errors (``redis.ConnectionError``, ``OSError``) are mapped to these at module
boundaries, so the CLI catches :class:`AggError` and prints one line instead of a traceback.

Outside the tree, on purpose: :class:`QuickFallback`, control flow that is never shown.
"""

from __future__ import annotations


class AggError(Exception):
    """Base class: a failure agg can explain in one line."""

    exit_code = 1


class ConfigError(AggError):
    """A bad option, URL, path or environment value."""

    exit_code = 2


class QueryError(ConfigError):
    """A search query that cannot be searched (no word in it, too many terms): one line, exit 2."""


class RedisUnavailable(AggError):
    """Redis cannot be reached, or refused the command (auth, OOM, loading)."""

    exit_code = 3


class EvictingRedis(RedisUnavailable):
    """Redis may evict keys (its ``maxmemory-policy`` is not ``noeviction``): a store that loses
    cursors and events silently. Refused on every new connection; waiting is right, since a
    ``CONFIG SET`` can fix it while agg runs."""


class NotRedis(AggError):
    """The server at the URL answered, but not in the Redis protocol (e.g. an HTTP server): a
    wrong URL, which waiting does not fix."""

    exit_code = 3


class EmbeddedRedisError(AggError):
    """The embedded redis-server binary is missing or would not start."""

    exit_code = 3


class NotFound(AggError):
    """A named object (e.g. a conversation) does not exist in the store."""

    exit_code = 4


class AlreadyRunning(AggError):
    """Another agg process (e.g. ``agg watch``) already runs for this data dir and namespace."""

    exit_code = 5


class StoreError(AggError):
    """The store holds something agg cannot work with."""


class CursorConflict(StoreError):
    """A file cursor changed between reading it and committing a batch (another ingester won)."""


class StoreReset(StoreError):
    """The store's identity changed under a running process: its keys were lost without a
    reconnect (FLUSHALL, an empty backup restored). Nothing of the refused batch was written."""


class TurnError(AggError):
    """An LLM turn could not be run (bad turn function result, lost lease, …)."""


class ProviderError(TurnError):
    """The LLM provider failed or refused a request.

    ``transient`` errors (429, 5xx, timeouts, unreachable, malformed answers) are retried with
    backoff, honouring ``retry_after`` (seconds) when the provider sent one; others (400, 401,
    403, 404, …) fail the turn at once. The message never holds the API key.
    """

    def __init__(
        self, message: str, *, transient: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


class LimitTimeout(TurnError):
    """The shared limits did not let a request through in time — the rate limits past the
    turn's deadline, or the daily token budget until the next UTC day. Not a failure: the turn
    gives its slot back and is run again later."""


class Interrupted(AggError):
    """The user interrupted a command (Ctrl-C); the message says what was kept."""

    exit_code = 130


class QuickFallback(Exception):
    """The quick client of ``agg status`` and ``agg usage`` (:mod:`aggregator.quickredis`) cannot
    answer — a command it does not send, an error reply, a lost connection, a Redis that is not
    ready — so the command runs again on redis-py (:func:`cli.quick.run_quick`). Never shown to a
    user, and deliberately not an :class:`AggError` nor a redis-py error, so that no handler of
    those on the way takes it for one."""


def first_line(e: BaseException | None) -> str:
    """The first line of an error's text, at most 200 characters (its type's name if it has none),
    for one-line messages and logs."""
    if e is None:
        return "unknown"
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
