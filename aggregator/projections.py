"""Projections: what is derived from the event log, kept up to date incrementally, rebuildable.

The projector reads the global log from its checkpoint (``agg:proj:seq``) onwards — by seq,
never by rescanning files — in steps of :data:`~aggregator.defaults.PROJECT_BATCH_ENTRIES`
entries. For each step it reads the little projection state the step depends on (usage dedupe
entries, pending references), folds the entries in seq order into per-key :class:`Delta` s, and
applies them with the :data:`~aggregator.scripts.PROJECT` script, which writes them and moves
the checkpoint by compare-and-set in one atomic step. Several projectors may run at once
(watcher, writer, ``agg ingest``): a step that lost the race — including one whose state was
read before another step changed it — is recomputed from the new checkpoint.

Every update is a function of the entries in seq order and the state left by earlier steps, so
applying the log in steps of any size gives the same result; ``agg replay --rebuild`` drops the
projections and applies the whole log again, re-deriving each entry's facts from its stored bytes
(:func:`aggregator.parse.facts`), and the digests (:meth:`Projector.digest`) of the two match
(``tests/process/test_projections.py``).

**Per conversation** (hash ``agg:{c:K}:proj``):

* ``project`` (first project directory seen), ``cwd`` (the working directory of its first prompt:
  what :mod:`aggregator.projects` shows the project as), ``entries``, ``events``, ``revisions``,
  ``messages``, ``first_ms`` / ``last_ms`` (record times; agg's own synthesized events excluded);
* ``title``, the first set of the candidates ``t_custom``, ``t_ai``, ``t_summary``, ``t_agg``
  (newest wins), ``t_prompt``, ``t_cmd``, ``t_agent`` (first wins), each kept with its entry's seq
  in ``<field>@`` — see :mod:`aggregator.titles`; the script re-picks ``title`` whenever a
  candidate changes;
  ``summary`` (agg's own summary turn, newest wins);
* ``agent.<id>`` per subagent: ``""``, or JSON ``[type, description]`` from its ``.meta.json``;
* ``from.<kind>.<conv>`` = ``1`` for each conversation this one was ``resumed`` from (a record's
  ``parentUuid`` is in that conversation), ``compacted`` from (a ``compact_boundary``'s
  ``logicalParentUuid`` is) or ``forked`` from (``forkedFrom.sessionId``);
* ``usage_input``, ``usage_output``, ``usage_cache_read``, ``usage_cache_creation``,
  ``usage_cache_creation_1h``, ``usage_responses`` — see below.

**Usage** (docs/design.md §6): each API response — (``message.id``, ``requestId``), a missing requestId
being its own value — is counted once across the whole store, with the largest value seen for
each field, toward the conversation, project, model and day (UTC, of its first line) where it was
first seen. ``agg:proj:usage:keys`` holds each response's owner and maxima; a later line (a
late final usage, a revision, a copy in a subagent or another file) adds only what it raises.
Three tallies sum them per model and context tier (a model's price applies to its own tokens):
``agg:proj:usage:cells`` per conversation and UTC day, ``agg:proj:usage:days`` per day,
``agg:proj:usage:projects`` per project and day — every usage table, date range and cost
(:mod:`aggregator.usage`, :mod:`aggregator.prices`) reads the smallest one that answers it.
``<synthetic>`` messages and the copies inside ``progress`` records carry no usage fact.

**References** that need another conversation (a ``summary``'s ``leafUuid``, a
``parentUuid``/``logicalParentUuid`` not found in the record's own conversation) are joined
symmetrically, so the order in which files were read does not matter: a reference is resolved
against conversations of the same project that already hold the uuid, and kept in
``agg:proj:refs`` so that a conversation read later resolves it when the uuid is folded.

**Forgetting** (``agg forget``, :mod:`aggregator.forget`): an ``agg-forget`` log entry is a step of
its own (:meth:`Projector._forget_step`), which takes off exactly what the conversation's entries
before it added, so the projections stay those of a log that never held them — what a rebuild of
the scrubbed log gives.

**Across conversations**: ``agg:proj:recent`` (the :data:`RECENT_KEEP` most recent
user/assistant messages by record time, ties by seq), the usage keys above, ``agg:proj:projects``
and ``agg:proj:pconvs:<project>``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator import defaults, scripts
from aggregator.buckets import StoreSet, stores_of
from aggregator.errors import StoreError
from aggregator.parse import MESSAGE_TYPES, facts, loads
from aggregator.store import LogEntry, Store, parse_recent_member, recent_member
from aggregator.titles import TITLE_FIELDS

REBUILD_LOCK_TTL_MS = 10 * 60 * 1000
"""A rebuild holds the projection lock this long per step at most (a crashed rebuild's lock lapses)."""

RECENT_KEEP = 1000
"""Messages kept in the recent-messages projection (``current.json`` shows at most this many)."""

USAGE_FIELDS = ("input", "output", "cache_read", "cache_creation")
"""Token counts shown per response (``current.json``, ``agg usage``), in the order of the ``u`` fact."""

TOKEN_FIELDS = (*USAGE_FIELDS, "cache_creation_1h")
"""Token counts kept per response: :data:`USAGE_FIELDS` and the 1-hour share of the cache writes
(priced at its own rate), in the order of the ``u`` fact."""

CELL_FIELDS = (*TOKEN_FIELDS, "responses")
"""Counts kept per entry of a usage tally (see :data:`TALLIES`)."""

TALLIES = {
    "cells": ("conv", "model", "day", "long"),
    "days": ("day", "model", "long"),
    "projects": ("project", "day", "model", "long"),
}
"""Usage tallies (``agg:proj:usage:<name>``) and what their fields hold before the count's name:
``long`` is 1 for responses whose prompt exceeded :data:`~aggregator.defaults.LONG_CONTEXT_TOKENS`
(priced at a model's long-context rates)."""

LEGACY_USAGE_KEYS = ("project", "model", "day")
"""``agg:proj:usage:<dim>`` hashes of earlier versions: a rebuild drops them."""

SYNTHESIZED_TYPES = frozenset({"agg-turn", "agent-meta"})
"""Event types agg writes itself: they do not move a conversation's first/last record time."""

ZERO_DIGEST = "0" * 40

_TITLE_SET = frozenset(TITLE_FIELDS)
_TITLE_CANDIDATES = ",".join(TITLE_FIELDS)


@dataclass
class Delta:
    """Changes to one projection key (a conversation's hash, or a global key) from a run of entries."""

    incr: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mins: dict[str, int] = field(default_factory=dict)
    maxs: dict[str, int] = field(default_factory=dict)
    setnx: dict[str, str] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)
    newest: dict[str, tuple[int, str]] = field(default_factory=dict)
    oldest: dict[str, tuple[int, str]] = field(default_factory=dict)
    sadds: set[str] = field(default_factory=set)
    zadds: list[tuple[int, bytes]] = field(default_factory=list)
    keep: int = 0

    def lo(self, name: str, value: int) -> None:
        if name not in self.mins or value < self.mins[name]:
            self.mins[name] = value

    def hi(self, name: str, value: int) -> None:
        if name not in self.maxs or value > self.maxs[name]:
            self.maxs[name] = value

    def newer(self, name: str, seq: int, value: str) -> None:
        """``name`` = ``value`` unless a later seq already set it (newest wins)."""
        if name not in self.newest or seq > self.newest[name][0]:
            self.newest[name] = (seq, value)

    def older(self, name: str, seq: int, value: str) -> None:
        """``name`` = ``value`` unless an earlier seq already set it (first wins)."""
        if name not in self.oldest or seq < self.oldest[name][0]:
            self.oldest[name] = (seq, value)

    def zadd(self, score: int, member: bytes) -> None:
        self.zadds.append((score, member))

    def ops(self) -> list[tuple[str, Any, Any]]:
        out: list[tuple[str, Any, Any]] = [("incr", f, v) for f, v in self.incr.items() if v]
        out += [("min", f, v) for f, v in self.mins.items()]
        out += [("max", f, v) for f, v in self.maxs.items()]
        out += [("setnx", f, v) for f, v in self.setnx.items()]
        out += [("set", f, v) for f, v in self.sets.items()]
        out += [("newest", f, f"{s} {v}") for f, (s, v) in self.newest.items()]
        out += [("oldest", f, f"{s} {v}") for f, (s, v) in self.oldest.items()]
        if any(f in _TITLE_SET for f in (*self.newest, *self.oldest)):
            out.append(("pick", "title", _TITLE_CANDIDATES))
        out += [("sadd", "", m) for m in sorted(self.sadds)]
        zadds = self.zadds
        if self.keep and len(zadds) > self.keep:
            # Members below this step's top `keep` cannot be in the kept set: skip writing them.
            zadds = sorted(zadds, reverse=True)[: self.keep]
        out += [("zadd", score, member) for score, member in zadds]
        if self.keep:
            out.append(("zkeep", "", self.keep))
        return out


