"""One LLM turn about one conversation: read what is new, call the turn function, commit.

A turn (run by an RQ job, :func:`run_turn`) takes the conversation's lease (:mod:`workers.lease`),
reads the entries after the last seq the previous turn saw (:mod:`workers.history`), hands them
to the turn function and appends its result to the conversation as an event — a record of type
``agg-turn``, stored, sequenced, logged and published exactly like a transcript line::

    {"type": "agg-turn", "uuid": "<unique per turn>", "sessionId": "<conversation>",
     "timestamp": "<ISO-8601 UTC, ms, Z>",
     "turn": {"kind": "summary", "title": "…", "summary": "…", "upto_seq": <last seq seen>,
              "provider": "…", "model": "…"}}

The default turn function, :func:`summary_turn`, keeps a title and a rolling summary: the
previous summary plus the newest messages that fit the token budget. ``AGG_TURN=module:function``
plugs in another one (e.g. a bot that answers in each conversation): it receives a
:class:`TurnContext` and returns a JSON-serialisable dict (its ``kind`` defaults to ``custom``;
``upto_seq``, ``provider`` and ``model`` are added) or None for "nothing to record". It runs under
the same lease, limits, retries and fencing as the default.

What a turn does when it cannot finish: a provider failure that outlasts the retries parks the
conversation (its error shown by ``agg status``, retried later with a doubling delay); an
exception from a turn function does the same; waiting too long for the shared limits, a daily
token budget that is used up (:mod:`workers.budget`), or a shutdown, hands the turn back to be run
again (not a failure).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from aggregator import defaults
from aggregator.errors import ConfigError, LimitTimeout, ProviderError, TurnError
from aggregator.keys import Keys
from aggregator.layout import SourceFile
from aggregator.parse import Event, dumps, parse_line
from aggregator.seqfloor import SeqFloor
from aggregator.store import Store
from aggregator.text import now_iso
from workers import prompt
from workers.budget import DailyBudget
from workers.config import TurnConfig
from workers.history import TURN_TYPE, History, Message, read_new
from workers.lease import Fence, Heartbeat, Lease
from workers.limits import Limiter
from workers.providers import Caller, CallStats, Provider, make_provider

log = logging.getLogger("agg.turns")


@dataclass
class TurnContext:
    """What a turn function gets: the new part of one conversation, and a way to call the LLM."""

    conv: str
    project: str
    previous: dict[str, Any] | None
    """The ``turn`` object of the conversation's last committed turn (None before the first)."""
    messages: list[Message]
    """New user/assistant messages since the last turn, oldest first, the newest within budget."""
    upto_seq: int
    """The newest seq this turn saw (recorded in its result)."""
    new_entries: int
    truncated: bool
    """True if older new messages were left out to fit the budget."""
    provider: str
    model: str
    max_output_tokens: int
    _call: Callable[[str, str, int], str]

    def complete(self, system: str, user: str, max_tokens: int | None = None) -> str:
        """Ask the configured provider (through the shared limits, with retries); its answer text."""
        return self._call(system, user, max_tokens or self.max_output_tokens)


TurnFunction = Callable[[TurnContext], "dict[str, Any] | None"]


def summary_turn(ctx: TurnContext) -> dict[str, Any] | None:
    """The default turn: title and rolling summary (previous summary + the new messages); nothing
    to record if the answer changes neither."""
    if not ctx.messages:
        return None
    prev = ctx.previous or {}
    title0 = str(prev.get("title") if isinstance(prev.get("title"), str) else "")
    summary0 = str(prev.get("summary") if isinstance(prev.get("summary"), str) else "")
    messages = [(m.role if m.typed or m.role != "user" else prompt.CONTEXT, m.text) for m in ctx.messages]
    title, summary = prompt.parse_answer(ctx.complete(prompt.SYSTEM, prompt.build(title0, summary0, messages)), title0)
    if (title, summary) == (title0, summary0):
        return None
    return {"kind": "summary", "title": title, "summary": summary}


