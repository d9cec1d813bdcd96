"""The Lua scripts of the turn pipeline, as documented constants (see ``aggregator/scripts.py``).

A conversation's turn state lives in its ``turn`` hash (``gen``, ``state``, ``epoch``, ``done``,
``last``, ``fails``, ``error``, ``error_at``, ``follow``, ``cool_until``, ``park_until``,
``holder``, ``queued_at``, ``started``, ``committed``) and its
``lease`` string; the global zsets ``turns:due`` / ``queued`` / ``running`` / ``parked`` index
conversations by state so that nothing scans every conversation. Every transition is one of the
scripts below, so the hash and the zsets always agree::

    dirty (ingest) ──DISPATCH──► due ──DISPATCH──► queued ──ACQUIRE──► running ──COMMIT──► idle
                                  ▲                  ▲                     │ ──RELEASE skip──► idle
                                  │                  └────REDO (lease expired, worker dead)
                                  └──────────────── RELEASE fail (parked) / abort

Fencing: ACQUIRE increments the conversation's ``epoch`` and stores ``<epoch>:<token>`` in the
lease; COMMIT and RELEASE act only if the lease still holds exactly that value and the hash still
has that epoch, so a worker that was paused, partitioned or killed and retried can never commit
twice or over a newer turn (``tests/contract/test_turn_scripts.py``, ``tests/process/test_workers.py``).

All times are Redis ``TIME`` (ms), so workers on machines with skewed clocks agree. Like INGEST,
DISPATCH and COMMIT touch the store's keys next to per-conversation ones: on a Redis Cluster they
run per bucket (:mod:`aggregator.buckets`), whose keys — the conversation's turn state and the
bucket's ``turns:*`` zsets and log — share one slot.
"""

from __future__ import annotations

from collections.abc import Sequence

from aggregator.scripts import ScriptCall, counted

_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
"""

DISPATCH = (
    r"""
-- Move newly dirty conversations into the schedule and claim the due ones, up to the shared cap
-- of concurrent turns. A conversation that is due while its turn is queued or running gets the
-- ``follow`` flag instead: when that turn ends it is scheduled once more (one follow-up turn for
-- a whole burst).
--
-- KEYS[1] dirty    zset  conversation -> time (ms) of its oldest change not covered (ingest)
-- KEYS[2] due      zset  conversation -> not-before (ms)
-- KEYS[3] queued   zset  conversation -> queued at (ms)
-- KEYS[4] running  zset  conversation -> lease expiry (ms)
-- KEYS[5] stats    hash  turn counters
-- KEYS[6..] turns        turn hash of each conversation i (position 5 + i)
--
-- ARGV[1] debounce_ms    ARGV[2] cap  of concurrent turns
-- ARGV[3] burst  '1' = claim every scheduled conversation now (no debounce, no cooldown) that
--         is not parked
-- ARGV[4] convs  n, then n x (conversation, '1' if it was read from dirty else '0')
--
-- Returns {conv, gen, conv, gen, ...}: the claimed conversations (state 'queued', new gen).
"""
    + _NOW
    + r"""
local debounce, cap, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local n = tonumber(ARGV[4])
local marks = 0
for i = 1, n do
  local conv = ARGV[3 + 2 * i]
  if ARGV[4 + 2 * i] == '1' then
    local s = redis.call('ZSCORE', KEYS[1], conv)
    if s then
      redis.call('ZREM', KEYS[1], conv)
      local h = redis.call('HMGET', KEYS[5 + i], 'cool_until', 'park_until')
      local nb = math.max(tonumber(s) + debounce, tonumber(h[1] or '0'), tonumber(h[2] or '0'))
      -- LT: a conversation already scheduled keeps its earlier time (its debounce started earlier)
      redis.call('ZADD', KEYS[2], 'LT', nb, conv)
      marks = marks + 1
    end
  end
