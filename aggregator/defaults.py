"""Defaults, as named constants with their units in the name.

Every tunable number in agg lives here, with the reason for its value. Options and environment
variables (see :mod:`aggregator.config`) override them.
"""

from __future__ import annotations

NAMESPACE = "agg"
"""Prefix of every key and channel agg owns (RQ keeps its own ``rq:`` keys)."""

CLUSTER_BUCKETS = 16
"""On a Redis Cluster, the store is this many buckets, each a whole store in one hash slot
(``<ns>:{b<n>}:…``); a project's conversations share a bucket (:mod:`aggregator.buckets`). Fixed:
changing it would move projects between buckets."""

BATCH_BYTES = 1 << 20
"""Bytes of complete lines per ingest batch (one body write + one Lua call). 1 MiB keeps the
Lua call well under Redis' 5 s busy threshold while making the per-batch round trips negligible."""

BATCH_LINES = 2000
"""Lines per ingest batch at most; bounds the argument count and run time of one Lua call."""

CURSOR_PREFETCH = 256
"""File cursors read per round trip when syncing many files (a stale one only costs a retry)."""

INGEST_IN_FLIGHT_BATCHES = 8
"""Batches sent to Redis and not yet answered, at most: Redis stores these while the next is read.
Many files are one small batch each; several in flight keep Redis busy between them."""

INGEST_IN_FLIGHT_BYTES = 3 << 20
"""Line bytes in flight at most (3 MiB): about what a socket buffer holds, so sending rarely waits."""

INGEST_SEND_BUFFER_BYTES = 4 << 20
"""Socket send buffer asked for on the ingest connection (4 MiB): a whole batch fits, so sending it
never waits for Redis to finish the previous one. The kernel caps it (``net.core.wmem_max``)."""

READ_CHUNK_BYTES = 1 << 20
"""Bytes read from a transcript per read call; files are streamed, never loaded whole."""

MAX_LINE_BYTES = 64 << 20
"""Longest line agg stores (64 MiB). Longer lines are rejected with their location instead of
being held in memory; real lines reach a few MB (base64 screenshots)."""

MAX_JSON_DEPTH = 1000
"""Nesting deeper than this is rejected as invalid (docs/design.md §3)."""

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

QUICK_REDIS_TIMEOUT_S = 5.0
"""Connect and read timeout of the quick client of ``agg status`` and ``agg usage``
(:mod:`aggregator.quickredis`): past it, the command runs again on redis-py, with its own timeouts."""

PROJECT_BATCH_ENTRIES = 5000
"""Log entries applied per projection step (one Lua call)."""

LONG_CONTEXT_TOKENS = 200_000
"""A response whose prompt (input + cache reads + cache writes) exceeds this many tokens is billed
at a model's long-context rates where it has them (Anthropic's rule for the 1M-context betas)."""

SEARCH_PART_CHARS = 100_000
"""Characters of one text indexed for search at most (a message's words, or its tool calls and
results): a pasted log or a file read whole is found by its first 100,000 characters."""

SEARCH_MAX_TERMS = 64
"""Terms of one search query at most."""

SEARCH_STEP_ENTRIES = 5000
"""Log entries the search index takes in per step (one SQLite transaction with its checkpoint)."""

SEARCH_BUSY_TIMEOUT_S = 60.0
"""Seconds a search waits for another process that is updating the same index file."""

SEARCH_WAL_LIMIT_BYTES = 64 << 20
"""Size the search index's write-ahead log is cut back to after a checkpoint (a rebuild writes a lot)."""

SEARCH_RANK_CANDIDATES = 10_000
"""A query that matches more texts than this ranks (by BM25) only its newest this many: BM25 costs
about a microsecond per match, and a word found in 100,000 texts says little about which is best
(``scripts/bench/search.py`` measures both)."""

SEARCH_LIMIT = 20
"""Hits ``agg search`` shows unless ``--limit`` says otherwise."""

SEARCH_FOLLOW_S = 1.0
"""Seconds ``agg serve``'s search indexer waits between looks at the log (it indexes what came
meanwhile, so a search finds the index caught up or nearly)."""