def new_usage_state(u: list[Any], conv: str, project: str, tms: Any) -> list[Any]:
    """The usage state of a response first seen in ``conv`` (maxima 0: see :func:`raise_usage_state`)."""
    prompt = u[3] + u[5] + u[6]  # input, cache reads and cache writes: the tier's measure
    long = 1 if prompt > defaults.LONG_CONTEXT_TOKENS else 0
    return [conv, project, u[2], utc_day(tms if isinstance(tms, int) else None), 0, 0, 0, 0, 0, long]


def raise_usage_state(state: list[Any], u: list[Any]) -> list[tuple[str, int]]:
    """Raise ``state``'s maxima to a line's usage ``u``; returns what each count rose by."""
    raised = []
    for i, name in enumerate(TOKEN_FIELDS):
        v = u[3 + i] if 3 + i < len(u) else 0  # facts stored before the 1-hour share was kept
        if v > state[4 + i]:
            raised.append((name, v - state[4 + i]))
            state[4 + i] = v
    return raised


def utc_day(ms: int | None) -> str:
    """``YYYY-MM-DD`` (UTC) of epoch milliseconds; ``""`` if unknown."""
    if ms is None:
        return ""
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def usage_key(u: list[Any], conv: str, eid: str) -> str:
    """The dedupe key of a usage fact: ``[message.id, requestId]`` (a missing requestId is its own
    value); a line without ``message.id`` is its own response (all versions of one event)."""
    if u[0] is None:
        return orjson.dumps([None, conv, eid]).decode()
    return orjson.dumps([u[0], u[1]]).decode()


@functools.lru_cache(maxsize=1 << 16)
def tally_field(*parts: str | int) -> str:
    """Field of a usage tally: JSON ``[…parts, name]`` (see :data:`TALLIES`)."""
    return orjson.dumps(parts).decode()


_STATE_LEN = 10
"""Length of a usage state (stores projected before the 1-hour share and the tier were kept
have 8: those read as 0). A state may carry one more element, ``1``: another conversation holds a
copy of the response too (:data:`_SHARED`; written only then, so other states keep their bytes)."""

