"""Every Redis key and channel name agg uses — this module is the only place that spells them.

Global keys sit directly under the namespace (``agg:…``). Keys of one conversation carry the hash
tag ``{c:<conv>}`` (``agg:{c:<conv>}:…``). On a Redis Cluster every name below is spelled under a
bucket's namespace ``<ns>:{b<n>}`` instead (``agg:{b3}:seq``, ``agg:{b3}:{c:K}:body``): the bucket's
tag comes first and decides the slot, so each script touches one slot (:mod:`aggregator.buckets`).

Layout (type · written by · meaning):

========================== ====== ============ ==================================================
key                        type   written by   meaning
========================== ====== ============ ==================================================
``agg:seq``                string ingest/turns last global ``seq`` handed out
``agg:log``                stream ingest/turns one entry per committed batch, id ``<first seq>-0``:
                                               ``e`` envelopes and ``f`` facts (``\\n``-joined),
                                               ``d`` digests (32 hex chars each), ``file``,
                                               ``project``, ``agent``; ``agg forget`` adds one
                                               entry of type ``agg-forget`` (digest zeros)
``agg:log:patched``        zset   forget       first seqs of the log batches ``agg forget`` rewrote
                                               (score = member): batches that also held entries
                                               of other conversations
``agg:log:patch:<first>``  hash   forget       such a batch, with the fields of a log entry; the
                                               forgotten conversation's entries blanked (envelope
                                               and facts empty, digest zeros): read as the log's
``agg:log:archive``        hash   compaction   the log's older batches, moved out of the stream
                                               in segments: first seq of a segment's first
                                               batch → one zstd frame of its batches, fields
                                               as in the stream (:mod:`aggregator.compaction`)
``agg:log:segments``       zset   compaction   ``<first>:<last>`` (first seqs of a segment's
                                               first and last batches), score = first
``agg:stats``              hash   ingest/turns counters: events, revisions, duplicates, rejected,
                                               lines, conversations, batches, last_ingest_ms,
                                               forgotten (lines dropped by a tombstone), forgets
``agg:convs``              zset   ingest/turns conversation → last seq that touched it
``agg:files``              set    ingest       file ids of every cursor
``agg:file:<fid>``         hash   ingest       cursor of one (host, path): off, tok (token of the
                                               last commit), ino, dev, size, mtime, fp, fplen,
                                               tfp, path, host, conv, project, agent, kind
``agg:rejects``            list   ingest       newest rejection records (JSON), capped
``agg:rejects:seen``       set    ingest       (file, line digest) of every rejection, so a
                                               re-read file does not count a bad line twice
``agg:dirty``              zset   ingest       conversation → time (ms) of its oldest change that
                                               no LLM turn has covered yet (workers/ consume it)
``agg:proj:seq``           string projector    last seq applied to the projections
``agg:proj:lock``          string rebuild      held while ``agg replay --rebuild`` runs
``agg:proj:recent``        zset   projector    the most recent user/assistant messages: member
                                               ``<seq, 15 digits> <JSON [conv, id, role]>``,
                                               score = record time (ms; 0 if none), capped
``agg:proj:changed``       zset   projector    conversation → change mark (1 + the highest mark)
                                               of the last projection step that wrote its hash:
                                               tells the writer which conversations to re-read
``agg:proj:usage:keys``    hash   projector    usage dedupe state: JSON ``[message.id, requestId]``
                                               → JSON ``[conv, project, model, day, input, output,
                                               cache_read, cache_creation, cache_creation_1h,
                                               long]`` (owner, maxima, context tier), then ``1``
                                               if another conversation holds a copy
``agg:proj:usage:total``   hash   projector    input, output, cache_read, cache_creation,
                                               cache_creation_1h, responses
``agg:proj:usage:<tally>`` hash   projector    usage per model and context tier: tally =
                                               ``cells``: JSON ``[conv, model, day, long, name]``;
                                               ``days``: ``[day, model, long, name]``;
                                               ``projects``: ``[project, day, model, long, name]``
                                               → count (name as in usage:total; long = 1 for
                                               prompts over the long-context threshold)
``agg:proj:refs``          hash   projector    uuid → JSON list of references to it not resolved
                                               inside their own conversation (summary leafUuid,
                                               cross-conversation parentUuid, logicalParentUuid)
``agg:proj:projects``      set    projector    project names seen
``agg:proj:pconvs:<P>``    set    projector    conversations with entries in project P
``agg:snapshot``           hash   writer       the last ``current.json`` write: at_ms, seq, path,
                                               host, conversations, messages
``agg:store``              string live parts   the store's identity: a random token set on first
                                               use; gone or changed = the keys were lost without a
                                               reconnect (FLUSHALL, an empty backup restored)
``agg:{c:K}:cur``          hash   ingest/turns event id → digests of its versions, newest last
``agg:{c:K}:tl``           zset   ingest/turns the conversation's timeline: first seq of each log
                                               batch holding its entries (score = member)
``agg:{c:K}:body``         hash   ingest/turns digest → original line bytes (content-addressed)
``agg:{c:K}:meta``         hash   ingest/turns n (last conv_seq), msgs (user/assistant events),
                                               dups, lines (duplicate and all lines read of it)
``agg:{c:K}:chunks``       hash   compaction   sealed bodies: chunk number (1, 2, …) → one zstd
                                               frame of many (digest, line bytes) records
                                               (:mod:`aggregator.compaction`); a sealed digest
                                               is in one chunk and no longer in ``body``
``agg:{c:K}:forgot``       string forget       the tombstone: when ``agg forget`` removed the
                                               conversation (ms); ingest drops its lines dated
                                               then or before (or not dated)
``agg:{c:K}:proj``         hash   projector    the conversation's projection
``agg:turns:due``          zset   workers      conversation → time (ms) its next turn may start
                                               (debounce, cooldown, parking applied)
``agg:turns:queued``       zset   workers      conversation → time (ms) its turn job was queued
``agg:turns:running``      zset   workers      conversation → expiry (ms) of its turn lease
``agg:turns:parked``       zset   workers      conversation → time (ms) its failing turn is retried
``agg:turns:stats``        hash   workers      turn counters: dispatched, committed, skipped,
                                               failed, stale, abandoned, calls, …
``agg:turns:dispatch``     string workers      on a Redis Cluster store, on the queue's Redis: the
                                               lock of the one scheduler dispatching across the
                                               buckets (so the cap of concurrent turns holds)
``agg:limit:<p>:<kind>``   string workers      shared limits of provider p: ``req`` / ``tok``
                                               (GCRA theoretical arrival time, ms), ``pause``
                                               (set after a 429 with ``Retry-After``)
``agg:llm:budget``         hash   workers      the day's LLM use, all workers: day (UTC days since
                                               the epoch), calls, tokens, cap (the last one a
                                               worker used), held, held_at (a refused request)
``agg:{c:K}:turn``         hash   workers      turn state: gen, state, epoch, done, last, fails,
                                               error, error_at, follow, cool_until, park_until,
                                               holder, queued_at, started, committed
``agg:{c:K}:lease``        string workers      ``<epoch>:<token>`` of the turn holding the
                                               conversation, with a TTL (renewed while it runs)
========================== ====== ============ ==================================================

RQ's names (RQ builds its own keys from them): the queue ``agg-turns`` (``<ns>-turns``; RQ keeps
it as ``rq:queue:agg-turns``) and one job per conversation's turn generation,
``agg-turn-<sha1 of namespace and conversation, 20 hex>-<gen>`` (``rq:job:<id>``).

On a Redis Cluster store the turn keys of a conversation (``turn``, ``lease``) and the
``turns:due`` / ``queued`` / ``running`` / ``parked`` / ``stats`` keys are its bucket's
(``<ns>:{b<n>}:…``), next to the log the turn commits to; RQ's keys, the limits
(``agg:limit:…``), the budget (``agg:llm:budget``) and ``agg:turns:dispatch`` are on the queue's
standalone Redis (``AGG_QUEUE_URL``), under the namespace itself. On a single Redis the queue's
Redis is the store's unless ``AGG_QUEUE_URL`` names another.

Channels: ``agg:events`` (every appended event), ``agg:conv:<K>`` (one conversation),
``agg:snapshots`` (after each ``current.json`` write). On a Redis Cluster store the first two are
each bucket's (``agg:{b3}:events``); ``agg:snapshot`` and ``agg:snapshots`` stay the namespace's
own, since one ``current.json`` covers every bucket (plain commands: any slot will do).

RQ keeps its own keys (``rq:…``, :class:`RQKeys`): ``agg status`` reads four of them directly, so
that it need not import RQ (and with it redis-py) to count a queue.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from aggregator import defaults


@dataclass(frozen=True)
class Keys:
    """Key and channel names under one namespace, in the order of the table above."""

    ns: str = defaults.NAMESPACE

    def bucket(self, n: int) -> Keys:
        """The keys of bucket ``n`` of a store on a Redis Cluster: the namespace ``<ns>:{b<n>}``,
        whose hash tag comes first in every key, so a bucket is one slot (:mod:`aggregator.buckets`)."""
        return Keys(f"{self.ns}:{{b{n}}}")

    # --- event store (global) -------------------------------------------------------------
    @property
    def seq(self) -> str:
        return f"{self.ns}:seq"

    @property
    def log(self) -> str:
        return f"{self.ns}:log"

    @property
    def log_archive(self) -> str:
        return f"{self.ns}:log:archive"

    @property
    def log_segments(self) -> str:
        return f"{self.ns}:log:segments"

    @property
    def log_patched(self) -> str:
        return f"{self.ns}:log:patched"

    def log_patch(self, first: int | str) -> str:
        """A log batch rewritten by ``agg forget`` (the stream's entry is deleted)."""
        return f"{self.ns}:log:patch:{first}"

    @property
    def stats(self) -> str:
        return f"{self.ns}:stats"

    @property
    def convs(self) -> str:
        return f"{self.ns}:convs"

    @property
    def files(self) -> str:
        return f"{self.ns}:files"

    def file(self, fid: str) -> str:
        return f"{self.ns}:file:{fid}"

    @property
    def rejects(self) -> str:
        return f"{self.ns}:rejects"

    @property
    def rejects_seen(self) -> str:
        return f"{self.ns}:rejects:seen"

    @property
    def dirty(self) -> str:
        return f"{self.ns}:dirty"

    # --- projections (global) ----------------------------------------------------------------
    @property
    def proj_seq(self) -> str:
        return f"{self.ns}:proj:seq"

    @property
    def proj_lock(self) -> str:
        return f"{self.ns}:proj:lock"

    @property
    def recent(self) -> str:
        return f"{self.ns}:proj:recent"

    @property
    def proj_changed(self) -> str:
        return f"{self.ns}:proj:changed"

    @property
    def usage_keys(self) -> str:
        return f"{self.ns}:proj:usage:keys"

    @property
    def usage_total(self) -> str:
        return f"{self.ns}:proj:usage:total"

    def usage_tally(self, tally: str) -> str:
        """A usage tally (``cells``, ``days``, ``projects``: see :data:`aggregator.projections.TALLIES`)."""
        return f"{self.ns}:proj:usage:{tally}"

    @property
    def refs(self) -> str:
        return f"{self.ns}:proj:refs"

    @property
    def projects(self) -> str:
        return f"{self.ns}:proj:projects"

    def project_convs(self, project: str) -> str:
        return f"{self.ns}:proj:pconvs:{project}"

    # --- live parts -----------------------------------------------------------------------------
    @property
    def snapshot(self) -> str:
        return f"{self.ns}:snapshot"

    @property
    def store_id(self) -> str:
        return f"{self.ns}:store"

    # --- per conversation (event store, projection) ----------------------------------------------
    def conv_prefix(self, conv: str) -> str:
        return f"{self.ns}:{{c:{conv}}}"

    def cur(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:cur"

    def timeline(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:tl"

    def body(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:body"

    def meta(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:meta"

    def chunks(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:chunks"

    def proj(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:proj"

    def forgot(self, conv: str) -> str:
        """The conversation's tombstone (``agg forget``): the forget time, ms."""
        return f"{self.conv_prefix(conv)}:forgot"

    # --- LLM turns (workers/) ----------------------------------------------------------------
    @property
    def turns_due(self) -> str:
        return f"{self.ns}:turns:due"

    @property
    def turns_queued(self) -> str:
        return f"{self.ns}:turns:queued"

    @property
    def turns_running(self) -> str:
        return f"{self.ns}:turns:running"

    @property
    def turns_parked(self) -> str:
        return f"{self.ns}:turns:parked"

    @property
    def turns_stats(self) -> str:
        return f"{self.ns}:turns:stats"

    @property
    def turns_dispatch(self) -> str:
        return f"{self.ns}:turns:dispatch"

    def limit(self, provider: str, kind: str) -> str:
        return f"{self.ns}:limit:{provider}:{kind}"

    @property
    def llm_budget(self) -> str:
        return f"{self.ns}:llm:budget"

    def turn(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:turn"

    def lease(self, conv: str) -> str:
        return f"{self.conv_prefix(conv)}:lease"

    # --- RQ names (RQ builds its keys from them) -------------------------------------------------
    @property
    def turns_queue(self) -> str:
        """The one RQ queue turn jobs go on (RQ keeps it as ``rq:queue:<name>``)."""
        return f"{self.ns}-turns"

    def turn_job_id(self, conv: str, gen: int) -> str:
        """RQ job id of a conversation's turn generation (RQ allows only ``[A-Za-z0-9_-]``; RQ
        keeps the job as ``rq:job:<id>``)."""
        digest = hashlib.sha1(self.ns.encode() + b"\0" + conv.encode("utf-8", "surrogatepass")).hexdigest()[:20]
        return f"agg-turn-{digest}-{gen}"

    # --- channels ----------------------------------------------------------------------------
    @property
    def events_channel(self) -> str:
        return f"{self.ns}:events"

    def conv_channel(self, conv: str) -> str:
        return f"{self.ns}:conv:{conv}"

    @property
    def snapshots_channel(self) -> str:
        return f"{self.ns}:snapshots"


@dataclass(frozen=True)
class RQKeys:
    """The keys of one RQ queue that ``agg status`` counts, spelled as RQ 3 spells them (its prefix
    is ``$RQ_KEY_PREFIX``, default ``rq``); ``tests/unit/test_rq_keys.py`` checks them against RQ's
    own."""

    queue_name: str

    @property
    def prefix(self) -> str:
        return os.environ.get("RQ_KEY_PREFIX", "rq")

    @property
    def queue(self) -> str:
        """list: the queued job ids (``Queue.key``)."""
        return f"{self.prefix}:queue:{self.queue_name}"

    @property
    def started(self) -> str:
        """zset: the running jobs, scored by the time their execution expires (``StartedJobRegistry``)."""
        return f"{self.prefix}:wip:{self.queue_name}"

    @property
    def failed(self) -> str:
        """zset: the failed jobs, scored by the time they expire (``FailedJobRegistry``)."""
        return f"{self.prefix}:failed:{self.queue_name}"

    @property
    def workers(self) -> str:
        """set: the keys of the workers that listen on the queue (``worker_registration``)."""
        return f"{self.prefix}:workers:{self.queue_name}"