USAGE_SCAN_COUNT = 5000
"""Fields of a usage tally read per ``HSCAN`` round trip when one conversation's cost is asked
for (the page of one conversation, a live row of the list)."""

REPLAY_CHUNK = 500
"""Events fetched per round trip by ``agg replay``."""

# --- LLM turns (workers/; environment overrides in workers/config.py) --------------------------

TURN_DEBOUNCE_MS = 5_000
"""A conversation's turn starts at least this long after the first change it has not covered:
the events of a burst (Claude Code writes several lines per exchange) share one turn."""

TURN_COOLDOWN_MS = 60_000
"""Least time between two committed turns of one conversation (at most one paid call per minute
for a conversation that keeps changing)."""

TURN_CONCURRENCY = 4
"""Turns queued or running at once, across every worker on every machine."""

TURN_LEASE_MS = 30_000
"""Lifetime of a turn's lease; the holder renews it every third of this. A worker that dies
mid-turn is noticed (and its turn redone) this long after its last renewal."""

TURN_PARK_BASE_MS = 30_000
"""First retry delay of a turn that failed (after the provider retries); doubles each failure."""

TURN_PARK_MAX_MS = 30 * 60_000
"""Longest retry delay of a parked turn."""

TURN_QUEUED_GRACE_MS = 15_000
"""A turn queued this long whose RQ job is no longer waiting (lost between claim and enqueue, or
its worker died before taking the lease) is queued again by the reconciler."""

TURN_DISPATCH_INTERVAL_MS = 200
"""How often each worker's scheduler looks for due turns (one pipelined read when idle)."""

TURN_RECONCILE_INTERVAL_MS = 1_000
"""How often each worker's scheduler looks for expired leases and lost jobs."""

TURN_DISPATCH_BATCH = 200
"""Conversations examined per scheduler step (per list: newly dirty, and due)."""

TURN_DISPATCH_LOCK_MS = 5_000
"""On a Redis Cluster store: how long one scheduler may hold the dispatch lock (on the queue's
Redis) while it claims turns across the buckets; a scheduler that dies holding it delays the
others' dispatch by at most this."""

TURN_BUDGET_TOKENS = 4_000
"""Input tokens of the default turn's prompt at most: previous summary plus the newest messages."""

TURN_MAX_OUTPUT_TOKENS = 512
"""``max_tokens`` of the default turn's call."""

TURN_MESSAGE_MAX_CHARS = 2_000
"""Characters of one message put in a prompt at most (long tool output is cut)."""

TURN_TITLE_MAX_CHARS = 80
"""Longest title kept."""

TURN_SUMMARY_MAX_CHARS = 1_500
"""Longest rolling summary kept (the offline provider keeps the newest part)."""

OFFLINE_REQUEST_CHARS = 100
"""Characters of one user request in the offline provider's summary (its list of requests)."""

TURN_MAX_AGE_DAYS_NETWORK = 2.0
"""With a network provider, conversations whose newest record is older than this get no turn
(a first backfill of thousands of old conversations would otherwise be thousands of paid
calls). ``AGG_TURN_MAX_AGE_DAYS=0`` lifts the limit; the offline provider has none by default."""

TURN_JOB_TIMEOUT_S = 15 * 60
"""RQ job timeout of a turn (it may wait for the shared rate limits)."""

TURN_LIMIT_WAIT_MAX_S = 300.0
"""Longest a turn waits for the shared rate limits before giving its slot back (not a failure)."""

CHARS_PER_TOKEN = 4
"""Token estimate: characters / 4 (used for budgets and the tokens-per-minute limit before the
provider reports the real count)."""

LLM_TIMEOUT_S = 60.0
"""Timeout of one provider request (connect, read, write)."""

LLM_ATTEMPTS = 4
"""Provider requests per turn at most (1 + retries on 429, 5xx, timeouts, malformed answers)."""

LLM_BACKOFF_BASE_S = 1.0
"""First retry delay without ``Retry-After``; doubles per attempt, with jitter."""

LLM_BACKOFF_MAX_S = 30.0
"""Longest retry delay without ``Retry-After``."""