_SHARED = 10
"""Index of the shared flag in a usage state: a forget of its owner must hand it to a copy."""


def _state(raw: bytes) -> list[Any]:
    state: list[Any] = orjson.loads(raw)
    return state + [0] * (_STATE_LEN - len(state))


# A reference from an entry to a uuid: (kind, from conv, project, seq, payload).
Ref = list[Any]
_REF_FACTS = (("pu", "resumed"), ("lp", "compacted"))


@dataclass
class StepState:
    """Projection state one step reads before folding (kept consistent by the checkpoint CAS)."""

    usage: dict[str, list[Any]] = field(default_factory=dict)
    """usage key → ``[conv, project, model, day, input, output, cache_read, cache_creation,
    cache_creation_1h, long]`` (owner, maxima, context tier: see :data:`_STATE_LEN`)."""
    refs: dict[str, list[Ref]] = field(default_factory=dict)
    """uuid → pending references to it (for the step's event ids and reference targets)."""
    internal: set[tuple[str, str]] = field(default_factory=set)
    """(conv, uuid) pairs where the uuid is an event of that conversation."""
    located: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(project, uuid) → other conversations of the project holding the uuid (stored events)."""


class Fold:
    """Folds one step's entries, in seq order, into per-key deltas."""

    def __init__(self, state: StepState) -> None:
        self.st = state
        self.convs: dict[str, Delta] = {}
        self.glob: dict[str, Delta] = {}
        self.usage_changed: set[str] = set()
        self.refs_changed: set[str] = set()
        self.pconvs: set[tuple[str, str]] = set()
        self.recent = self.g("recent")
        self.total = self.g("usage:total").incr
        self.tallies = [self.g("usage:" + name).incr for name in TALLIES]

    def conv(self, conv: str) -> Delta:
        d = self.convs.get(conv)
        if d is None:
            d = self.convs[conv] = Delta()
        return d

    def g(self, name: str) -> Delta:
        d = self.glob.get(name)
        if d is None:
            d = self.glob[name] = Delta(keep=RECENT_KEEP if name == "recent" else 0)
        return d

    def entry(self, seq: int, env: dict[str, Any], fx: dict[str, Any], project: str) -> None:
        """Fold one log entry (its envelope and facts)."""
        conv = env["conv"]
        rtype = env["type"]
        d = self.conv(conv)
        d.setnx.setdefault("project", project)
        if (project, conv) not in self.pconvs:
            self.pconvs.add((project, conv))
            self.g("projects").sadds.add(project)
            self.g("pconvs:" + project).sadds.add(conv)
        d.incr["entries"] += 1
        tms = fx.get("tms")
        if env["revision"]:
            d.incr["revisions"] += 1
        else:
            d.incr["events"] += 1
            if rtype in MESSAGE_TYPES:
                d.incr["messages"] += 1
                self.recent.zadd(tms if isinstance(tms, int) else 0, recent_member(seq, conv, env["id"], rtype))
        if isinstance(tms, int) and rtype not in SYNTHESIZED_TYPES:
            d.lo("first_ms", tms)
            d.hi("last_ms", tms)
        agent = env.get("agent")
        if agent:
            d.setnx.setdefault("agent." + agent, "")
        if len(fx) > 1:
            self._facts(seq, env, fx, project, conv, d)
        pending = self.st.refs.get(env["id"])
        if pending:
            for ref in pending:
                if ref[2] == project and ref[1] != conv:
                    self._resolve(ref, conv)

    def _facts(self, seq: int, env: dict[str, Any], fx: dict[str, Any], project: str, conv: str, d: Delta) -> None:
        u = fx.get("u")
        if u is not None:
            self._usage(u, env, fx, project, conv)
        self._titles(seq, fx, d)
        am = fx.get("am")
        if am and am[0]:
            d.sets["agent." + am[0]] = orjson.dumps([am[1], am[2]]).decode()
        fk = fx.get("fk")
        if fk and fk != conv:
            d.sets[f"from.forked.{fk}"] = "1"
        for name, kind in _REF_FACTS:
            if name in fx:
                self._ref(kind, fx[name], conv, project, seq, None)
        sm = fx.get("sm")
        if sm and sm[0] and sm[1]:
            self._ref("summary", sm[1], conv, project, seq, sm[0])

    @staticmethod
    def _titles(seq: int, fx: dict[str, Any], d: Delta) -> None:
        if "p" in fx:
            d.older("t_prompt", seq, fx["p"])
        if "c" in fx:
            d.older("t_cmd", seq, fx["c"])
        if "sp" in fx:
            d.older("t_agent", seq, fx["sp"])
        if "cwd" in fx:
            d.older("cwd", seq, fx["cwd"])
        if fx.get("ct"):
            d.newer("t_custom", seq, fx["ct"])
        if fx.get("at"):
            d.newer("t_ai", seq, fx["at"])
        tt = fx.get("tt")
        if tt:
            if tt[0]:
                d.newer("t_agg", seq, tt[0])
            if tt[1]:
                d.newer("summary", seq, tt[1])

    def _usage(self, u: list[Any], env: dict[str, Any], fx: dict[str, Any], project: str, conv: str) -> None:
        key = usage_key(u, conv, env["id"])
        state = self.st.usage.get(key)
        new = state is None
        if state is None:
            state = self.st.usage[key] = new_usage_state(u, conv, project, fx.get("tms"))
        raised = raise_usage_state(state, u)
        shared = not new and state[0] != conv and len(state) <= _SHARED
        if shared:
            state.append(1)
        if not raised and not new:
            if shared:
                self.usage_changed.add(key)
            return
        self.usage_changed.add(key)
        if new:
            raised.append(("responses", 1))
        conv_incr = self.conv(state[0]).incr
        total = self.total
        cells, days, projects = self.tallies
        owner, project, model, day, long = state[0], state[1], state[2], state[3], state[9]
        for name, n in raised:
            conv_incr["usage_" + name] += n
            total[name] += n
            cells[tally_field(owner, model, day, long, name)] += n
            days[tally_field(day, model, long, name)] += n
            projects[tally_field(project, day, model, long, name)] += n

    def _ref(self, kind: str, uuid: str, conv: str, project: str, seq: int, payload: str | None) -> None:
        if (conv, uuid) in self.st.internal:
            if kind == "summary" and payload:
                self.conv(conv).newer("t_summary", seq, payload)
            return
        ref: Ref = [kind, conv, project, seq, payload]
        pending = self.st.refs.setdefault(uuid, [])
        if ref not in pending:
            pending.append(ref)
            self.refs_changed.add(uuid)
        for target in self.st.located.get((project, uuid), ()):
            if target != conv:
                self._resolve(ref, target)

    def _resolve(self, ref: Ref, target: str) -> None:
        """``ref`` points to an event of conversation ``target``."""
        kind, src, _, seq, payload = ref
        if kind == "summary":
            self.conv(target).newer("t_summary", seq, payload)
        else:
            self.conv(src).sets[f"from.{kind}.{target}"] = "1"

    def finish(self) -> None:
        """Turn changed usage and reference state into set ops."""
        if self.usage_changed:
            keys = self.g("usage:keys")
            for k in self.usage_changed:
                keys.sets[k] = orjson.dumps(self.st.usage[k]).decode()
        if self.refs_changed:
            refs = self.g("refs")
            for uuid in self.refs_changed:
                refs.sets[uuid] = orjson.dumps(self.st.refs[uuid]).decode()


