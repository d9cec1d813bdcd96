"""Defaults, as named constants with their units in the name.

Every tunable number in agg lives here, with the reason for its value. Options and environment
variables (see :mod:`aggregator.config`) override them.
"""

from __future__ import annotations

NAMESPACE = "agg"
"""Prefix of every key and channel agg owns (RQ keeps its own ``rq:`` keys)."""

BATCH_BYTES = 1 << 20
"""Bytes of complete lines per ingest batch (one body write + one Lua call). 1 MiB keeps the
Lua call well under Redis' 5 s busy threshold while making the per-batch round trips negligible."""

BATCH_LINES = 2000
"""Lines per ingest batch at most; bounds the argument count and run time of one Lua call."""

COMMITS_IN_FLIGHT = 2
"""Batches handed to the committer thread before the reader waits: parsing overlaps Redis."""

READ_CHUNK_BYTES = 1 << 20
"""Bytes read from a transcript per read call; files are streamed, never loaded whole."""

MAX_LINE_BYTES = 64 << 20
"""Longest line agg stores (64 MiB). Longer lines are rejected with their location instead of
being held in memory; real lines reach a few MB (base64 screenshots)."""

MAX_JSON_DEPTH = 1000
"""Nesting deeper than this is rejected as invalid (DESIGN §3)."""

FINGERPRINT_BYTES = 4096
"""Bytes hashed at the head of a file, and just before its committed offset, to notice that it
was rewritten or replaced rather than appended to."""

REJECTS_KEPT = 10_000
"""Rejected lines whose details (file, offset, reason, prefix) are kept; all are counted."""

REJECT_PREFIX_BYTES = 200
"""Bytes of a rejected line kept with its rejection record."""

MAX_ID_CHARS = 256
"""Longest ``uuid`` / ``sessionId`` / ``agentId`` taken from a record; longer values are treated as
absent (the line is still stored, under a content-hash id or the file's session)."""

CAS_RETRIES = 20
"""Times a file is re-synchronised after its cursor changed under us (another ingester)."""

EMBEDDED_START_TIMEOUT_S = 30.0
"""Seconds to wait for the embedded redis-server to answer after starting it (AOF load included)."""

EMBEDDED_STOP_TIMEOUT_S = 30.0
"""Seconds to wait for the embedded redis-server to exit after SHUTDOWN."""

REDIS_SOCKET_TIMEOUT_S = 30.0
"""Socket timeout of agg's Redis connections; long enough for a 64 MiB body on a slow link."""

REDIS_CONNECT_TIMEOUT_S = 5.0
"""Seconds to wait for a TCP/unix connection to Redis before reporting it unreachable."""

PROJECT_BATCH_ENTRIES = 5000
"""Log entries applied per projection step (one Lua call)."""

REPLAY_CHUNK = 500
"""Events fetched per round trip by ``agg replay``."""

ACTIVE_MINUTES = 10.0
"""A conversation is ``active`` while its newest record is at most this many minutes old
(``AGG_ACTIVE_MINUTES`` overrides it)."""

MAX_SIDECAR_BYTES = 1 << 20
"""Largest subagent ``.meta.json`` sidecar agg reads (real ones are under 1 KB); larger ones are
recorded as rejections."""