LLM_RETRY_AFTER_MAX_S = 120.0
"""Longest ``Retry-After`` honoured inside a turn; a longer one fails the attempt (and parks)."""

LLM_RPM = 50.0
"""Requests per minute per provider, shared by all workers (network providers)."""

LLM_RPM_BURST = 1
"""Requests allowed back to back before the pace applies; 1 = evenly spaced, so no 60 s window
ever holds more than the limit."""

LLM_TPM = 100_000.0
"""Tokens (input + output) per minute per provider, shared by all workers (network providers)."""

LLM_DAILY_TOKENS = 2_000_000
"""Tokens (input + output) per UTC day, all workers and network providers together; once they are
used, turns wait for the next UTC day (``AGG_LLM_DAILY_TOKENS``; 0 = no cap)."""

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_MODEL = "claude-3-5-haiku-latest"

RQ_WORKER_TTL_S = 60
"""RQ worker registration TTL (a dead worker leaves ``agg status`` ``workers`` within this)."""

RQ_MAINTENANCE_INTERVAL_S = 60
"""RQ registry maintenance interval (RQ's default is 10 minutes); agg's own reconciler, not this,
redoes turns of dead workers."""

RQ_JOB_MONITORING_INTERVAL_S = 10
"""RQ heartbeat interval of a running job."""

RQ_RESULT_TTL_S = 60
"""Seconds RQ keeps a finished turn job (its outcome is in the event log, not the job)."""

RQ_FAILURE_TTL_S = 7 * 24 * 3600
"""Seconds RQ keeps a failed turn job (turns catch their errors; only crashes end up there)."""

RQ_PUBSUB_POLL_S = 1.0
"""How often an RQ worker's command-channel thread wakes (RQ's own: 60 s): a worker stops no later
than this after RQ ends its subscription."""

ACTIVE_MINUTES = 10.0
"""A conversation is ``active`` while its newest record is at most this many minutes old
(``AGG_ACTIVE_MINUTES`` overrides it)."""

MAX_SIDECAR_BYTES = 1 << 20
"""Largest subagent ``.meta.json`` sidecar agg reads (real ones are under 1 KB); larger ones are
recorded as rejections."""

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

WATCH_POLL_DIRS_S = 2.0
"""Seconds between polls of the directories file notifications do not cover (the inotify watch
limit reached, a name that is not UTF-8): a new file there is found within this."""

WATCH_NOTIFY_RESTART_MIN_S = 1.0
"""First wait (s) before file notifications that failed are started again; doubles per failure."""

WATCH_NOTIFY_RESTART_MAX_S = 120.0
"""Longest wait (s) before restarting failed file notifications (the rescans cover meanwhile)."""

WATCH_NOTIFY_HEALTHY_S = 600.0
"""File notifications that ran this long (s) without failing restart at once if they fail."""

WATCH_SKIPPED_SHOWN = 5
"""Skipped paths named in ``agg status`` and the state file (all are counted)."""

SERVICE_CHECK_S = 10.0
"""Seconds between a live part's checks that Redis is usable and the store is still the one it
serves (its identity key): a FLUSHALL or a ``CONFIG SET maxmemory-policy`` is noticed within this
even while no file changes."""

WATCH_MISSING_ROOT_S = 5.0
"""Seconds between checks for a claude dir (or its ``projects/``) that does not exist yet."""

STATE_HEARTBEAT_S = 10.0
"""Seconds between rewrites of a service's state file (``agg status`` reads it even when Redis is
down)."""

RETRY_MIN_S = 0.1
"""First wait (s) before retrying Redis after it went away; doubles up to :data:`RETRY_MAX_S`."""

RETRY_MAX_S = 5.0
"""Longest wait (s) between attempts to reach Redis again."""

CLUSTER_FAILOVER_WAIT_S = 60.0
"""How long (s) ``agg ingest`` on a Redis Cluster waits for a bucket's master to be back (a
replica promoted: Redis' ``cluster-node-timeout``, 15 s by default, plus the election) before it
gives up with one line; the next run continues from the cursors."""

CLUSTER_RETRY_MAX_S = 1.0
"""Longest wait (s) between attempts while a cluster fails a master over: the failover ends at
an instant nobody announces, and each attempt only asks the cluster where the slot is now."""