def _step_needs(
    entries: list[LogEntry], items: list[tuple[dict[str, Any], dict[str, Any]]], st: StepState
) -> tuple[set[str], set[str], dict[tuple[str, str], str]]:
    """What a step must read: usage keys, uuids with possible pending references, and references
    (conv, uuid) → project not resolved inside this step (their uuid may be in the store).

    References to an earlier entry of the same conversation in this step are marked internal in
    ``st`` right away.
    """
    usage_keys: set[str] = set()
    uuids: set[str] = set()
    seen: dict[str, set[str]] = defaultdict(set)  # conv → ids of this step's earlier entries
    candidates: dict[tuple[str, str], str] = {}
    for entry, (env, fx) in zip(entries, items, strict=True):
        conv, eid = env["conv"], env["id"]
        u = fx.get("u")
        if u is not None:
            usage_keys.add(usage_key(u, conv, eid))
        if "pu" in fx or "lp" in fx or "sm" in fx:
            targets = [fx[name] for name, _ in _REF_FACTS if name in fx]
            sm = fx.get("sm")
            if sm and sm[1]:
                targets.append(sm[1])
            for uuid in targets:
                if uuid in seen[conv]:
                    st.internal.add((conv, uuid))
                else:
                    candidates[(conv, uuid)] = entry.project
                uuids.add(uuid)
        if not eid.startswith("h:"):
            uuids.add(eid)
        seen[conv].add(eid)
    return usage_keys, uuids, candidates


