"""One transcript line → an event to store, a rejection to record, or nothing (blank line).

Rules (docs/design.md §3):

* **Event id**: the record's ``uuid``; otherwise ``h:`` + the first 32 hex digits of the SHA-256
  of the line's bytes. The same SHA-256 prefix is the line's *digest*, under which its bytes are
  stored: same id + same digest = duplicate, same id + other digest = revision.
* **Conversation**: the record's ``sessionId``; else the session the file belongs to; else the
  line is rejected as unplaceable.
* **Rejected** (whole, no salvage): invalid UTF-8, invalid JSON (including ``NaN``/``Infinity``
  and numbers that overflow to infinity), nesting deeper than 1000, JSON that is not an object.
  A lone UTF-16 surrogate escape (``"\\ud83d"``) is valid JSON and is stored.
* Unknown ``type`` values are stored like any other record.

The *facts* of an event are the few fields projections need, extracted here once, stored with
the log entry, and re-derived from the stored bytes by ``agg replay --rebuild`` with this same
code — which is what makes a rebuild reproduce the live projections.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from aggregator import defaults
from aggregator.layout import SourceFile
from aggregator.titles import prompt_candidate

MESSAGE_TYPES = frozenset({"user", "assistant"})


@dataclass(slots=True)
class Event:
    """A line to store as (a version of) an event."""

    offset: int
    raw: bytes
    conv: str
    id: str
    digest: str
    is_msg: bool
    tail: bytes
    """The envelope's fields other than seq/conv/conv_seq/revision, as a JSON fragment."""
    facts: bytes
    tms: int | None = None
    """Record time (epoch ms; None if it has none): what a tombstone is compared with."""


@dataclass(slots=True)
class Rejection:
    """A line that cannot be stored as an event, with where and why."""

    offset: int
    size: int
    reason: str
    digest: str
    prefix: bytes


def digest_of(raw: bytes) -> str:
    """Content digest of a line (also the suffix of content-hash event ids)."""
    return hashlib.sha256(raw).hexdigest()[:32]


def usable_id(value: Any) -> str | None:
    """``value`` if it can serve as an id or key part (non-empty text, no control chars), else None."""
    if type(value) is not str or not 0 < len(value) <= defaults.MAX_ID_CHARS:
        return None
    if value.isascii():
        return value if value.isprintable() else None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None  # a lone surrogate: not usable as a key
    return value if value.isprintable() else None


def dumps(obj: Any) -> bytes:
    """JSON bytes of ``obj``; strings holding lone surrogates are written as ``\\uXXXX`` escapes."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


_MINUTE_MS: dict[str, int | None] = {}
_MINUTES_CACHED = 20_000
"""Distinct minutes whose epoch ms are cached (records come in bursts: the hit rate stays high)."""


def ts_ms(ts: Any) -> int | None:
    """Epoch milliseconds of an ISO-8601 timestamp (naive = UTC), or None."""
    if type(ts) is not str or not 10 <= len(ts) <= 40:
        return None
    if len(ts) == 24 and ts[23] == "Z" and ts[19] == "." and ts[16] == ":":
        # Claude Code's own format, YYYY-MM-DDTHH:MM:SS.mmmZ: skip the general parser (hot path);
        # the minute is parsed once by the general parser and cached.
        minute = ts[:16]
        base = _MINUTE_MS.get(minute, -1)
        if base == -1:
            if len(_MINUTE_MS) >= _MINUTES_CACHED:
                _MINUTE_MS.clear()
            ok = minute.isascii() and minute[4] == "-" and minute[7] == "-" and minute[10] == "T" and minute[13] == ":"
            base = _MINUTE_MS[minute] = _general_ts_ms(minute) if ok else None
        sec, ms = ts[17:19], ts[20:23]
        if base is not None and sec.isdigit() and ms.isdigit() and sec < "60" and sec.isascii() and ms.isascii():
            return base + int(sec) * 1000 + int(ms)
    return _general_ts_ms(ts)


def _general_ts_ms(ts: str) -> int | None:
    try:
        d = datetime.fromisoformat(ts)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int(d.timestamp() * 1000)


SYNTHETIC_MODEL = "<synthetic>"
"""``message.model`` of messages Claude Code made up locally (errors, interruptions): no usage."""

FACT_TEXT_CHARS = 500
"""Characters of a title or summary record kept in facts."""

FACT_SUMMARY_CHARS = 4000
"""Characters of agg's own conversation summary kept in facts."""