def load_turn_function(spec: str) -> TurnFunction:
    """The function ``module:function`` names (``AGG_TURN``); :class:`ConfigError` if it cannot be."""
    if not spec:
        return summary_turn
    module, _, name = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # any import-time error of the user's module is a configuration error
        raise ConfigError(f"AGG_TURN={spec!r}: cannot import {module}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ConfigError(f"AGG_TURN={spec!r}: {module} has no function {name}")
    return fn  # type: ignore[no-any-return]


def turn_event(conv: str, project: str, turn: dict[str, Any]) -> Event:
    """The event of a turn result: its record parsed by the ingest parser itself, so that its id,
    digest, envelope fields and facts are exactly what ingesting the same line would give."""
    record = {"type": TURN_TYPE, "uuid": str(uuid.uuid4()), "sessionId": conv, "timestamp": now_iso(), "turn": turn}
    raw = dumps(record)
    event = parse_line(raw, 0, SourceFile("", project, conv, None, "turn"))
    if not isinstance(event, Event) or event.conv != conv:
        raise TurnError(f"turn record of {conv!r} does not parse back to its conversation")
    return event


class TurnRunner:
    """Runs turns in one worker process (one per process; see :func:`install`).

    ``buckets``: the keys of each bucket of a Redis Cluster store (None: one store, ``keys``);
    a turn reads and commits in its conversation's bucket. ``queue_client``: the queue's Redis,
    which holds the shared limits and the daily budget (None: ``client``).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        config: TurnConfig,
        *,
        provider: Provider | None = None,
        turn_fn: TurnFunction | None = None,
        sleep: Callable[[float], None] = time.sleep,
        floor: SeqFloor | None = None,
        buckets: Sequence[Keys] | None = None,
        queue_client: redis.Redis | None = None,
    ) -> None:
        self.config = config
        self.floor = floor
        heartbeat = Heartbeat()
        self.stores = [Store(client, k) for k in (buckets if buckets is not None else [keys])]
        self.fences = [Fence(client, s.keys, heartbeat) for s in self.stores]
        self.store, self.fence = self.stores[0], self.fences[0]
        shared = queue_client if queue_client is not None else client
        self.provider = provider or make_provider(config)
        self.limiter = Limiter(shared, keys, config, sleep=sleep)
        self.caller = Caller(self.provider, self.limiter, DailyBudget(shared, keys, config), config, sleep=sleep)
        self.turn_fn = turn_fn or load_turn_function(config.turn)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, conv: str, gen: int, bucket: int = 0) -> str:
        """Run the turn of ``conv`` (in ``bucket``) dispatched as generation ``gen``; returns its
        outcome."""
        cfg = self.config
        started = time.perf_counter()
        store = self.stores[bucket]
        lease = self.fences[bucket].acquire(conv, gen, cfg.lease_ms, self.holder)
        if lease is None:
            log.info("turn conv=%s gen=%d outcome=stale-job", conv, gen)
            return "stale-job"
        stats = CallStats()
        info: dict[str, Any] = {}
        with lease:
            try:
                outcome = self._turn(store, lease, stats, info)
            except LimitTimeout as e:
                lease.release("abort")
                log.info("turn of %s handed back: %s", conv, e)
                outcome = "gave-back"
            except redis.RedisError as e:
                # Redis went away mid-turn: not the conversation's fault, so no parking. Hand the
                # turn back if we can; otherwise its lease lapses and the reconciler redoes it.
                log.warning("turn of %s interrupted by Redis: %s", conv, e)
                with contextlib.suppress(redis.RedisError):
                    lease.release("abort")
                outcome = "gave-back"
            except ProviderError as e:
                outcome = self._fail(lease, str(e))
            except Exception as e:  # a turn function's bug or bad result, or RQ's job timeout
                outcome = self._fail(lease, f"{type(e).__name__}: {e}")
            except BaseException:
                # Shutdown (cold SIGTERM, Ctrl-C): hand the turn back now rather than at lease expiry.
                with contextlib.suppress(Exception):
                    lease.release("abort")
                raise
        with contextlib.suppress(redis.RedisError):
            self._count(store, stats)
        ms = (time.perf_counter() - started) * 1000
        log.info(
            "turn conv=%s gen=%d epoch=%d outcome=%s seq=%s entries=%s messages=%s calls=%d ms=%.2f provider_ms=%.2f",
            conv,
            gen,
            lease.epoch,
            outcome,
            info.get("seq", "-"),
            info.get("entries", 0),
            info.get("messages", 0),
            stats.requests,
            ms,
            stats.provider_s * 1000,
        )
        return outcome

    def _fail(self, lease: Lease, error: str) -> str:
        cfg = self.config
        text = cfg.scrub(error)
        res = lease.release("fail", error=text, park_base_ms=cfg.park_base_ms, park_max_ms=cfg.park_max_ms)
        if res[0] == "parked":
            retry_in = max(0.0, int(res[2]) / 1000 - time.time())
            log.warning("turn of %s failed (%d in a row), parked for %.1f s: %s", lease.conv, res[1], retry_in, text)
            return "parked"
        return "stale-commit"

    def _budget_chars(self, lease: Lease) -> int:
        prev_summary = str((lease.last or {}).get("summary") or "")
        chars = self.config.budget_tokens * defaults.CHARS_PER_TOKEN - len(prompt.SYSTEM) - len(prev_summary) - 400
        return max(1000, chars)

    def _turn(self, store: Store, lease: Lease, stats: CallStats, info: dict[str, Any]) -> str:
        cfg = self.config
        conv = lease.conv
        h: History = read_new(
            store,
            conv,
            lease.done,
            budget_chars=self._budget_chars(lease),
            message_max_chars=defaults.TURN_MESSAGE_MAX_CHARS,
        )
        info["entries"] = h.entries
        info["messages"] = len(h.messages)
        if not h.upto_seq:
            lease.release("skip")
            return "nothing-new"
        too_old = h.newest_ms is not None and time.time() * 1000 - h.newest_ms > cfg.max_age_days * 86_400_000
        if cfg.max_age_days > 0 and too_old:
            lease.release("skip_old")
            return "too-old"
        deadline = time.monotonic() + cfg.limit_wait_max_s
        ctx = TurnContext(
            conv=conv,
            project=h.project,
            previous=lease.last,
            messages=h.messages,
            upto_seq=h.upto_seq,
            new_entries=h.entries,
            truncated=h.truncated,
            provider=cfg.provider,
            model=self.provider.model,
            max_output_tokens=cfg.max_output_tokens,
            _call=lambda system, user, max_tokens: (
                self.caller.call(system, user, max_tokens, stats, deadline=deadline).text
            ),
        )
        result = self.turn_fn(ctx)
        if result is None:
            lease.release("skip", done=h.upto_seq)
            return "skipped"
        turn = self._turn_object(result, h.upto_seq)
        status, seq = lease.commit(
            turn_event(conv, h.project, turn),
            project=h.project,
            upto_seq=h.upto_seq,
            result=turn,
            cooldown_ms=cfg.cooldown_ms,
        )
        info["seq"] = seq or "-"
        if seq and self.floor is not None:
            self.floor.observe(seq)  # a turn hands out seqs too: never to be reused (aggregator.seqfloor)
        if status == "stale":
            log.warning("turn of %s lost its lease before committing (epoch %d): result discarded", conv, lease.epoch)
            return "stale-commit"
        return "committed"

    def _turn_object(self, result: Any, upto_seq: int) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise TurnError(f"the turn function returned {type(result).__name__}, not a dict or None")
        kind = result.get("kind", "custom")
        if not isinstance(kind, str) or not kind:
            raise TurnError("the turn function's result has a 'kind' that is not a non-empty string")
        turn = {"kind": kind, **{k: v for k, v in result.items() if k != "kind"}}
        turn.update(upto_seq=upto_seq, provider=self.config.provider, model=self.provider.model)
        try:
            dumps(turn)  # as turn_event will write it (a lone surrogate in a text is fine)
        except TypeError as e:
            raise TurnError(f"the turn function's result is not JSON: {e}") from None
        return turn

    def _count(self, store: Store, stats: CallStats) -> None:
        if not stats.requests:
            return
        k = store.keys.turns_stats
        pipe = store.client.pipeline(transaction=False)
        pipe.hincrby(k, "calls", stats.requests)
        pipe.hincrby(k, "input_tokens", stats.input_tokens)
        pipe.hincrby(k, "output_tokens", stats.output_tokens)
        pipe.execute()


_runner: TurnRunner | None = None


def install(runner: TurnRunner | None) -> None:
    """Make ``runner`` the one :func:`run_turn` uses in this process (``agg worker`` does this)."""
    global _runner
    _runner = runner


def run_turn(conv: str, gen: int, bucket: int = 0) -> str:
    """The RQ job of a turn (its payload holds only the conversation and the generation, and on a
    Redis Cluster store the conversation's bucket)."""
    if _runner is None:
        raise TurnError("no turn runner in this process: turn jobs run under `agg worker`")
    if not 0 <= int(bucket) < len(_runner.stores):
        raise TurnError(f"turn job for bucket {bucket}, but this worker's store has {len(_runner.stores)}")
    return _runner.run(conv, int(gen), int(bucket))