class Projector:
    """Keeps the projections of one store up to date."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        self._project = store.client.register_script(scripts.PROJECT)
        self._reset = store.client.register_script(scripts.PROJECT_RESET)
        self._unlock = store.client.register_script(scripts.PROJECT_UNLOCK)

    def global_key(self, name: str) -> str:
        """Redis key of a global projection (``recent``, ``usage:<x>``, ``refs``, ``pconvs:<p>``…)."""
        k = self.keys
        if name == "recent":
            return k.recent
        if name == "refs":
            return k.refs
        if name == "projects":
            return k.projects
        if name == "usage:keys":
            return k.usage_keys
        if name == "usage:total":
            return k.usage_total
        if name.startswith("usage:"):
            return k.usage_tally(name[len("usage:") :])
        if name.startswith("pconvs:"):
            return k.project_convs(name[len("pconvs:") :])
        raise ValueError(f"unknown projection {name!r}")

    def global_keys(self) -> list[str]:
        """Every global projection key (dropped by a rebuild, covered by the digest)."""
        k = self.keys
        fixed = [k.recent, k.usage_keys, k.usage_total, *(k.usage_tally(t) for t in TALLIES), k.refs, k.projects]
        projects = self.store.projects()
        return fixed + [k.project_convs(p) for p in projects]

    def checkpoint(self) -> int:
        """The last seq applied (:meth:`Store.projections_seq`)."""
        return self.store.projections_seq()

    def catch_up(self, token: str = "", rederive: bool = False, max_steps: int | None = None) -> int:
        """Apply every log entry past the checkpoint (or ``max_steps`` steps of them); returns how
        many were applied.

        Returns early (0) while a rebuild holds the lock and ``token`` is not the rebuild's.
        """
        applied = 0
        steps = 0
        while max_steps is None or steps < max_steps:
            steps += 1
            cp = self.checkpoint()
            if cp >= self.store.last_seq():
                return applied  # caught up: two GETs, not a read of the log's last batch
            entries = list(self.store.entries_after(cp, cp + defaults.PROJECT_BATCH_ENTRIES))
            if not entries:
                # seq may jump past a whole step: after Redis lost writes, aggregator.seqfloor
                # raises the sequence (tests/process/test_live_faults.py::test_restore_from_older_copy).
                later = self.store.log_batches(cp, count=1)
                if not later:
                    return applied
                entries = list(self.store.entries_after(cp, later[0][0] + defaults.PROJECT_BATCH_ENTRIES - 1))
            cut = next((i for i, e in enumerate(entries) if e.is_forget), len(entries))
            if cut == 0:
                # a forget is a step of its own: it reads what the conversation left in the
                # projections as of this checkpoint, and takes exactly that off
                entries = entries[:1]
                res = self._forget_step(cp, entries[0], token)
            else:
                entries = entries[:cut]
                res = self._fold_step(cp, entries, token, rederive)
            if token:
                self.store.client.pexpire(self.keys.proj_lock, REBUILD_LOCK_TTL_MS)
            if res == b"locked":
                return applied
            if res == b"ok":
                applied += len(entries)
        return applied

    def _fold_step(self, cp: int, entries: list[LogEntry], token: str, rederive: bool) -> bytes:
        """Fold ``entries`` (none an ``agg-forget``) into the projections in one script call."""
        items = list(self._rederive(entries) if rederive else ((e.env(), orjson.loads(e.facts)) for e in entries))
        fold = Fold(self._read_state(entries, items))
        for entry, (env, fx) in zip(entries, items, strict=True):
            fold.entry(entry.seq, env, fx, entry.project)
        fold.finish()
        targets = [(self.keys.proj(conv), d.ops()) for conv, d in fold.convs.items()]
        targets += [(self.global_key(name), d.ops()) for name, d in fold.glob.items()]
        return self._run_step(cp, entries[-1].seq, token, targets, list(fold.convs))

    def _run_step(
        self, cp: int, upto: int, token: str, targets: list[tuple[str, list[Any]]], touched: list[str]
    ) -> bytes:
        """One PROJECT call: every target's ops, the conversations ``touched`` marked changed, and
        the checkpoint moved from ``cp`` to ``upto`` by compare-and-set."""
        keys: list[str] = []
        args: list[Any] = []
        for key, ops in targets:
            keys.append(key)
            args.append(len(ops))
            for op in ops:
                args += op
        # Which conversations this step changed — whatever entry caused it (a summary or a usage
        # line of one conversation can change another's projection): the writer re-reads these
        # (tests/process/test_snapshot_writer.py::test_reader_never_sees_a_partial_file).
        keys.append(self.keys.proj_changed)
        args.append(len(touched))
        for conv in touched:
            args += ("touch", "", conv)
        call = scripts.project_call(
            proj_seq=self.keys.proj_seq,
            proj_lock=self.keys.proj_lock,
            targets=keys,
            after_seq=cp,
            upto_seq=upto,
            token=token,
            ops=args,
        )
        return bytes(self._project(keys=call.keys, args=call.args)[0])

    def _forget_step(self, cp: int, entry: LogEntry, token: str) -> bytes:
        """Apply one ``agg-forget`` entry: drop the conversation's projection and take what it
        added off every global one — its usage (the responses it owns, exactly what they added to
        the total and the tallies), its recent messages, its project memberships (a project left
        with no conversation goes), its pending references, the links other conversations of its
        projects had to it — and move the checkpoint past the entry, by compare-and-set.

        A response another conversation holds a copy of goes to that copy, and a conversation
        whose summary title came from a summary record of this one has it chosen again: the
        projections end as a store that never read this conversation would hold them.
        """
        conv = entry.env()["conv"]
        k = self.keys
        targets: list[tuple[str, list[tuple[str, Any, Any]]]] = [(k.proj(conv), [("del", "", "")])]
        targets += self._forget_recent(conv, entry.seq)
        usage, gained = self._forget_usage(conv, entry.seq)
        targets += usage
        targets += self._forget_refs(conv)
        links, touched = self._forget_projects(conv)
        targets += links
        touched += [c for c in gained if c not in touched]
        return self._run_step(cp, entry.seq, token, targets, touched)

    def _forget_recent(self, conv: str, seq: int) -> list[tuple[str, list[tuple[str, Any, Any]]]]:
        """Ops on the recent messages: ``conv``'s go; if it was full, those it had let go of come back."""
        recent = self.store.r.zrange(self.keys.recent, 0, -1, withscores=True)
        gone = [m for m, _ in recent if parse_recent_member(m)[1] == conv]
        if not gone:
            return []
        ops: list[tuple[str, Any, Any]] = [("zrem", "", m) for m in gone]
        if len(recent) >= RECENT_KEEP:
            low = (int(recent[0][1]), recent[0][0])
            ops += [("zadd", s, m) for s, m in self._recent_below(low, len(gone), seq)]
        return [(self.keys.recent, ops)]

    def _forget_usage(self, conv: str, seq: int) -> tuple[list[tuple[str, list[tuple[str, Any, Any]]]], list[str]]:
        """Ops taking off every response ``conv`` owns, with exactly what it added; a response
        another conversation holds a copy of goes to the copy first seen, with the copies' maxima
        — as if ``conv`` had never been read. Also the conversations that gained usage."""
        k = self.keys
        delta: dict[tuple[str, str], int] = defaultdict(int)
        gone: list[str] = []
        shared: set[str] = set()

        def count(state: list[Any], sign: int, conv_too: bool) -> None:
            owner, project, model, day, long = state[0], state[1], state[2], state[3], state[9]
            for i, name in enumerate((*TOKEN_FIELDS, "responses")):
                n = sign * (state[4 + i] if i < len(TOKEN_FIELDS) else 1)
                if n:
                    delta[(k.usage_total, name)] += n
                    delta[(k.usage_tally("cells"), tally_field(owner, model, day, long, name))] += n
                    delta[(k.usage_tally("days"), tally_field(day, model, long, name))] += n
                    delta[(k.usage_tally("projects"), tally_field(project, day, model, long, name))] += n
                    if conv_too:
                        delta[(k.proj(owner), "usage_" + name)] += n

        for f, v in self.store.r.hscan_iter(k.usage_keys, count=1000):
            state = _state(v)
            if state[0] != conv:
                continue
            key = f.decode()
            count(state, -1, False)
            if len(state) > _SHARED and state[_SHARED]:
                shared.add(key)
            else:
                gone.append(key)
        handed = self._usage_of_copies(shared, conv, seq) if shared else {}
        key_ops: list[tuple[str, Any, Any]] = [("hdel", f, "") for f in gone + sorted(shared - set(handed))]
        for key, state in handed.items():
            count(state, 1, True)
            key_ops.append(("set", key, orjson.dumps(state).decode()))
        by_key: dict[str, list[tuple[str, Any, Any]]] = defaultdict(list)
        for (target, f), n in delta.items():
            if n > 0:
                by_key[target].append(("incr", f, n))
            elif n < 0:
                by_key[target].append(("decr", f, -n))
        out = [(k.usage_keys, key_ops)] if key_ops else []
        out += list(by_key.items())
        return out, sorted({state[0] for state in handed.values()})

    def _usage_of_copies(self, keys: set[str], conv: str, before: int) -> dict[str, list[Any]]:
        """The usage states of responses ``keys`` folded from the log below seq ``before`` without
        ``conv``'s entries (the log no longer holds them): owner the first copy, maxima of all."""
        states: dict[str, list[Any]] = {}
        for e in self.store.entries_after(0, before - 1):
            if b'"u":' not in e.facts:
                continue  # a look at the bytes first: most entries carry no usage
            fx = orjson.loads(e.facts)
            u = fx.get("u")
            if u is None:
                continue
            env = e.env()
            key = usage_key(u, env["conv"], env["id"])
            if key not in keys or env["conv"] == conv:
                continue
            state = states.get(key)
            if state is None:
                state = states[key] = new_usage_state(u, env["conv"], e.project, fx.get("tms"))
            elif env["conv"] != state[0] and len(state) <= _SHARED:
                state.append(1)
            raise_usage_state(state, u)
        return states

    def _forget_refs(self, conv: str) -> list[tuple[str, list[tuple[str, Any, Any]]]]:
        """Ops dropping the pending references ``conv`` made; and, for a conversation whose
        summary title (``t_summary``) came from a summary record of ``conv``, choosing it again
        from what is left."""
        ops: list[tuple[str, Any, Any]] = []
        left: dict[str, list[Ref]] = {}
        mine: list[tuple[str, Ref]] = []
        for f, v in self.store.r.hscan_iter(self.keys.refs, count=1000):
            uuid = f.decode()
            refs: list[Ref] = orjson.loads(v)
            kept = [ref for ref in refs if ref[1] != conv]
            mine += [(uuid, ref) for ref in refs if ref[1] == conv and ref[0] == "summary"]
            if kept:
                left[uuid] = kept
            if len(kept) != len(refs):
                ops.append(("set", uuid, orjson.dumps(kept).decode()) if kept else ("hdel", uuid, ""))
        out = [(self.keys.refs, ops)] if ops else []
        return out + self._retitle(conv, mine, left)

    def _retitle(
        self, conv: str, mine: list[tuple[str, Ref]], left: dict[str, list[Ref]]
    ) -> list[tuple[str, list[tuple[str, Any, Any]]]]:
        """Ops setting ``t_summary`` again (newest summary that names one of its records, as the
        fold chooses it) for each conversation whose summary title came from one of ``mine``."""
        if not mine:
            return []
        k = self.keys
        store = self.store
        members: dict[str, set[str]] = {}
        for project in {ref[2] for _, ref in mine}:
            members[project] = {c.decode() for c in store.r.smembers(k.project_convs(project))} - {conv}
        checks = [(c, uuid, ref) for uuid, ref in mine for c in sorted(members[ref[2]])]
        targets = {
            c for (c, _, _), here in zip(checks, store.holds([(c, u) for c, u, _ in checks]), strict=True) if here
        }
        seqs = {int(ref[3]) for _, ref in mine}
        out: list[tuple[str, list[tuple[str, Any, Any]]]] = []
        for target, (at,) in zip(
            sorted(targets), store.projection_fields(sorted(targets), ["t_summary@"]), strict=True
        ):
            if at is None or int(at) not in seqs:
                continue  # its summary title is another's
            project = store.projection_fields([target], ["project"])[0][0] or ""
            best: tuple[int, str] | None = None
            # summaries from other conversations that name one of its records
            cands = [(uuid, ref) for uuid, refs in left.items() for ref in refs if ref[0] == "summary" and ref[4]]
            cands = [(uuid, ref) for uuid, ref in cands if ref[1] != target and ref[2] == project]
            for (_, ref), here in zip(cands, store.holds([(target, uuid) for uuid, _ in cands]), strict=True):
                if here and (best is None or int(ref[3]) > best[0]):
                    best = (int(ref[3]), ref[4])
            # and its own summary records naming its own records
            for e in store.conversation_entries(target, 0):
                if b'"sm":' not in e.facts:
                    continue
                sm = orjson.loads(e.facts).get("sm")
                if sm and sm[0] and sm[1] and store.holds([(target, sm[1])])[0] and (best is None or e.seq > best[0]):
                    best = (e.seq, sm[0])
            ops: list[tuple[str, Any, Any]] = (
                [("set", "t_summary", best[1]), ("set", "t_summary@", best[0])]
                if best
                else [("hdel", "t_summary", ""), ("hdel", "t_summary@", "")]
            )
            out.append((k.proj(target), [*ops, ("pick", "title", _TITLE_CANDIDATES)]))
        return out

    def _forget_projects(self, conv: str) -> tuple[list[tuple[str, list[tuple[str, Any, Any]]]], list[str]]:
        """Ops taking ``conv`` out of its projects (a project left empty goes) and the links to it
        out of the other conversations of those projects; and the conversations touched."""
        k = self.keys
        r = self.store.r
        projects = sorted(p.decode() for p in r.smembers(k.projects))
        pipe = r.pipeline(transaction=False)
        for p in projects:
            pipe.smembers(k.project_convs(p))
        members = {p: {c.decode() for c in m} for p, m in zip(projects, pipe.execute(), strict=True)}
        mine = [p for p in projects if conv in members[p]]
        out: list[tuple[str, list[tuple[str, Any, Any]]]] = [(k.project_convs(p), [("srem", "", conv)]) for p in mine]
        empty = [p for p in mine if members[p] == {conv}]
        if empty:
            out.append((k.projects, [("srem", "", p) for p in empty]))
        touched = [conv]
        link_fields = [f"from.{kind}.{conv}" for _, kind in _REF_FACTS]
        others = sorted({c for p in mine for c in members[p] if c != conv})
        rows = self.store.hmget_many([k.proj(c) for c in others], link_fields) if others else []
        for other, row in zip(others, rows, strict=True):
            fields = [f for f, v in zip(link_fields, row, strict=True) if v is not None]
            if fields:
                out.append((k.proj(other), [("hdel", f, "") for f in fields]))
                touched.append(other)
        return out, touched

    def _recent_below(self, low: tuple[int, bytes], n: int, before: int) -> list[tuple[int, bytes]]:
        """The ``n`` most recent messages (score, member) of the log below seq ``before`` that
        rank under ``low``: those the recent-messages projection let go of. Reads the whole log
        up to there (only a forget of a conversation holding recent messages does this)."""
        best: list[tuple[int, bytes]] = []
        for e in self.store.entries_after(0, before - 1):
            if b'"type":"user"' not in e.envelope and b'"type":"assistant"' not in e.envelope:
                continue  # a look at the bytes first: most entries are not messages (progress, system…)
            env = e.env()
            if env["revision"] or env["type"] not in MESSAGE_TYPES:
                continue
            tms = orjson.loads(e.facts).get("tms")
            cand = (tms if isinstance(tms, int) else 0, recent_member(e.seq, env["conv"], env["id"], env["type"]))
            if cand < low:
                if len(best) < n:
                    heapq.heappush(best, cand)
                elif cand > best[0]:
                    heapq.heapreplace(best, cand)
        return best

    def _read_state(self, entries: list[LogEntry], items: list[tuple[dict[str, Any], dict[str, Any]]]) -> StepState:
        """Read what folding these entries depends on, in (at most) three round trips.

        Race: the reads happen after the checkpoint was read; every write to this state moves the
        checkpoint, so if anything read here changed before our step commits, the commit's
        compare-and-set fails and the step is recomputed
        (``tests/process/test_projections.py::test_racing_projectors_agree_with_a_rebuild``).
        Which conversations hold a uuid is read from the event store, which may be ahead of the
        checkpoint: a reference may then be resolved early and again when its target is folded —
        both apply the same idempotent update, so the result does not depend on timing
        (``tests/store/test_conversations.py::test_links_to_resumed_compacted_and_forked_from``).
        """
        r = self.store.r
        k = self.keys
        st = StepState()
        usage_keys, uuids, candidates = _step_needs(entries, items, st)
        ukeys, uids, cands = sorted(usage_keys), sorted(uuids), list(candidates)
        pipe = r.pipeline(transaction=False)
        if ukeys:
            pipe.hmget(k.usage_keys, ukeys)
        if uids:
            pipe.hmget(k.refs, uids)
        res = iter(pipe.execute())
        if ukeys:
            st.usage = {key: _state(v) for key, v in zip(ukeys, next(res), strict=True) if v}
        if uids:
            st.refs = {u: orjson.loads(v) for u, v in zip(uids, next(res), strict=True) if v}
        outside: dict[str, set[str]] = defaultdict(set)  # project → uuids referenced from outside
        for (conv, uuid), here in zip(cands, self.store.holds(cands), strict=True):
            if here:
                st.internal.add((conv, uuid))
            else:
                outside[candidates[(conv, uuid)]].add(uuid)
        if outside:
            self._locate(st, outside, entries, items)
        return st

    def _locate(
        self,
        st: StepState,
        outside: dict[str, set[str]],
        entries: list[LogEntry],
        items: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> None:
        """Which conversations of each project already hold the uuids referenced from outside."""
        r = self.store.r
        projects = sorted(outside)
        pipe = r.pipeline(transaction=False)
        for p in projects:
            pipe.smembers(self.keys.project_convs(p))
        members = dict(zip(projects, pipe.execute(), strict=True))
        convs: dict[str, set[str]] = {p: {c.decode() for c in members[p]} for p in projects}
        for entry, (env, _) in zip(entries, items, strict=True):
            if entry.project in convs:
                convs[entry.project].add(env["conv"])
        checks = [(p, uuid, c) for p in projects for uuid in sorted(outside[p]) for c in sorted(convs[p])]
        for (p, uuid, c), here in zip(checks, self.store.holds([(c, uuid) for _, uuid, c in checks]), strict=True):
            if here:
                st.located.setdefault((p, uuid), []).append(c)

    def changed_since(self, mark: float) -> tuple[list[str], float]:
        """Conversations whose projection changed after change ``mark``, and the newest mark."""
        rows = self.store.r.zrangebyscore(self.keys.proj_changed, f"({mark}", "+inf", withscores=True)
        newest = max((score for _, score in rows), default=mark)
        return [m.decode() for m, _ in rows], newest

    def change_mark(self) -> float:
        """The newest change mark (0 if none)."""
        top = self.store.r.zrevrange(self.keys.proj_changed, 0, 0, withscores=True)
        return float(top[0][1]) if top else 0.0

    def _rederive(self, entries: list[LogEntry]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Envelopes with facts recomputed from the stored bytes (what a rebuild trusts)."""
        envs = [e.env() for e in entries]
        bodies = self.store.bodies([(env["conv"], e.digest) for env, e in zip(envs, entries, strict=True)])
        for env, e, raw in zip(envs, entries, bodies, strict=True):
            if raw is None:
                raise StoreError(f"the bytes of event {env['id']} of {env['conv']} are not stored")
            yield env, facts(loads(raw), e.file_agent or None)

    # --- rebuild and digest ------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[str]:
        """Hold the projections' lock (``proj:lock``) for a rebuild or a forget; yields its token,
        which :meth:`catch_up` takes to apply steps while every other projector waits."""
        token = os.urandom(8).hex()
        if not self.store.client.set(self.keys.proj_lock, token, nx=True, px=REBUILD_LOCK_TTL_MS):
            raise StoreError("the projections are locked by a rebuild or a forget running now; try again later")
        try:
            yield token
        finally:
            unlock = scripts.project_unlock_call(proj_lock=self.keys.proj_lock, token=token)
            self._unlock(keys=unlock.keys, args=unlock.args)

    def rebuild(self) -> dict[str, Any]:
        """Drop every projection and recompute it from the log; returns counts, the digest, and the
        digest of the projections it replaced (equal when they were caught up and right)."""
        with self.locked() as token:
            before = self.digest()
            convs = self.store.conversations()
            k = self.keys
            dropped = [k.proj(c) for c in convs] + self.global_keys()
            dropped += [k.usage_tally(old) for old in LEGACY_USAGE_KEYS]
            # One atomic drop: a rebuild killed at any point leaves all or nothing dropped
            # (tests/process/test_projections.py::test_live_projections_after_kills_equal_the_rebuilt_ones).
            reset = scripts.project_reset_call(proj_seq=k.proj_seq, proj_lock=k.proj_lock, dropped=dropped, token=token)
            res = self._reset(keys=reset.keys, args=reset.args)
            if bytes(res) != b"ok":
                raise StoreError("lost the rebuild lock before dropping the projections")
            applied = self.catch_up(token=token, rederive=True)
        return {
            "rebuilt": ["conversations", "titles", "subagents", "links", "usage", "recent_messages"],
            "entries": applied,
            "conversations": len(convs),
            "seq": self.checkpoint(),
            "digest": self.digest(),
            "digest_before": before,
        }

    def digest(self) -> str:
        """Digest of every stored projection: same projections, same digest (up to collisions).

        Per 32-bit word, the sum mod 2**32 of SHA-1(kind, key, field or member, value or score)
        over every entry, so it does not depend on the order Redis returns them in. Reads every
        projection, key by key (``agg status --digest``, ``agg replay --rebuild``, tests): taken
        while another projector applies steps, it may mix two states — the rebuild reads it under
        its lock, which holds every other projector off.
        """
        r = self.store.r
        acc = [0] * 5

        def mix(kind: bytes, key: str, a: bytes, b: bytes) -> None:
            h = hashlib.sha1(kind + b"\0" + key.encode() + b"\0" + a + b"\0" + b).digest()
            for i in range(5):
                acc[i] = (acc[i] + int.from_bytes(h[4 * i : 4 * i + 4], "big")) % 2**32

        for conv, fields in self.conversation_projections(self.store.conversations()):
            key = self.keys.proj(conv)
            for f, v in fields.items():
                mix(b"h", key, f, v)
        for key in self.global_keys():
            kind = r.type(key)
            if kind == b"hash":
                for f, v in r.hscan_iter(key, count=1000):
                    mix(b"h", key, f, v)
            elif kind == b"zset":
                for m, s in r.zrange(key, 0, -1, withscores=True, score_cast_func=bytes):
                    mix(b"z", key, m, s)
            elif kind == b"set":
                for m in r.sscan_iter(key, count=1000):
                    mix(b"s", key, m, b"")
        return "".join(format(w, "08x") for w in acc)

    def conversation_projections(self, convs: Iterable[str]) -> Iterator[tuple[str, dict[bytes, bytes]]]:
        """``(conv, projection hash)`` for each of ``convs`` (:meth:`Store.projections`)."""
        return self.store.projections(convs)


def catch_up_all(where: StoreSet) -> int:
    """:meth:`Projector.catch_up` of every bucket of ``where`` (a cluster store's buckets; else
    the one store); returns how many entries were applied."""
    return sum(Projector(one).catch_up() for one in stores_of(where))