end
if marks > 0 then redis.call('HINCRBY', KEYS[5], 'marks', marks) end
local avail = cap - redis.call('ZCARD', KEYS[3]) - redis.call('ZCARD', KEYS[4])
local out = {}
for i = 1, n do
  local conv = ARGV[3 + 2 * i]
  local s = redis.call('ZSCORE', KEYS[2], conv)
  if s then
    local key = KEYS[5 + i]
    local h = redis.call('HMGET', key, 'state', 'cool_until', 'park_until')
    local park = tonumber(h[3] or '0')
    local wait = math.max(tonumber(s), burst and 0 or tonumber(h[2] or '0'), park)
    if burst and park <= now then wait = 0 end
    if wait > now then
      if wait > tonumber(s) then redis.call('ZADD', KEYS[2], wait, conv) end
    elseif h[1] == 'queued' or h[1] == 'running' then
      redis.call('ZREM', KEYS[2], conv)
      redis.call('HSET', key, 'follow', 1)
      redis.call('HINCRBY', KEYS[5], 'followups', 1)
    elseif avail > 0 then
      redis.call('ZREM', KEYS[2], conv)
      local gen = redis.call('HINCRBY', key, 'gen', 1)
      redis.call('HSET', key, 'state', 'queued', 'queued_at', now)
      redis.call('ZADD', KEYS[3], now, conv)
      redis.call('HINCRBY', KEYS[5], 'dispatched', 1)
      avail = avail - 1
      out[#out + 1] = conv
      out[#out + 1] = gen
    end
  end
end
return out
"""
)


def dispatch_call(
    *,
    dirty: str,
    due: str,
    queued: str,
    running: str,
    stats: str,
    turns: Sequence[str],
    debounce_ms: int,
    cap: int,
    burst: str,
    convs: Sequence[tuple[bytes, str]],
) -> ScriptCall:
    """KEYS and ARGV of one :data:`DISPATCH` call."""
    return ScriptCall(
        DISPATCH, [dirty, due, queued, running, stats, *turns], [debounce_ms, cap, burst, *counted(convs)]
    )


ACQUIRE = (
    r"""
-- Take the lease of a queued turn: only the job of the conversation's current generation may,
-- and only while no lease exists. Increments the fencing epoch. Everything ingested so far is
-- about to be read by this turn, so the conversation's pending marks (dirty, due, follow) are
-- cleared: only changes after this point ask for another turn.
--
-- KEYS[1] turn hash   KEYS[2] lease   KEYS[3] queued   KEYS[4] running   KEYS[5] stats
-- KEYS[6] dirty   KEYS[7] due
-- ARGV[1] gen  of the job   ARGV[2] token  random   ARGV[3] lease_ms   ARGV[4] conv
-- ARGV[5] holder (host:pid, for people and tests)
--
-- Returns {'ok', epoch, done, last} or {'stale'} (nothing written but a counter).
"""
    + _NOW
    + r"""
local h = redis.call('HMGET', KEYS[1], 'gen', 'state')
if h[1] ~= ARGV[1] or h[2] ~= 'queued' or redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'stale_jobs', 1)
  return {'stale'}
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], epoch .. ':' .. ARGV[2], 'PX', ttl)
redis.call('HSET', KEYS[1], 'state', 'running', 'holder', ARGV[5], 'started', now)
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], now + ttl, ARGV[4])
local absorbed = redis.call('ZREM', KEYS[6], ARGV[4]) + redis.call('ZREM', KEYS[7], ARGV[4])
  + redis.call('HDEL', KEYS[1], 'follow')
if absorbed > 0 then redis.call('HINCRBY', KEYS[5], 'absorbed', 1) end
local d = redis.call('HMGET', KEYS[1], 'done', 'last')
return {'ok', epoch, d[1] or '0', d[2] or ''}
"""
)


def acquire_call(
    *,
    turn: str,
    lease: str,
    queued: str,
    running: str,
    stats: str,
    dirty: str,
    due: str,
    gen: int,
    token: str,
    lease_ms: int,
    conv: str,
    holder: str,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`ACQUIRE` call."""
    return ScriptCall(ACQUIRE, [turn, lease, queued, running, stats, dirty, due], [gen, token, lease_ms, conv, holder])


RENEW = (
    r"""
-- Extend a lease that the caller still holds.
--
-- KEYS[1] lease   KEYS[2] running
-- ARGV[1] value  the lease's (<epoch>:<token>)   ARGV[2] lease_ms   ARGV[3] conv
--
-- Returns 1 if renewed, 0 if the lease is no longer the caller's.
"""
    + _NOW
    + r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)


