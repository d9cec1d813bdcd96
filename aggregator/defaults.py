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

# --- live service: watcher, writer, pub/sub, supervisor ---------------------------------------

WATCH_HOT_STEP_MS = 5
"""How often (ms) the file-notification thread looks for new events while files are changing.
watchfiles' default (50 ms step, 1600 ms debounce) would add up to 1.6 s to every append; with a
5 ms step a burst is handed over 5-10 ms after it lands (``scripts/bench_live.py``). Each step
is a wake-up (~1 % of a core at 5 ms), hence the slower idle step below."""

WATCH_IDLE_STEP_MS = 50
"""The same, once nothing has changed for :data:`WATCH_HOT_WINDOW_S`: ~0.1 % of a core when idle,
at the price of 50-100 ms for the first append after a quiet spell."""

WATCH_HOT_WINDOW_S = 120.0
"""Seconds after the last change during which the watcher stays on the fast step."""

WATCH_DEBOUNCE_MS = 20
"""Longest a stream of file events is grouped before the watcher is handed the batch (ms)."""

WATCH_NOTIFY_TIMEOUT_MS = 1000
"""How long one wait for file events lasts before the hint thread re-checks its settings (ms)."""

WATCH_POLL_DELAY_MS = 500
"""Poll interval (ms) with ``agg watch --poll`` (network mounts, WSL, Docker on macOS)."""

WATCH_STAT_HOT_S = 1.0
"""Seconds between stats of recently modified tracked files (catches appends whose file event
was dropped or coalesced)."""

WATCH_STAT_ALL_S = 30.0
"""Seconds between stats of every tracked file."""

WATCH_HOT_FILE_S = 600.0
"""A tracked file modified less than this many seconds ago is stat'ed every :data:`WATCH_STAT_HOT_S`."""

WATCH_RESCAN_S = 120.0
"""Seconds between full walks of the claude dirs for files no event announced."""

WATCH_MISSING_ROOT_S = 5.0
"""Seconds between checks for a claude dir (or its ``projects/``) that does not exist yet."""

STATE_HEARTBEAT_S = 10.0
"""Seconds between rewrites of a service's state file (``agg status`` reads it even when Redis is
down)."""

RETRY_MIN_S = 0.1
"""First wait (s) before retrying Redis after it went away; doubles up to :data:`RETRY_MAX_S`."""

RETRY_MAX_S = 5.0
"""Longest wait (s) between attempts to reach Redis again."""

WRITER_INTERVAL_S = 5.0
"""Default shortest time (s) between two ``current.json`` writes (``agg writer --interval``)."""

WRITER_MESSAGES = 1000
"""Messages ``current.json`` holds at most (DESIGN §5)."""

CURRENT_SCHEMA = 1
"""Version of the ``current.json`` layout; bumped on incompatible changes."""

SUBSCRIBE_CHECK_S = 5.0
"""Seconds without a message after which a subscriber checks the store for entries it missed."""

SEQ_FLOOR_SAVE_S = 1.0
"""Shortest time (s) between saves of the highest seq a process has seen (its state file)."""

SUPERVISOR_STOP_TIMEOUT_S = 30.0
"""Seconds ``agg run`` lets a part finish (commit what it read) after SIGTERM before SIGKILL."""

SUPERVISOR_RESTART_MAX_S = 30.0
"""Longest wait (s) before ``agg run`` restarts a part that keeps crashing."""

SUPERVISOR_HEALTHY_S = 60.0
"""A part that ran this long (s) before exiting is restarted at once (its backoff resets)."""

SUPERVISOR_TICK_S = 0.5
"""Seconds between ``agg run``'s checks of its parts and of the embedded Redis."""