def _count(value: Any) -> int:
    """A token count as a non-negative int (absent, null, negative or not a number: 0)."""
    if type(value) is int:
        return value if value > 0 else 0
    if type(value) is float and value.is_integer() and value > 0:
        return int(value)
    return 0


def _cut(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def facts(obj: dict[str, Any], sf_agent: str | None) -> dict[str, Any]:
    """The fields of a record that projections use (see the module docstring).

    Always ``tms`` (record time, epoch ms, or None). Then, only for the record types that need them
    (this runs on the ingest hot path: a type test and a few dict lookups for most lines):

    * ``u`` — assistant records with ``message.usage``, except ``<synthetic>`` ones:
      ``[message.id, requestId, model, input, output, cache_read, cache_creation,
      cache_creation_1h]`` (ids null when absent or unusable; the last is the 1-hour share of the
      cache writes, from ``usage.cache_creation.ephemeral_1h_input_tokens``);
    * ``cwd`` — the working directory of a record that also carries ``p`` or ``c`` (a readable
      name for the project directory, see :mod:`aggregator.projects`);
    * ``p`` / ``c`` — a main transcript's real user prompt / bare slash command, ``sp`` — a
      subagent's or sidechain's prompt (title candidates, see :mod:`aggregator.titles`);
    * ``pu`` — ``parentUuid`` of a main transcript's non-sidechain ``user``/``system`` record, and
      ``lp`` — ``logicalParentUuid`` of a ``compact_boundary`` (links to another conversation);
    * ``fk`` — ``forkedFrom.sessionId`` (a forked conversation names its source);
    * ``sm`` — ``summary`` records: ``[text, leafUuid]``; ``ct`` / ``at`` — ``custom-title`` /
      ``ai-title`` text; ``tt`` — agg's own summary turn: ``[title, summary]``;
    * ``am`` — a subagent's ``.meta.json`` sidecar (stored as an ``agent-meta`` event):
      ``[agentId, agentType, description]``.
    """
    fx: dict[str, Any] = {"tms": ts_ms(obj.get("timestamp"))}
    rtype = obj.get("type")
    if type(rtype) is str:
        extract = _EXTRACT.get(rtype)
        if extract is not None:
            extract(obj, sf_agent, fx)
    return fx


def _assistant(obj: dict[str, Any], sf_agent: str | None, fx: dict[str, Any]) -> None:
    msg = obj.get("message")
    if type(msg) is dict:
        usage = msg.get("usage")
        model = msg.get("model")
        if type(usage) is dict and model != SYNTHETIC_MODEL:
            g = usage.get
            fx["u"] = [
                usable_id(msg.get("id")),
                usable_id(obj.get("requestId")),
                model if type(model) is str else "",
                _count(g("input_tokens")),
                _count(g("output_tokens")),
                _count(g("cache_read_input_tokens")),
                *_cache_writes(g("cache_creation_input_tokens"), g("cache_creation")),
            ]
    if "forkedFrom" in obj:
        _fork(obj, fx)


def _cache_writes(flat: Any, split: Any) -> tuple[int, int]:
    """``(cache writes, of which 1-hour writes)`` of a usage object.

    The total is the flat ``cache_creation_input_tokens``, or the sum of the nested
    ``cache_creation`` breakdown where that is larger (Claude Code < 2.1.152 could write the flat
    value as 0 when only the breakdown was reported). The 1-hour share is priced at its own rate.
    """
    total = _count(flat)
    if type(split) is not dict:
        return total, 0
    long = _count(split.get("ephemeral_1h_input_tokens"))
    short = _count(split.get("ephemeral_5m_input_tokens"))
    return max(total, short + long), long


def _user_or_system(obj: dict[str, Any], sf_agent: str | None, fx: dict[str, Any]) -> None:
    main = sf_agent is None and obj.get("isSidechain") is not True
    if main:
        pu = obj.get("parentUuid")
        if pu is not None and usable_id(pu):
            fx["pu"] = pu
        if obj.get("subtype") == "compact_boundary":
            lp = usable_id(obj.get("logicalParentUuid"))
            if lp:
                fx["lp"] = lp
    if obj.get("type") == "user":
        cand = prompt_candidate(obj)
        if cand:
            if main:
                fx[cand[0]] = cand[1]
                cwd = obj.get("cwd")
                if type(cwd) is str and 0 < len(cwd) <= FACT_TEXT_CHARS:
                    fx["cwd"] = cwd
            elif cand[0] == "p":
                fx["sp"] = cand[1]
    if "forkedFrom" in obj:
        _fork(obj, fx)


def _summary(obj: dict[str, Any], sf_agent: str | None, fx: dict[str, Any]) -> None:
    fx["sm"] = [_cut(obj.get("summary"), FACT_TEXT_CHARS), usable_id(obj.get("leafUuid"))]


def _custom_title(obj: dict[str, Any], sf_agent: str | None, fx: dict[str, Any]) -> None:
    fx["ct"] = _cut(obj.get("customTitle"), FACT_TEXT_CHARS)


def _ai_title(obj: dict[str, Any], sf_agent: str | None, fx: dict[str, Any]) -> None:
    fx["at"] = _cut(obj.get("aiTitle"), FACT_TEXT_CHARS)


def _agg_turn(obj: dict[str, Any], sf_agent: str | None, fx: dict[str, Any]) -> None:
    turn = obj.get("turn")
    if isinstance(turn, dict) and turn.get("kind") == "summary":
        fx["tt"] = [_cut(turn.get("title"), FACT_TEXT_CHARS), _cut(turn.get("summary"), FACT_SUMMARY_CHARS)]


def _agent_meta(obj: dict[str, Any], sf_agent: str | None, fx: dict[str, Any]) -> None:
    meta = obj.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    fx["am"] = [
        usable_id(obj.get("agentId")),
        _cut(meta.get("agentType"), FACT_TEXT_CHARS),
        _cut(meta.get("description"), FACT_TEXT_CHARS),
    ]


_EXTRACT: dict[str, Callable[[dict[str, Any], str | None, dict[str, Any]], None]] = {
    "assistant": _assistant,
    "user": _user_or_system,
    "system": _user_or_system,
    "summary": _summary,
    "custom-title": _custom_title,
    "ai-title": _ai_title,
    "agg-turn": _agg_turn,
    "agent-meta": _agent_meta,
}
"""Record type → what its facts add (other types: only ``tms``)."""


def _fork(obj: dict[str, Any], fx: dict[str, Any]) -> None:
    fork = obj.get("forkedFrom")
    if isinstance(fork, dict):
        src = usable_id(fork.get("sessionId"))
        if src:
            fx["fk"] = src


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number is infinity when parsed as double")
    return value


def _depth(obj: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if d > deepest:
            deepest = d
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return deepest


def loads(raw: bytes) -> Any:
    """Parse a line strictly; raises ValueError with the reason it is not valid JSON.

    orjson does the work; only lines it refuses go through the standard library, which accepts
    lone surrogate escapes (valid JSON that orjson rejects) but is held to the same other rules.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("invalid UTF-8") from None
        try:
            obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except RecursionError:
            raise ValueError(f"nesting deeper than {defaults.MAX_JSON_DEPTH} levels") from None
        except ValueError:
            raise ValueError(f"invalid JSON: {e}") from None
    # Depth d needs at least d opening and d closing brackets: only long lines can be too deep.
    if (
        len(raw) > 2 * defaults.MAX_JSON_DEPTH
        and raw.count(b"[") + raw.count(b"{") > defaults.MAX_JSON_DEPTH
        and isinstance(obj, dict | list)
        and _depth(obj) > defaults.MAX_JSON_DEPTH
    ):
        raise ValueError(f"nesting deeper than {defaults.MAX_JSON_DEPTH} levels")
    return obj


_MAX_ID = defaults.MAX_ID_CHARS
_PREFIX = defaults.REJECT_PREFIX_BYTES
_DEEP = defaults.MAX_JSON_DEPTH
_BLANK_START = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.strip() removes
_sha256 = hashlib.sha256
_orjson_loads = orjson.loads
_orjson_dumps = orjson.dumps


class _Invalid:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _orjson_depth_limit() -> int:
    """The deepest nesting orjson accepts (1024 in orjson 3), found by trying."""
    lo, hi = 0, 1 << 16  # orjson accepts depth lo and rejects depth hi
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        try:
            _orjson_loads(b"[" * mid + b"]" * mid)
            lo = mid
        except ValueError:
            hi = mid
    return lo


# Wrapped in _PAD more arrays, a line parses only if its own depth is at most MAX_JSON_DEPTH:
# orjson's nesting limit makes the depth check, instead of counting brackets over the line.
_PAD = max(0, _orjson_depth_limit() - _DEEP)
_OPEN, _CLOSE = b"[" * _PAD, b"]" * _PAD


def _load(raw: bytes) -> Any:
    """:func:`loads`, or an :class:`_Invalid` with the reason (the fast path inlined)."""
    try:
        if len(raw) <= 2 * _DEEP:
            return _orjson_loads(raw)  # depth d needs 2d bytes: too short to be too deep
        obj = _orjson_loads(b"".join((_OPEN, raw, _CLOSE)))
        # Each wrapper holding exactly one element proves the line is one JSON value on its own
        # (a spliced line like `1],[2` parses wrapped, but leaves a wrapper with two elements).
        for _ in range(_PAD):
            if type(obj) is not list or len(obj) != 1:
                raise ValueError("not one value")
            obj = obj[0]
        return obj
    except ValueError:  # orjson's JSONDecodeError too: the general path decides, and says why
        try:
            return loads(raw)
        except ValueError as e:
            return _Invalid(str(e))


def parse_line(raw: bytes, offset: int, sf: SourceFile) -> Event | Rejection | None:
    """Parse one complete line (without its newline) found at ``offset`` of ``sf``."""
    # The hot path of ingest: usable_id(), loads() and dumps() are inlined for the common case
    # (ASCII ids, orjson-parsable lines), with the general functions as the fallback.
    if not raw or (raw[0] in _BLANK_START and not raw.strip()):
        return None
    h = _sha256(raw).hexdigest()[:32]
    obj = _load(raw)
    if type(obj) is _Invalid:
        return Rejection(offset, len(raw), obj.reason, h, raw[:_PREFIX])
    if type(obj) is not dict:
        kind = type(obj).__name__
        return Rejection(offset, len(raw), f"not a JSON object ({kind})", h, raw[:_PREFIX])
    get = obj.get
    conv = get("sessionId")
    if not (type(conv) is str and 0 < len(conv) <= _MAX_ID and conv.isascii() and conv.isprintable()):
        conv = usable_id(conv) or sf.session
        if conv is None:
            return Rejection(
                offset, len(raw), "unplaceable: no sessionId and the file names no session", h, raw[:_PREFIX]
            )
    eid = get("uuid")
    if not (type(eid) is str and 0 < len(eid) <= _MAX_ID and eid.isascii() and eid.isprintable()):
        eid = usable_id(eid) or "h:" + h
    agent = get("agentId")
    if agent is None:
        agent = sf.agent
    elif not (type(agent) is str and 0 < len(agent) <= _MAX_ID and agent.isascii() and agent.isprintable()):
        agent = usable_id(agent) or sf.agent
    rtype = get("type")
    if not isinstance(rtype, str):
        rtype = None
    ts = get("timestamp")
    if not isinstance(ts, str):
        ts = None
    try:
        tail = _orjson_dumps({"id": eid, "type": rtype, "ts": ts, "agent": agent})
    except TypeError:
        tail = dumps({"id": eid, "type": rtype, "ts": ts, "agent": agent})
    fx = facts(obj, sf.agent)
    try:
        fb = _orjson_dumps(fx)
    except TypeError:
        fb = dumps(fx)
    return Event(offset, raw, conv, eid, h, rtype in MESSAGE_TYPES, tail[1:-1], fb, fx["tms"])