def renew_call(
    *,
    lease: str,
    running: str,
    value: str,
    lease_ms: int,
    conv: str,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`RENEW` call."""
    return ScriptCall(RENEW, [lease, running], [value, lease_ms, conv])


# Shared tail of COMMIT and RELEASE: the lease is gone, the conversation is no longer running;
# schedule the follow-up turn a burst asked for (ingest marks during the turn), else nothing.
_END_TURN = r"""
local function end_turn(turn, lease, running, due, conv, at)
  redis.call('DEL', lease)
  redis.call('ZREM', running, conv)
  redis.call('HDEL', turn, 'holder')
  if redis.call('HGET', turn, 'follow') then
    redis.call('HDEL', turn, 'follow')
    redis.call('ZADD', due, 'LT', at, conv)
  end
end
"""

COMMIT = (
    r"""
-- Commit a turn's result as an event of its conversation, fenced by the lease, and end the turn.
--
-- The event is appended exactly as INGEST (aggregator/scripts.py) appends a line, and the two
-- must stay in step: global seq from max(seq, stats.log_last), conv_seq from meta.n, body under
-- its digest, dedupe hash cur, one XADD to the log with id <seq>-0 and fields e/d/f/file/
-- project/agent, timeline member = score = seq, convs score, stats.events, log_last, PUBLISH of
-- the envelope on both channels. It does NOT mark the conversation dirty: a turn's own event
-- never asks for another turn.
-- tests/store/test_turns.py::test_turn_event_has_the_shape_of_an_ingested_one checks that a turn
-- event cannot be told apart from an ingested one.
--
-- KEYS[1] seq  KEYS[2] log  KEYS[3] stats  KEYS[4] convs
-- KEYS[5] cur  KEYS[6] tl  KEYS[7] body  KEYS[8] meta          (of the conversation)
-- KEYS[9] turn hash  KEYS[10] lease  KEYS[11] running  KEYS[12] due  KEYS[13] parked
-- KEYS[14] turn_stats
--
-- ARGV[1] value  the lease's   ARGV[2] epoch   ARGV[3] conv   ARGV[4] conv_json  (the
-- conversation as JSON)   ARGV[5] event_id   ARGV[6] digest   ARGV[7] raw  record bytes
-- ARGV[8] tail  envelope tail (id, type, ts, agent as a JSON fragment)   ARGV[9] facts  JSON
-- ARGV[10] file  log: file   ARGV[11] project  log: project   ARGV[12] agent  log: agent
-- ARGV[13] events_channel   ARGV[14] conv_channel_prefix
-- ARGV[15] upto_seq  last seq the turn saw   ARGV[16] result  the turn's (JSON)
-- ARGV[17] cooldown_ms
--
-- Returns {'ok', seq, conv_seq} · {'already'} (this epoch committed before: a retried call)
--       · {'stale'} (lease lost: nothing written but a counter)
"""
    + _NOW
    + _END_TURN
    + r"""
if redis.call('GET', KEYS[10]) ~= ARGV[1] or redis.call('HGET', KEYS[9], 'epoch') ~= ARGV[2] then
  if redis.call('HGET', KEYS[9], 'committed') == ARGV[2] then return {'already'} end
  redis.call('HINCRBY', KEYS[14], 'stale', 1)
  return {'stale'}
end
if redis.call('HEXISTS', KEYS[5], ARGV[5]) == 1 then
  return redis.error_reply('turn event id ' .. ARGV[5] .. ' exists')
end
local base = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'),
                      tonumber(redis.call('HGET', KEYS[3], 'log_last') or '0'))
local seq = base + 1
redis.call('SET', KEYS[1], seq)
local cs = redis.call('HINCRBY', KEYS[8], 'n', 1)
redis.call('HSET', KEYS[7], ARGV[6], ARGV[7])
redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
local env = '{"seq":' .. seq .. ',"conv":' .. ARGV[4] .. ',"conv_seq":' .. cs .. ',' ..
  ARGV[8] .. ',"revision":false}'
redis.call('PUBLISH', ARGV[13], env)
redis.call('PUBLISH', ARGV[14] .. ARGV[3], env)
redis.call('ZADD', KEYS[6], seq, seq)
redis.call('ZADD', KEYS[4], seq, ARGV[3])
redis.call('XADD', KEYS[2], seq .. '-0', 'e', env, 'd', ARGV[6], 'f', ARGV[9],
  'file', ARGV[10], 'project', ARGV[11], 'agent', ARGV[12])
redis.call('HSET', KEYS[3], 'log_last', seq)
redis.call('HINCRBY', KEYS[3], 'events', 1)

