"""The Lua scripts agg runs in Redis, as documented constants.

A Redis that forgot a script (restart, failover, ``SCRIPT FLUSH``) recovers by itself: most
scripts are registered with redis-py's :meth:`redis.Redis.register_script`, which calls EVALSHA
and on NOSCRIPT loads the script and retries; the ingest stream (``CommitStream``) and
``SEQ_FLOOR`` send EVAL with the script's text, which Redis cannot refuse
(``tests/store/test_corpus.py::test_script_flush_recovers``).

Scripts never raise after their first write: every precondition (cursor token, lock token)
is checked first, because Redis does not roll back a script that fails half-way.

Each script's header names its positions (``KEYS[n] name`` / ``ARGV[n] name``), and next to it
a ``<script>_call`` function with one keyword parameter per position packs them into a
:class:`ScriptCall`: callers name each value instead of counting list positions, and
``tests/unit/test_script_calls.py`` checks that every header and its function agree (names,
order, positions). Plain functions, not dataclasses: creating sixteen dataclasses would cost
every ``agg`` command ~20 ms of start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ScriptCall:
    """The KEYS and ARGV of one call of a script, built by the ``*_call`` function next to it."""

    __slots__ = ("args", "keys", "script")

    def __init__(self, script: str, keys: list[str], args: list[Any]) -> None:
        self.script = script
        """The Lua text."""
        self.keys = keys
        self.args = args


def counted(pairs: Sequence[tuple[Any, Any]]) -> list[Any]:
    """``pairs`` as a script takes them: their number N, then N x (a, b)."""
    out: list[Any] = [len(pairs)]
    for a, b in pairs:
        out += (a, b)
    return out


INGEST = r"""
-- Commit one batch of lines read from one file, atomically: dedupe, append entries, assign
-- seq / conv_seq, record rejections, advance the file cursor by compare-and-set, count, and
-- PUBLISH each new entry's envelope. The raw line bytes are NOT passed here: the caller has
-- already written them, content-addressed, to the conversations' body hashes. Per-line values
-- arrive packed in a few arguments (not six arguments per line) to keep argument handling cheap.
--
-- workers/scripts.py COMMIT appends an LLM turn's result the same way (seq / log_last guard,
-- conv_seq, body, cur, one XADD with the same fields, tl, convs, stats, PUBLISH): a change to
-- how this script writes an entry must be made there too (tests/store/test_turns.py::
-- test_turn_event_has_the_shape_of_an_ingested_one compares the two).
--
-- KEYS[1] seq        string  global sequence counter
-- KEYS[2] log        stream  global log, one entry per batch, id <first seq>-0
-- KEYS[3] stats      hash    counters
-- KEYS[4] cursor     hash    this file's cursor
-- KEYS[5] convs      zset    conversation -> last seq
-- KEYS[6] files      set     file ids
-- KEYS[7] rejects    list    rejection records, newest first, capped
-- KEYS[8] rejseen    set     rejection dedupe members
-- KEYS[9] dirty      zset    conversation -> time (ms) of its oldest change no turn has seen yet
-- KEYS[10..] conv_keys       5 per conversation i (from 0): cur (hash) at 10+5i, tl (zset) at
--                            11+5i, meta (hash) at 12+5i, body (hash) at 13+5i, forgot (string,
--                            the tombstone: forget time in ms) at 14+5i
-- KEYS[#KEYS] store  string  the store's identity token (the last key)
--
-- ARGV[1] expected_tok         expected cursor token ("" for a new file)
-- ARGV[2] fid                  file id
-- ARGV[3] events_channel       the channel of every event
-- ARGV[4] conv_channel_prefix  a conversation's channel, but for its name
-- ARGV[5] rejects_cap          how many rejection records are kept
-- ARGV[6] file                 log: file    ARGV[7] project  log: project    ARGV[8] agent  log: agent
-- ARGV[9] lines                number of lines L
-- ARGV[10] conv_index          conv index (1-based) of each line, ','-joined; "" when every line
--                              is conversation 1
-- ARGV[11] ids                 event ids, '\n'-joined
-- ARGV[12] digests             32 hex chars each, concatenated
-- ARGV[13] msg_flags           one char per line: '1' user/assistant record, '0' other
-- ARGV[14] tails               envelope tails (JSON fragments: id, type, ts, agent), '\n'-joined
-- ARGV[15] facts               facts (JSON), '\n'-joined
-- ARGV[16] times               each line's record time (epoch ms; "" if it has none), ','-joined
-- ARGV[17] conversations       C, then C x (conv name, conv as a JSON string)
-- ARGV[..] rejections          R, then R x (rejection dedupe member, rejection record JSON)
-- ARGV[..] cursor_fields       P, then P x (cursor field, value) -- including "tok", the new
--                              token, unique to this commit
-- ARGV[#ARGV] expect_id        the store identity the committer expects ("" = not checked; the
--                              last argument)
--
-- The identity check refuses a batch for a store that lost its keys without the committer
-- reconnecting (FLUSHALL, an empty backup restored): committed, it would restart seq at 1 and
-- reuse seqs subscribers have seen (tests/adversarial/test_live.py::test_a_flushed_store_is_noticed_and_resynced).
--
-- The cursor token is the compare-and-set: a committer that queued several batches expects, for
-- each, the token its previous batch wrote, which nobody else can write; so once another
-- ingester moved the cursor, none of the queued batches can commit
-- (tests/store/test_tailer.py::test_two_tailers_racing_on_one_file_store_each_line_once).
--
-- A conversation with a tombstone (`agg forget`, docs/design.md §9) takes only lines whose record
-- time is after the forget: the others are dropped here — atomically with the commit, so a forget
-- racing this batch cannot let one slip in —, their bodies (written in step 1) deleted, counted as
-- `forgotten` (never rejected) and the cursor moves past them as usual.
--
-- Returns {"ok", added, revisions, duplicates, rejected, first_seq, last_seq, forgotten}
--      or {"conflict"} or {"storegone"} (nothing written).
if ARGV[#ARGV] ~= '' and redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then
  return {'storegone'}
end
if (redis.call('HGET', KEYS[4], 'tok') or '') ~= ARGV[1] then
  return {'conflict'}
end
local function split(s, n)
  local t, p = {}, 1
  for i = 1, n do
    local q = string.find(s, '\n', p, true)
    if q then t[i] = string.sub(s, p, q - 1); p = q + 1 else t[i] = string.sub(s, p) end
  end
  return t
end
local nl = tonumber(ARGV[9])
-- never an event id (ids are printable), longer than hash-max-listpack-value (64)
local HT_FIELD, HT_VALUE = '\0hashtable', string.rep('-', 65)
local ids, digests, msgflags = split(ARGV[11], nl), ARGV[12], ARGV[13]
local cis = {}
if ARGV[10] ~= '' then
  local j = 0
  for x in string.gmatch(ARGV[10], '%d+') do j = j + 1; cis[j] = tonumber(x) end
end
local a = 17
local nc = tonumber(ARGV[a]); a = a + 1
local conv_name, conv_json = {}, {}
for i = 1, nc do conv_name[i] = ARGV[a]; conv_json[i] = ARGV[a + 1]; a = a + 2 end
local nr = tonumber(ARGV[a]); a = a + 1
local R = a
a = a + 2 * nr
local np = tonumber(ARGV[a]); a = a + 1
local cursor_args = {}
for i = 1, 2 * np do cursor_args[i] = ARGV[a + i - 1] end

-- pass 1: classify each line (1 new, 2 revision, 0 duplicate) with an HMGET and an HSET per
-- conversation (per 1000 lines) instead of a call per line; no HMGET for a conversation seen the
-- first time, no HSET for one whose lines were all duplicates
local single = ARGV[10] == ''
local kinds, per_conv, lines_of = {}, {}, {}
for i = 1, nc do per_conv[i] = 0 end
if not single then
  for i = 1, nc do lines_of[i] = {} end
  for j = 1, nl do
    local t = lines_of[cis[j]]
    t[#t + 1] = j
  end
end
local added, revs, dups, forgot = 0, 0, 0, 0
local times = nil
for i = 1, nc do
  local js = lines_of[i]
  local cnt = single and nl or #js
  local tomb = redis.call('GET', KEYS[9 + 5 * i])
  local cdups, clines = 0, cnt
  if tomb and cnt > 0 then
    -- drop the lines said at or before the forget (or not dated); keep the rest
    if not times then
      times = {}
      local j = 0
      for x in string.gmatch(ARGV[16] .. ',', '([^,]*),') do j = j + 1; times[j] = tonumber(x) end
    end
    local T, kept, gone = tonumber(tomb), {}, {}
    for x = 1, cnt do
      local j = single and x or js[x]
      if times[j] and times[j] > T then kept[#kept + 1] = j else
        kinds[j] = 3; forgot = forgot + 1; gone[#gone + 1] = string.sub(digests, 32 * j - 31, 32 * j)
      end
    end
    if #gone > 0 then
      for s = 1, #gone, 1000 do
        redis.call('HDEL', KEYS[8 + 5 * i], unpack(gone, s, math.min(s + 999, #gone)))
      end
      if single then single = false; cis = {}; for j = 1, nl do cis[j] = 1 end end
      js = kept; cnt = #kept; clines = cnt
    end
  end
  if cnt > 0 then
    local cur = KEYS[5 + 5 * i]
    local now, changed = {}, {}
    if redis.call('EXISTS', cur) == 1 then
      for s = 1, cnt, 1000 do
        local q = {}
        for x = s, math.min(s + 999, cnt) do q[#q + 1] = ids[single and x or js[x]] end
        local vals = redis.call('HMGET', cur, unpack(q))
        for x = 1, #q do
          if now[q[x]] == nil then now[q[x]] = vals[x] end
        end
      end
    end
    for x = 1, cnt do
      local j = single and x or js[x]
      local id, dg = ids[j], string.sub(digests, 32 * j - 31, 32 * j)
      local v = now[id]
      if not v then
        now[id] = dg; changed[id] = true
        kinds[j] = 1; added = added + 1; per_conv[i] = per_conv[i] + 1
      elseif string.find(v, dg, 1, true) then
        kinds[j] = 0; dups = dups + 1; cdups = cdups + 1
      else
        now[id] = v .. ',' .. dg; changed[id] = true
        kinds[j] = 2; revs = revs + 1; per_conv[i] = per_conv[i] + 1
      end
    end
    -- The first HSET carries a placeholder field with a value too long for a listpack, so Redis
    -- makes the hash a hashtable before inserting: a listpack finds a field by scanning (Redis
    -- 7.0 grows it one field at a time), which made small conversations cost O(events^2).
    if per_conv[i] > 0 then
      local hs = {HT_FIELD, HT_VALUE}
      for id in pairs(changed) do
        hs[#hs + 1] = id; hs[#hs + 1] = now[id]
        if #hs >= 2000 then redis.call('HSET', cur, unpack(hs)); hs = {} end
      end
      if #hs > 0 then redis.call('HSET', cur, unpack(hs)) end
      redis.call('HDEL', cur, HT_FIELD)
    end
    -- per conversation, so that `agg forget` takes them off the store's counters
    if cdups > 0 then redis.call('HINCRBY', KEYS[7 + 5 * i], 'dups', cdups) end
    redis.call('HINCRBY', KEYS[7 + 5 * i], 'lines', clines)
  end
end

local rejs = 0
for j = 0, nr - 1 do
  if redis.call('SADD', KEYS[8], ARGV[R + 2 * j]) == 1 then
    rejs = rejs + 1
    redis.call('LPUSH', KEYS[7], ARGV[R + 2 * j + 1])
  else
    dups = dups + 1
  end
end
if rejs > 0 then redis.call('LTRIM', KEYS[7], 0, ARGV[5] - 1) end

-- pass 2: hand out sequence numbers in line order, publish, append to the log
local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
local n = added + revs
local first_seq, last_seq = 0, 0
if n > 0 then
  local base = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'),
                        tonumber(redis.call('HGET', KEYS[3], 'log_last') or '0'))
  first_seq = base + 1
  last_seq = base + n
  redis.call('SET', KEYS[1], last_seq)
  local next_cs, msgs = {}, {}
  for i = 1, nc do
    if per_conv[i] > 0 then
      next_cs[i] = redis.call('HINCRBY', KEYS[7 + 5 * i], 'n', per_conv[i]) - per_conv[i] + 1
    end
    msgs[i] = 0
  end
  local tails = split(ARGV[14], nl)
  local envs = {}
  local all = (n == nl)
  local digs, facts = {}, nil
  if not all then facts = {}; local fx = split(ARGV[15], nl); for j = 1, nl do if kinds[j] == 1 or kinds[j] == 2 then
    facts[#facts + 1] = fx[j]; digs[#digs + 1] = string.sub(digests, 32 * j - 31, 32 * j) end end end
  local seq = first_seq
  local ev_channel, chan = ARGV[3], {}
  for i = 1, nc do chan[i] = ARGV[4] .. conv_name[i] end
  local fmt = string.format
  for j = 1, nl do
    local k = kinds[j]
    if k == 1 or k == 2 then
      local ci = single and 1 or cis[j]
      local cs = next_cs[ci]
      next_cs[ci] = cs + 1
      -- %d: concatenating a number would go through Lua's %.14g, three times slower
      local env = '{"seq":' .. fmt('%d', seq) .. ',"conv":' .. conv_json[ci] .. ',"conv_seq":' .. fmt('%d', cs) ..
        ',' .. tails[j] .. ',"revision":' .. (k == 2 and 'true' or 'false') .. '}'
      envs[#envs + 1] = env
      redis.call('PUBLISH', ev_channel, env)
      redis.call('PUBLISH', chan[ci], env)
      if k == 1 and string.byte(msgflags, j) == 49 then msgs[ci] = msgs[ci] + 1 end
      seq = seq + 1
    end
  end
  local new_convs = 0
  for i = 1, nc do
    if per_conv[i] > 0 then
      redis.call('ZADD', KEYS[6 + 5 * i], first_seq, first_seq)
      redis.call('ZADD', KEYS[5], last_seq, conv_name[i])
      redis.call('ZADD', KEYS[9], 'NX', now_ms, conv_name[i])
      if msgs[i] > 0 and redis.call('HINCRBY', KEYS[7 + 5 * i], 'msgs', msgs[i]) == msgs[i] then
        new_convs = new_convs + 1
      end
    end
  end
  redis.call('XADD', KEYS[2], first_seq .. '-0', 'e', table.concat(envs, '\n'),
    'd', all and digests or table.concat(digs), 'f', all and ARGV[15] or table.concat(facts, '\n'),
    'file', ARGV[6], 'project', ARGV[7], 'agent', ARGV[8])
  redis.call('HSET', KEYS[3], 'log_last', last_seq)
  if new_convs > 0 then redis.call('HINCRBY', KEYS[3], 'conversations', new_convs) end
end

redis.call('HINCRBY', KEYS[3], 'events', added)
redis.call('HINCRBY', KEYS[3], 'revisions', revs)
redis.call('HINCRBY', KEYS[3], 'duplicates', dups)
redis.call('HINCRBY', KEYS[3], 'rejected', rejs)
if forgot > 0 then redis.call('HINCRBY', KEYS[3], 'forgotten', forgot) end
redis.call('HINCRBY', KEYS[3], 'lines', nl + nr)
redis.call('HINCRBY', KEYS[3], 'batches', 1)
redis.call('HSET', KEYS[3], 'last_ingest_ms', now_ms)
if np > 0 then redis.call('HSET', KEYS[4], unpack(cursor_args)) end
redis.call('SADD', KEYS[6], ARGV[2])
return {'ok', added, revs, dups, rejs, first_seq, last_seq, forgot}
"""


def ingest_call(
    *,
    seq: str,
    log: str,
    stats: str,
    cursor: str,
    convs: str,
    files: str,
    rejects: str,
    rejseen: str,
    dirty: str,
    conv_keys: Sequence[str],
    store: str,
    expected_tok: str,
    fid: str,
    events_channel: str,
    conv_channel_prefix: str,
    rejects_cap: int,
    file: str,
    project: str,
    agent: str,
    lines: int,
    conv_index: str,
    ids: str,
    digests: str,
    msg_flags: bytes,
    tails: bytes,
    facts: bytes,
    times: str,
    conversations: Sequence[tuple[str, bytes]],
    rejections: Sequence[tuple[str, bytes]],
    cursor_fields: Sequence[tuple[str, Any]],
    expect_id: str,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`INGEST` call (built by :meth:`aggregator.store.Store.prepare`)."""
    return ScriptCall(
        INGEST,
        [seq, log, stats, cursor, convs, files, rejects, rejseen, dirty, *conv_keys, store],
        [
            expected_tok,
            fid,
            events_channel,
            conv_channel_prefix,
            rejects_cap,
            file,
            project,
            agent,
            lines,
            conv_index,
            ids,
            digests,
            msg_flags,
            tails,
            facts,
            times,
            *counted(conversations),
            *counted(rejections),
            *counted(cursor_fields),
            expect_id,
        ],
    )


PROJECT = r"""
-- Apply one step of projection updates computed by the caller from log entries
-- (after_seq, upto_seq], and advance the projection checkpoint by compare-and-set — in one
-- atomic step.
--
-- KEYS[1] proj_seq     string  last seq applied
-- KEYS[2] proj_lock    string  rebuild lock (holder token)
-- KEYS[3..] targets    projection keys touched (hashes, sets, or the recent-messages zset)
--
-- ARGV[1] after_seq    ARGV[2] upto_seq    ARGV[3] token  lock token ("" = not the rebuilder)
-- ARGV[4..] ops        for each target key: number of ops M, then M x (op, a, b):
--         hashes: "incr" a=field b=n (HINCRBY) · "set" (HSET) · "setnx" (HSETNX)
--                 "min" / "max" a=field b=number (numeric compare-and-set)
--                 "newest" / "oldest" a=field b="<seq> <value>": set field to value (and
--                   field.."@" to seq) if seq is above / below the seq stored with it
--                 "pick" a=field b=','-joined candidate fields: set field to the first
--                   candidate that is set and not empty (remove it if none is)
--                 "decr" a=field b=n: HINCRBY -n, the field removed once it is 0 or less
--                 "hdel" a=field
--         sets:   "sadd" a=ignored b=member · "srem" a=ignored b=member
--         zsets:  "zadd" a=score b=member · "zkeep" a=ignored b=N (keep the N highest)
--                 "zrem" a=ignored b=member
--         any:    "del": remove the key (a, b ignored)
--         ("decr", "hdel", "srem", "zrem" and "del" are what `agg forget` takes off)
--                 "touch" a=ignored b=member: score the member with this step's change mark
--                   (1 + the zset's highest score); for the changed-conversations index only
--
-- Returns {"ok", upto_seq} or {"conflict", current_seq} or {"locked"} (nothing written).
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[3] then return {'locked'} end
if cur ~= tonumber(ARGV[1]) then return {'conflict', cur} end
local a = 4
local mark
for k = 3, #KEYS do
  local key = KEYS[k]
  local m = tonumber(ARGV[a]); a = a + 1
  for _ = 1, m do
    local op, f, v = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    a = a + 3
    if op == 'incr' then
      redis.call('HINCRBY', key, f, v)
    elseif op == 'set' then
      redis.call('HSET', key, f, v)
    elseif op == 'setnx' then
      redis.call('HSETNX', key, f, v)
    elseif op == 'min' or op == 'max' then
      local old = redis.call('HGET', key, f)
      if (not old) or (op == 'min' and tonumber(v) < tonumber(old))
          or (op == 'max' and tonumber(v) > tonumber(old)) then
        redis.call('HSET', key, f, v)
      end
    elseif op == 'newest' or op == 'oldest' then
      local sp = string.find(v, ' ', 1, true)
      local seq = string.sub(v, 1, sp - 1)
      local old_seq = redis.call('HGET', key, f .. '@')
      if (not old_seq) or (op == 'newest' and tonumber(seq) > tonumber(old_seq))
          or (op == 'oldest' and tonumber(seq) < tonumber(old_seq)) then
        redis.call('HSET', key, f .. '@', seq, f, string.sub(v, sp + 1))
      end
    elseif op == 'pick' then
      local cands = {}
      for c in string.gmatch(v, '[^,]+') do cands[#cands + 1] = c end
      local vals = redis.call('HMGET', key, unpack(cands))
      local chosen = false
      for i = 1, #cands do
        if vals[i] and vals[i] ~= '' then chosen = vals[i]; break end
      end
      if chosen then redis.call('HSET', key, f, chosen) else redis.call('HDEL', key, f) end
    elseif op == 'decr' then
      if redis.call('HINCRBY', key, f, -tonumber(v)) <= 0 then redis.call('HDEL', key, f) end
    elseif op == 'hdel' then
      redis.call('HDEL', key, f)
    elseif op == 'sadd' then
      redis.call('SADD', key, v)
    elseif op == 'srem' then
      redis.call('SREM', key, v)
    elseif op == 'zrem' then
      redis.call('ZREM', key, v)
    elseif op == 'del' then
      redis.call('DEL', key)
    elseif op == 'zadd' then
      redis.call('ZADD', key, f, v)
    elseif op == 'zkeep' then
      redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(v) + 1))
    elseif op == 'touch' then
      if not mark then
        local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
        mark = (tonumber(top[2]) or 0) + 1
      end
      redis.call('ZADD', key, mark, v)
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return {'ok', tonumber(ARGV[2])}
"""


def project_call(
    *,
    proj_seq: str,
    proj_lock: str,
    targets: Sequence[str],
    after_seq: int,
    upto_seq: int,
    token: str,
    ops: Sequence[Any],
) -> ScriptCall:
    """KEYS and ARGV of one :data:`PROJECT` call."""
    return ScriptCall(PROJECT, [proj_seq, proj_lock, *targets], [after_seq, upto_seq, token, *ops])


PROJECT_RESET = r"""
-- Drop every projection for `agg replay --rebuild`, in one atomic step, if the caller holds the
-- rebuild lock: the keys and the checkpoint (set to 0). Atomic so that a rebuild
-- killed half-way never leaves half-dropped projections under a checkpoint that still claims them.
--
-- KEYS[1] proj_seq   KEYS[2] proj_lock   KEYS[3..] dropped  projection keys
-- ARGV[1] token  the rebuild lock's token
-- Returns "ok", or "locked" (nothing dropped).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'locked' end
for k = 3, #KEYS do redis.call('UNLINK', KEYS[k]) end
redis.call('SET', KEYS[1], 0)
return 'ok'
"""


def project_reset_call(
    *,
    proj_seq: str,
    proj_lock: str,
    dropped: Sequence[str],
    token: str,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`PROJECT_RESET` call."""
    return ScriptCall(PROJECT_RESET, [proj_seq, proj_lock, *dropped], [token])


PROJECT_UNLOCK = r"""
-- Release the rebuild lock if the caller still holds it (compare-and-delete): a rebuild that
-- outlived its lock's TTL must not delete the lock a later rebuild took.
--
-- KEYS[1] proj_lock  string  rebuild lock (holder token)
-- ARGV[1] token      the caller's lock token
--
-- Returns 1 if the lock was released, 0 if another holder has it (or nobody).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def project_unlock_call(
    *,
    proj_lock: str,
    token: str,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`PROJECT_UNLOCK` call."""
    return ScriptCall(PROJECT_UNLOCK, [proj_lock], [token])


SEAL = r"""
-- Seal some of a conversation's line bodies into one compressed chunk: add the chunk and drop the
-- raw fields it holds, in one step, so that every body is readable at every moment — raw before,
-- in the chunk after (aggregator/compaction.py; tests/process/test_compaction_kill.py kills
-- `agg compact` at random points). Bodies are content-addressed (a digest's bytes never change),
-- so the chunk built from the raw values read before this call holds exactly what it drops.
--
-- KEYS[1] body      hash  the conversation's raw bodies (digest -> line bytes)
-- KEYS[2] chunks    hash  its sealed chunks (number -> zstd frame)
-- ARGV[1] chunk     the compressed chunk (aggregator.compaction.pack_chunk)
-- ARGV[2..] digests the digests the chunk holds
--
-- Refuses (returns 0, writes nothing) if any digest is no longer raw: another sealer took it
-- first, or the store lost its keys; the caller reads what is left and tries again. Otherwise
-- returns the new chunk's number (chunks are numbered 1, 2, … and never removed but by forget).
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then return 0 end
end
local n = redis.call('HLEN', KEYS[2]) + 1
redis.call('HSET', KEYS[2], n, ARGV[1])
for i = 2, #ARGV, 1000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return n
"""


def seal_call(
    *,
    body: str,
    chunks: str,
    chunk: bytes,
    digests: Sequence[str],
) -> ScriptCall:
    """KEYS and ARGV of one :data:`SEAL` call."""
    return ScriptCall(SEAL, [body, chunks], [chunk, *digests])


LOG_ARCHIVE = r"""
-- Move the log's oldest batches into one archived segment: add the segment and trim exactly
-- those batches from the stream, in one step, so that every batch is readable at every moment —
-- in the stream before, in the archive after (aggregator.compaction; readers read the stream,
-- then the archive: aggregator.store.Store.log_batches).
--
-- KEYS[1] log        stream  the global log
-- KEYS[2] archive    hash    segments (first -> zstd frame of its batches)
-- KEYS[3] segments   zset    "<first>:<last>", score first
-- KEYS[4] proj_lock  string  held by agg replay --rebuild and agg forget
-- ARGV[1] segment    the compressed batches (aggregator.compaction.pack_segment)
-- ARGV[2..] firsts   the first seqs of its batches, in order: the first must be the stream's
--                    first entry, and each must still be in the stream
--
-- Returns 1; -1 (writing nothing) while the projections' lock is held: agg forget scrubs the
-- archive, then runs FORGET, and no segment may be archived from the stream in between; 0
-- (writing nothing) if the stream changed since the batches were read — another archiver was
-- first, or a forget took one of them out of the stream (a copy read before would keep the
-- forgotten entries: tests/store/test_forget.py::test_an_archived_conversation_is_forgotten_from_its_segments).
-- Stream ids only grow, so no batch can have been added between the first and the last.
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head == 0 or head[1][1] ~= ARGV[2] .. '-0' then return 0 end
for i = 3, #ARGV do
  if #redis.call('XRANGE', KEYS[1], ARGV[i] .. '-0', ARGV[i] .. '-0') == 0 then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2] .. ':' .. ARGV[#ARGV])
redis.call('XTRIM', KEYS[1], 'MINID', (tonumber(ARGV[#ARGV]) + 1) .. '-0')
return 1
"""


def log_archive_call(
    *,
    log: str,
    archive: str,
    segments: str,
    proj_lock: str,
    segment: bytes,
    firsts: Sequence[int],
) -> ScriptCall:
    """KEYS and ARGV of one :data:`LOG_ARCHIVE` call."""
    return ScriptCall(LOG_ARCHIVE, [log, archive, segments, proj_lock], [segment, *firsts])


SEGMENT_REPLACE = r"""
-- Replace one archived log segment by a rewritten copy (agg forget blanks a forgotten
-- conversation's entries in the archive as FORGET does in the stream), if it is still the copy
-- the rewrite was made from (compare-and-set: two forgets rewriting one segment never lose one's
-- work); an empty copy removes it. Its name stays: a segment's first and last are bounds, and
-- readers go on to the next segment when one holds nothing past where they are (tests/store/
-- test_compaction_forget.py::test_a_segment_whose_last_batches_a_forget_dropped_does_not_hide_the_next_one).
--
-- KEYS[1] archive   hash  segments (first -> zstd frame)
-- KEYS[2] segments  zset  "<first>:<last>", score first
-- ARGV[1] member    the segment's member ("<first>:<last>"; first is its field in archive)
-- ARGV[2] old       the compressed segment the rewrite was made from
-- ARGV[3] new       the rewritten segment, or "" to remove it
--
-- Returns 1, or 0 (writing nothing) if the segment is no longer `old`.
local field = string.match(ARGV[1], '^([^:]+):')
if redis.call('HGET', KEYS[1], field) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], field)
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], field, ARGV[3])
end
return 1
"""


def segment_replace_call(
    *,
    archive: str,
    segments: str,
    member: str,
    old: bytes,
    new: bytes,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`SEGMENT_REPLACE` call."""
    return ScriptCall(SEGMENT_REPLACE, [archive, segments], [member, old, new])


HMGET_MANY = r"""
-- Read the same fields of many hashes in one call (read-only): one reply instead of one per hash,
-- which is what keeps `agg usage` and `agg status` fast on thousands of conversations and files.
--
-- KEYS[1..N] hashes   ARGV[1..M] fields
-- Returns N x M values, flat, hash by hash (nil where a field or hash is missing).
local out, m = {}, #ARGV
for i = 1, #KEYS do
  local vals = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, m do out[(i - 1) * m + j] = vals[j] end
end
return out
"""


def hmget_many_call(
    *,
    hashes: Sequence[str],
    fields: Sequence[str],
) -> ScriptCall:
    """KEYS and ARGV of one :data:`HMGET_MANY` call."""
    return ScriptCall(HMGET_MANY, [*hashes], [*fields])


READ_ONLY: dict[str, str | None] = {HMGET_MANY: None}
"""Scripts that write nothing, which the quick client of ``agg status`` and ``agg usage`` may run
(:mod:`aggregator.quickredis`): script → None (every call) or the first argument that makes a call
read-only. ``tests/contract/test_read_only_scripts.py`` runs each such call with ``EVAL_RO``, which
a real Redis 7 refuses for a script that writes."""

SEQ_FLOOR = r"""
-- Raise the global sequence to at least a value some agg process has already seen, so that a
-- Redis restored from an older copy of its data (a failover that lost writes) never hands out a
-- seq that subscribers were already given. Run on every new connection of a committing process
-- (``aggregator.seqfloor``), before the connection is used for anything else. Raising the
-- sequence only leaves a gap, which docs/design.md §3 allows ("strictly increasing, no reuse").
--
-- KEYS[1] seq    string  global sequence counter
-- KEYS[2] stats  hash    counters (log_last: last seq in the log; seq_floor_raised: times raised)
--
-- ARGV[1] floor  the highest seq the caller has seen
--
-- Returns {1, previous} if the sequence was raised, {0, current} if it was already there.
local cur = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'),
                     tonumber(redis.call('HGET', KEYS[2], 'log_last') or '0'))
local floor = tonumber(ARGV[1])
if cur < floor then
  redis.call('SET', KEYS[1], floor)
  redis.call('HSET', KEYS[2], 'log_last', floor)
  redis.call('HINCRBY', KEYS[2], 'seq_floor_raised', 1)
  return {1, cur}
end
return {0, cur}
"""


def seq_floor_call(
    *,
    seq: str,
    stats: str,
    floor: int,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`SEQ_FLOOR` call."""
    return ScriptCall(SEQ_FLOOR, [seq, stats], [floor])


CURSOR_ADOPT = r"""
-- Move a file's cursor from its old id (the path as spelled) to its new one (the resolved path),
-- unless the new one exists already: cursors are keyed by the resolved path since 2026-12, and a
-- file whose cursor moves is not read again (aggregator.store.Store.cursors_for).
--
-- KEYS[1] old_cursor (hash)   KEYS[2] new_cursor (hash)   KEYS[3] files (set of file ids)
-- ARGV[1] old_fid  old file id     ARGV[2] new_fid  new file id
--
-- Returns 1 if the cursor moved, 0 if there was nothing to move or the new one exists.
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""


def cursor_adopt_call(
    *,
    old_cursor: str,
    new_cursor: str,
    files: str,
    old_fid: str,
    new_fid: str,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`CURSOR_ADOPT` call."""
    return ScriptCall(CURSOR_ADOPT, [old_cursor, new_cursor, files], [old_fid, new_fid])


FORGET = r"""
-- Forget one conversation (`agg forget`, docs/design.md §9), atomically against every commit:
-- leave its tombstone (the forget time T, ms), remove its events — ids, versions, bodies,
-- timeline, meta, turn state — take them off the counters, scrub their content out of the log,
-- and append one log entry of type agg-forget (its own seq) that every projection applies in seq
-- order (aggregator.projections drops the conversation's rows there; so does the search index).
--
-- The log: a batch that held only this conversation's entries is deleted (XDEL); one shared with
-- other conversations (a file holding lines of several sessions) is deleted from the stream and
-- kept, with this conversation's entries blanked (envelope and facts "", digest zeros) so that
-- the others keep their seqs, in the patch hash named by its first seq, indexed in `patched`
-- (aggregator.store reads the two as one log).
--
-- KEYS[1] seq        string  global sequence counter
-- KEYS[2] log        stream  global log
-- KEYS[3] stats      hash    counters
-- KEYS[4] convs      zset    conversation -> last seq
-- KEYS[5] dirty      zset    conversations with changes no turn has seen
-- KEYS[6] due        zset    turn schedule    KEYS[7] queued  zset    KEYS[8] running  zset
-- KEYS[9] parked     zset    parked turns
-- KEYS[10] patched   zset    first seqs of patched log batches
-- KEYS[11] cur       hash    the conversation's event ids -> digests
-- KEYS[12] tl        zset    its timeline (first seqs of its log batches)
-- KEYS[13] body      hash    its line bytes
-- KEYS[14] meta      hash    n, msgs, dups, lines
-- KEYS[15] forgot    string  its tombstone
-- KEYS[16] turn      hash    its turn state    KEYS[17] lease  string  its turn lease
-- KEYS[18] chunks    hash    its sealed bodies (aggregator.compaction)
-- KEYS[19..] patches hash    the patched batch of each batch of its timeline, in timeline order
--                            (declared, not spelled here: on a Redis Cluster every key a script
--                            touches must be one of KEYS)
--
-- ARGV[1] conv           the conversation key
-- ARGV[2] conv_json      the key as a JSON string (as envelopes spell it)
-- ARGV[3] firsts         its timeline's members (first seqs), ','-joined, as the caller read them
--                        for KEYS[19..]
-- ARGV[4] events_channel ARGV[5] conv_channel  where the agg-forget envelope is published
--
-- Returns {"ok", seq, T, events, revisions, duplicates, lines, conversations (0/1),
--          batches deleted, batches patched}, or {"missing"}, or {"moved"} when the timeline is
--          no longer ARGV[3] (a commit added a batch since the caller read it: read it again) —
--          nothing written for either.
local conv, cj = ARGV[1], ARGV[2]
if redis.call('ZSCORE', KEYS[4], conv) == false and redis.call('EXISTS', KEYS[11]) == 0 then
  return {'missing'}
end
local timeline = redis.call('ZRANGE', KEYS[12], 0, -1)
if table.concat(timeline, ',') ~= ARGV[3] then return {'moved'} end
local t = redis.call('TIME')
local T = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(redis.call('GET', KEYS[15]) or '0')
if old >= T then T = old + 1 end

-- scrub the log
local mark = ',"conv":' .. cj .. ',"conv_seq":'
local function mine(env)
  local p = string.find(env, ',"conv":', 1, true)
  return p ~= nil and string.sub(env, p, p + #mark - 1) == mark
end
local deleted, patched = 0, 0
for j, first in ipairs(timeline) do
  local id = first .. '-0'
  local found = redis.call('XRANGE', KEYS[2], id, id)
  local pkey = KEYS[18 + j]
  local f = {}
  if #found > 0 then
    local kv = found[1][2]
    for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
  else
    local kv = redis.call('HGETALL', pkey)
    for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
  end
  if f['e'] then
    local envs, facts = {}, {}
    for s in string.gmatch(f['e'] .. '\n', '([^\n]*)\n') do envs[#envs + 1] = s end
    for s in string.gmatch(f['f'] .. '\n', '([^\n]*)\n') do facts[#facts + 1] = s end
    local digs, others, hit = {}, 0, false
    for i = 1, #envs do
      local d = string.sub(f['d'], 32 * i - 31, 32 * i)
      if envs[i] ~= '' and mine(envs[i]) then
        envs[i] = ''; facts[i] = ''; d = string.rep('0', 32); hit = true
      elseif envs[i] ~= '' then
        others = others + 1
      end
      digs[i] = d
    end
    if hit then
      if #found > 0 then redis.call('XDEL', KEYS[2], id) end
      if others == 0 then
        redis.call('DEL', pkey)
        redis.call('ZREM', KEYS[10], first)
        deleted = deleted + 1
      else
        redis.call('HSET', pkey, 'e', table.concat(envs, '\n'), 'd', table.concat(digs),
          'f', table.concat(facts, '\n'), 'file', f['file'] or '', 'project', f['project'] or '',
          'agent', f['agent'] or '')
        redis.call('ZADD', KEYS[10], first, first)
        patched = patched + 1
      end
    end
  end
end

-- the events and everything kept per conversation
local events = redis.call('HLEN', KEYS[11])
local m = redis.call('HMGET', KEYS[14], 'n', 'msgs', 'dups', 'lines')
local revisions = math.max(0, tonumber(m[1] or '0') - events)
local was_conv = tonumber(m[2] or '0') > 0 and 1 or 0
local dups, lines = tonumber(m[3] or '0'), tonumber(m[4] or '0')
-- UNLINK: a long conversation's bodies are freed in the background, not inside this script
redis.call('UNLINK', KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[16], KEYS[17], KEYS[18])
for k = 4, 9 do redis.call('ZREM', KEYS[k], conv) end
-- %d: Lua would send -0 as "-0" and a time in ms as "1.7e+12", which Redis does not take
local fmt = string.format
for _, kv in ipairs({{'events', events}, {'revisions', revisions}, {'duplicates', dups}, {'lines', lines},
                     {'conversations', was_conv}}) do
  if kv[2] ~= 0 then redis.call('HINCRBY', KEYS[3], kv[1], fmt('%d', -kv[2])) end
end
redis.call('HINCRBY', KEYS[3], 'forgets', 1)
redis.call('SET', KEYS[15], fmt('%d', T))

-- the agg-forget entry: its own seq, published like an event's envelope
local function iso(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local mo = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (mo <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, mo, d, math.floor(rem / 3600),
    math.floor(rem / 60) % 60, rem % 60, ms % 1000)
end
local seq = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'),
                     tonumber(redis.call('HGET', KEYS[3], 'log_last') or '0')) + 1
local env = '{"seq":' .. fmt('%d', seq) .. ',"conv":' .. cj .. ',"conv_seq":0,"id":"forget:' .. fmt('%d', T) ..
  '","type":"agg-forget","ts":"' .. iso(T) .. '","agent":null,"revision":false,"forgotten":{"at_ms":' ..
  fmt('%d', T) .. ',"events":' .. fmt('%d', events) .. ',"revisions":' .. fmt('%d', revisions) .. '}}'
redis.call('SET', KEYS[1], fmt('%d', seq))
redis.call('XADD', KEYS[2], fmt('%d', seq) .. '-0', 'e', env, 'd', string.rep('0', 32), 'f', '{}',
  'file', '', 'project', '', 'agent', '')
redis.call('HSET', KEYS[3], 'log_last', fmt('%d', seq))
redis.call('PUBLISH', ARGV[4], env)
redis.call('PUBLISH', ARGV[5], env)
return {'ok', seq, T, events, revisions, dups, lines, was_conv, deleted, patched}
"""


def forget_call(
    *,
    seq: str,
    log: str,
    stats: str,
    convs: str,
    dirty: str,
    due: str,
    queued: str,
    running: str,
    parked: str,
    patched: str,
    cur: str,
    tl: str,
    body: str,
    meta: str,
    forgot: str,
    turn: str,
    lease: str,
    chunks: str,
    patches: Sequence[str],
    conv: str,
    conv_json: bytes,
    firsts: str,
    events_channel: str,
    conv_channel: str,
) -> ScriptCall:
    """KEYS and ARGV of one :data:`FORGET` call (built by :meth:`aggregator.store.Store.forget`):
    ``firsts`` the timeline's members as read (``,``-joined), ``patches`` their patched batches' keys."""
    return ScriptCall(
        FORGET,
        [
            *(seq, log, stats, convs, dirty, due, queued, running, parked, patched),
            *(cur, tl, body, meta, forgot, turn, lease, chunks),
            *patches,
        ],
        [conv, conv_json, firsts, events_channel, conv_channel],
    )