WRITER_INTERVAL_S = 5.0
"""Default shortest time (s) between two ``current.json`` writes (``agg writer --interval``)."""

WRITER_MESSAGES = 1000
"""Messages ``current.json`` holds at most (docs/design.md §5)."""

CURRENT_SCHEMA = 1
"""Version of the ``current.json`` layout; bumped on incompatible changes."""

SUBSCRIBE_CHECK_S = 5.0
"""Seconds without a message after which a subscriber checks the store for entries it missed."""

SEQ_FLOOR_SAVE_S = 1.0
"""Shortest time (s) between saves of the highest seq a process has seen (its state file)."""

SUPERVISOR_STOP_TIMEOUT_S = 30.0
"""Seconds ``agg run`` lets a part finish (commit what it read) after SIGTERM before SIGKILL."""

SUPERVISOR_RESTART_MIN_S = 0.5
"""First wait (s) before a supervised part that exited is started again; doubles while it keeps failing."""

SUPERVISOR_RESTART_MAX_S = 30.0
"""Longest wait (s) before ``agg run`` restarts a part that keeps crashing."""

SUPERVISOR_HEALTHY_S = 60.0
"""A part that ran this long (s) before exiting is restarted at once (its backoff resets)."""

SUPERVISOR_TICK_S = 0.5
"""Seconds between ``agg run``'s checks of its parts and of the embedded Redis."""

INGEST_PROJECT_POLL_S = 0.05
"""How often (s) ``agg ingest``'s projecting child looks for new log entries once caught up."""

WEB_HOST = "127.0.0.1"
"""Address ``agg serve`` binds by default (this machine only)."""

WEB_PORT = 8765
"""Port ``agg serve`` listens on by default."""

WEB_PAGE_EVENTS = 100
"""Events shown per page of a conversation (earlier ones load on demand)."""

WEB_PAGE_CONVERSATIONS = 200
"""Conversations listed per page of ``agg serve``'s conversation list."""

WEB_SSE_PING_S = 15.0
"""Seconds between keep-alive comments on an idle ``/api/events`` stream."""

WEB_SSE_QUEUE = 1000
"""Envelopes buffered per ``/api/events`` client: a slower client holds its subscription back, and
what Redis drops meanwhile is read from the store (:class:`~aggregator.live.subscribe.Subscription`)."""

WEB_TEXT_CHARS = 20_000
"""Characters of one tool input or result shown on a page before it is cut (the API has it whole)."""

WEB_MARKDOWN_CHARS = 200_000
"""Characters of one message rendered as markdown; longer text is shown as plain preformatted text."""

WEB_STOP_GRACE_S = 2.0
"""Seconds ``agg serve`` waits for open connections (live pages) to close when it stops."""

SEAL_IDLE_S = 3600.0
"""A conversation whose newest record is older than this (s) is sealed: its line bodies are
compressed into chunks (``agg run`` in the background; ``AGG_SEAL_IDLE_S``; ``agg compact --idle``)."""

SEAL_CHUNK_BYTES = 4 * 1024 * 1024
"""Raw line bytes per sealed chunk (at most; one longer line is a chunk of its own): big enough for
zstd to find the repeats between lines, small enough that reading one body decompresses little."""

SEAL_ZSTD_LEVEL = 9
"""zstd level of sealed chunks: sealing runs in the background, reading back is fast at any level."""

SEAL_CHECK_S = 300.0
"""How often (s) ``agg run``'s writer looks for conversations to seal."""

SEAL_TICK_S = 0.5
"""Seconds of sealing the writer does at most per check before it goes back to current.json (the
rest is sealed at the next checks)."""

LOG_KEEP_BATCHES = 10_000
"""Newest log batches kept in the stream (``<ns>:log``) by compaction; older ones the projections
have applied move to archived segments, read back transparently (subscribers resuming from a recent
seq, the projector and the search index read the stream)."""

LOG_SEGMENT_BATCHES = 1000
"""Log batches per archived segment (at most; fewer when they pass SEAL_CHUNK_BYTES)."""