local cool = now + tonumber(ARGV[17])
redis.call('HSET', KEYS[9], 'done', ARGV[15], 'last', ARGV[16], 'committed', ARGV[2], 'fails', 0,
  'state', 'idle', 'cool_until', cool)
redis.call('HDEL', KEYS[9], 'error', 'error_at', 'park_until')
redis.call('ZREM', KEYS[13], ARGV[3])
end_turn(KEYS[9], KEYS[10], KEYS[11], KEYS[12], ARGV[3], cool)
redis.call('HINCRBY', KEYS[14], 'committed', 1)
return {'ok', seq, cs}
"""
)


def commit_call(
    *,
    seq: str,
    log: str,
    stats: str,
    convs: str,
    cur: str,
    tl: str,
    body: str,
    meta: str,
    turn: str,
    lease: str,
    running: str,
    due: str,
    parked: str,
    turn_stats: str,
    value: str,
    epoch: int,
    conv: str,
    conv_json: bytes,
    event_id: str,
    digest: str,
    raw: bytes,
    tail: bytes,
    facts: bytes,
    file: str,
    project: str,
    agent: str,
    events_channel: str,
    conv_channel_prefix: str,
    upto_seq: int,
    result: bytes,
    cooldown_ms: int,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`COMMIT` call."""
    return ScriptCall(
        COMMIT,
        [seq, log, stats, convs, cur, tl, body, meta, turn, lease, running, due, parked, turn_stats],
        [
            value,
            epoch,
            conv,
            conv_json,
            event_id,
            digest,
            raw,
            tail,
            facts,
            file,
            project,
            agent,
            events_channel,
            conv_channel_prefix,
            upto_seq,
            result,
            cooldown_ms,
        ],
    )


RELEASE = (
    r"""
-- End a turn without an event, fenced by the lease.
--
-- KEYS[1] turn hash  KEYS[2] lease  KEYS[3] running  KEYS[4] due  KEYS[5] parked  KEYS[6] stats
-- ARGV[1] value  the lease's   ARGV[2] epoch   ARGV[3] conv   ARGV[4] mode:
--   'skip'     nothing to do (no new messages, or the turn function returned nothing);
--              done, if not '', is the last seq it saw (no later turn needs to read it again)
--   'skip_old' the conversation is older than the age limit: nothing is recorded as seen
--   'fail'     the turn failed: park it with the error text, retry after park_base_ms
--              doubling per consecutive failure up to park_max_ms
--   'abort'    the worker is shutting down or gave up waiting: schedule it again now
-- ARGV[5] done   ARGV[6] error   ARGV[7] park_base_ms   ARGV[8] park_max_ms
--
-- Returns {'ok'} · {'parked', fails, retry_at} · {'stale'}
"""
    + _NOW
    + _END_TURN
    + r"""
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[6], 'stale', 1)
  return {'stale'}
end
local mode, conv = ARGV[4], ARGV[3]
if mode == 'fail' then
  local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
  local delay = math.floor(math.min(tonumber(ARGV[8]), tonumber(ARGV[7]) * 2 ^ (fails - 1)))
  local at = now + delay
  redis.call('HSET', KEYS[1], 'state', 'parked', 'error', ARGV[6], 'error_at', now, 'park_until', at)
  redis.call('HDEL', KEYS[1], 'follow')
  redis.call('ZADD', KEYS[5], at, conv)
  redis.call('ZADD', KEYS[4], at, conv)
  end_turn(KEYS[1], KEYS[2], KEYS[3], KEYS[4], conv, at)
  redis.call('HINCRBY', KEYS[6], 'failed', 1)
  return {'parked', fails, at}
end
if mode == 'skip' and ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'done', ARGV[5]) end
redis.call('HSET', KEYS[1], 'state', 'idle')
if mode == 'abort' then redis.call('HSET', KEYS[1], 'follow', 1) end
end_turn(KEYS[1], KEYS[2], KEYS[3], KEYS[4], conv, now)
redis.call('HINCRBY', KEYS[6], mode == 'abort' and 'aborted' or (mode == 'skip_old' and 'skipped_old' or 'skipped'), 1)
return {'ok'}
"""
)


def release_call(
    *,
    turn: str,
    lease: str,
    running: str,
    due: str,
    parked: str,
    stats: str,
    value: str,
    epoch: int,
    conv: str,
    mode: str,
    done: int | str,
    error: str,
    park_base_ms: int,
    park_max_ms: int,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`RELEASE` call."""
    return ScriptCall(
        RELEASE,
        [turn, lease, running, due, parked, stats],
        [value, epoch, conv, mode, done, error, park_base_ms, park_max_ms],
    )


REDO = (
    r"""
-- Reconciler: a running turn whose lease expired (its worker died or stalled) is queued again
-- under a new generation; the old job, if it ever runs or commits, is stale.
--
-- KEYS[1] turn hash  KEYS[2] lease  KEYS[3] running  KEYS[4] queued  KEYS[5] stats
-- ARGV[1] conv
--
-- Returns the new gen, or 0 if the turn is alive (or no longer running).
"""
    + _NOW
    + r"""
local s = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not s then return 0 end
local pttl = redis.call('PTTL', KEYS[2])
if pttl > 0 then
  redis.call('ZADD', KEYS[3], now + pttl, ARGV[1])
  return 0
end
if tonumber(s) > now then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'state', 'queued', 'queued_at', now)
redis.call('HDEL', KEYS[1], 'holder')
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('HINCRBY', KEYS[5], 'abandoned', 1)
return gen
"""
)


def redo_call(
    *,
    turn: str,
    lease: str,
    running: str,
    queued: str,
    stats: str,
    conv: str | bytes,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`REDO` call."""
    return ScriptCall(REDO, [turn, lease, running, queued, stats], [conv])


REQUEUE = (
    r"""
-- Reconciler: a queued turn whose RQ job is gone (lost between claim and enqueue, finished
-- without taking the lease, or its id was taken) gets a new generation, to be enqueued again.
--
-- KEYS[1] turn hash  KEYS[2] queued  KEYS[3] stats
-- ARGV[1] conv   ARGV[2] gen  the caller saw   ARGV[3] grace_ms  (queued at least this long)
--
-- Returns the new gen, or 0 if the turn moved on meanwhile.
"""
    + _NOW
    + r"""
local h = redis.call('HMGET', KEYS[1], 'state', 'gen')
if h[1] ~= 'queued' or h[2] ~= ARGV[2] then return 0 end
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s or tonumber(s) > now - tonumber(ARGV[3]) then return 0 end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'queued_at', now)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HINCRBY', KEYS[3], 'requeued', 1)
return gen
"""
)


def requeue_call(
    *,
    turn: str,
    queued: str,
    stats: str,
    conv: str,
    gen: int,
    grace_ms: int,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`REQUEUE` call."""
    return ScriptCall(REQUEUE, [turn, queued, stats], [conv, gen, grace_ms])


LIMIT = r"""
-- Shared rate limits of one provider: requests and tokens per minute, each a GCRA (generic cell
-- rate algorithm: a token bucket kept as one "theoretical arrival time"), plus a pause set after
-- the provider answered 429 with Retry-After. A request is let through only if both limits
-- allow it; otherwise nothing changes and the caller is told how long to wait.
--
-- KEYS[1] req  TAT (ms)   KEYS[2] tok  token TAT (ms)   KEYS[3] pause  (TTL = time left)
-- ARGV[1] mode: 'take' · 'adjust' (tokens only, always applied: the amount may be negative,
--         the correction from the estimate to the real count) · 'pause' (amount = ms)
-- ARGV[2] req_ms  ms per request (0 = no limit)   ARGV[3] req_burst  request burst
-- ARGV[4] tok_ms  ms per token (0 = no limit)     ARGV[5] tok_burst  token burst
-- ARGV[6] amount  tokens (or ms)
--
-- In any interval of t ms the let-through requests number at most burst + t / (ms per request).
-- Returns {1, 0} (go) or {0, wait ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local mode = ARGV[1]
local function tat(key) return math.max(tonumber(redis.call('GET', key) or '0'), now) end
local function store(key, v) redis.call('SET', key, string.format('%.3f', v), 'PX', math.ceil(v - now) + 1000) end
if mode == 'pause' then
  local ms = math.ceil(tonumber(ARGV[6]))
  if redis.call('PTTL', KEYS[3]) < ms then redis.call('SET', KEYS[3], 1, 'PX', ms) end
  return {1, 0}
end
local ti = tonumber(ARGV[4])
if mode == 'adjust' then
  if ti > 0 then store(KEYS[2], math.max(tat(KEYS[2]) + tonumber(ARGV[6]) * ti, now)) end
  return {1, 0}
end
local pause = redis.call('PTTL', KEYS[3])
if pause > 0 then return {0, pause} end
local wait = 0
local ri, rb = tonumber(ARGV[2]), tonumber(ARGV[3])
local new_r, new_t
if ri > 0 then
  new_r = tat(KEYS[1]) + ri
  wait = math.max(wait, new_r - rb * ri - now)
end
if ti > 0 then
  local tb = tonumber(ARGV[5])
  new_t = tat(KEYS[2]) + math.min(tonumber(ARGV[6]), tb) * ti
  wait = math.max(wait, new_t - tb * ti - now)
end
if wait > 0 then return {0, math.ceil(wait)} end
if ri > 0 then store(KEYS[1], new_r) end
if ti > 0 then store(KEYS[2], new_t) end
return {1, 0}
"""


def limit_call(
    *,
    req: str,
    tok: str,
    pause: str,
    mode: str,
    req_ms: float,
    req_burst: int,
    tok_ms: float,
    tok_burst: int,
    amount: float,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`LIMIT` call."""
    return ScriptCall(LIMIT, [req, tok, pause], [mode, req_ms, req_burst, tok_ms, tok_burst, amount])


BUDGET = (
    r"""
-- The daily token budget of paid turns, shared by every worker: what today's requests used,
-- against a cap. The day is Redis TIME's UTC day, so workers with skewed clocks agree; the hash
-- starts over when the day it holds is not today.
--
-- KEYS[1] budget  hash: day (UTC days since the epoch), calls, tokens, cap (the last cap a
--         worker passed), held (estimate of the last request refused today; 0 once one fits),
--         held_at
-- ARGV[1] mode:
--   'take'    one request estimated at `tokens`: counted if today's tokens + `tokens` fit
--             the cap, else refused (and remembered as held: turns wait for the next day)
--   'adjust'  add `tokens` (may be negative: the correction from the estimate to the
--             provider's count) — only if the hash still holds `day`, the request's day
--   'peek'    nothing written
-- ARGV[2] cap  tokens per UTC day (0 = no cap; -1 with 'peek': the cap the workers last passed)
-- ARGV[3] tokens   ARGV[4] day  (adjust)
--
-- Returns {ok (1 taken / 0 refused or exhausted), day, calls, tokens, cap}
-- (for 'peek' and 'adjust', ok = 0 when the cap is used up: no request would fit today).
"""
    + _NOW
    + r"""
local day = math.floor(now / 86400000)
local h = redis.call('HMGET', KEYS[1], 'day', 'calls', 'tokens', 'held', 'cap')
local mode, cap, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3] or '0')
local calls, tokens, held = 0, 0, 0
if tonumber(h[1] or '-1') == day then
  calls, tokens, held = tonumber(h[2] or '0'), tonumber(h[3] or '0'), tonumber(h[4] or '0')
end
if mode == 'peek' and cap < 0 then cap = tonumber(h[5] or '0') end
local function full() return cap > 0 and (tokens >= cap or (held > 0 and tokens + held > cap)) end
if mode == 'take' then
  if cap > 0 and tokens + n > cap then
    redis.call('HSET', KEYS[1], 'day', day, 'calls', calls, 'tokens', tokens, 'held', n, 'held_at', now,
      'cap', cap)
    return {0, day, calls, tokens, cap}
  end
  calls, tokens = calls + 1, tokens + n
  redis.call('HSET', KEYS[1], 'day', day, 'calls', calls, 'tokens', tokens, 'held', 0, 'cap', cap)
  return {1, day, calls, tokens, cap}
end
if mode == 'adjust' and tonumber(h[1] or '-1') == day and tonumber(ARGV[4]) == day then
  tokens = math.max(0, tokens + n)
  redis.call('HSET', KEYS[1], 'tokens', tokens)
end
return {full() and 0 or 1, day, calls, tokens, cap}
"""
)


def budget_call(
    *,
    budget: str,
    mode: str,
    cap: int,
    tokens: int,
    day: int,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`BUDGET` call."""
    return ScriptCall(BUDGET, [budget], [mode, cap, tokens, day])


READ_ONLY: dict[str, str | None] = {BUDGET: "peek"}
"""Calls of these scripts that write nothing (script → the first argument that makes a call
read-only), which the quick client of ``agg status`` may run (:data:`aggregator.scripts.READ_ONLY`;
``tests/contract/test_read_only_scripts.py``)."""
