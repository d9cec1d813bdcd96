"""Unit tests of line parsing: ids, conversations, rejections, odd but valid JSON."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest

from aggregator.layout import SourceFile
from aggregator.parse import Event, Rejection, parse_line, ts_ms

MAIN = SourceFile("/p/proj/sess-1.jsonl", "proj", "sess-1", None, "main")
LEGACY = SourceFile("/p/proj/agent-abc.jsonl", "proj", None, "abc", "legacy-agent")


def event(raw: bytes, sf: SourceFile = MAIN) -> Event:
    parsed = parse_line(raw, 0, sf)
    assert isinstance(parsed, Event), parsed
    return parsed


def rejection(raw: bytes, sf: SourceFile = MAIN) -> Rejection:
    parsed = parse_line(raw, 7, sf)
    assert isinstance(parsed, Rejection), parsed
    assert parsed.offset == 7 and parsed.size == len(raw)
    return parsed


def test_uuid_and_session_are_used_when_present() -> None:
    e = event(b'{"type":"user","uuid":"u-1","sessionId":"s-9","timestamp":"2025-01-02T03:04:05.678Z"}')
    assert (e.id, e.conv, e.is_msg) == ("u-1", "s-9", True)
    env = orjson.loads(b"{" + e.tail + b"}")
    assert env == {"id": "u-1", "type": "user", "ts": "2025-01-02T03:04:05.678Z", "agent": None}


def test_content_hash_id_and_file_session_when_missing() -> None:
    raw = b'{"type":"summary","summary":"x","leafUuid":"l"}'
    e = event(raw)
    assert e.id == "h:" + hashlib.sha256(raw).hexdigest()[:32]
    assert e.conv == "sess-1" and not e.is_msg
    assert e.digest == e.id[2:]


def test_unplaceable_line_is_rejected_with_reason() -> None:
    r = rejection(b'{"type":"summary","summary":"x"}', LEGACY)
    assert "unplaceable" in r.reason


def test_agent_from_record_or_file() -> None:
    assert (
        orjson.loads(b"{" + event(b'{"uuid":"a","sessionId":"s","agentId":"x1"}', LEGACY).tail + b"}")["agent"] == "x1"
    )
    assert orjson.loads(b"{" + event(b'{"uuid":"a","sessionId":"s"}', LEGACY).tail + b"}")["agent"] == "abc"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"type":"user","uuid":"a"', "invalid JSON"),
        (b'{"type":"pr-link","sessionId":"s","prNu{"parentUuid":"p","uuid":"u"}', "invalid JSON"),
        (b'{"a":1}{"b":2}', "invalid JSON"),
        (b"\x00" * 300 + b'{"uuid":"u"}', "invalid JSON"),
        (b'{"a":"\xff\xfe"}', "invalid UTF-8"),
        (b'{"a":NaN}', "invalid JSON"),
        (b'{"a":Infinity}', "invalid JSON"),
        (b'{"a":1e400}', "invalid JSON"),
        (b"[1,2,3]", "not a JSON object (list)"),
        (b'"just a string"', "not a JSON object (str)"),
        (b"42", "not a JSON object (int)"),
        (b"// Source: gist", "invalid JSON"),
        (b'{"a":' + b"[" * 1001 + b"]" * 1001 + b"}", "nesting deeper than 1000"),
    ],
)
def test_bad_lines_are_rejected_whole(raw: bytes, reason: str) -> None:
    r = rejection(raw)
    assert r.reason.startswith(reason)
    assert r.prefix == raw[:200]


def test_nesting_of_exactly_1000_is_valid() -> None:
    raw = b'{"uuid":"deep","a":' + b"[" * 999 + b"]" * 999 + b"}"
    assert event(raw).id == "deep"


def test_lone_surrogate_escape_is_valid_and_stored() -> None:
    raw = b'{"type":"user","uuid":"sur","sessionId":"s","message":{"content":"cut \\ud83d"}}'
    e = event(raw)
    assert e.raw == raw and e.id == "sur"


def test_lone_surrogate_in_ids_falls_back_to_content_hash() -> None:
    raw = b'{"type":"user","uuid":"\\ud83d","sessionId":"\\udc00"}'
    e = event(raw)
    assert e.id.startswith("h:") and e.conv == "sess-1"
    orjson.loads(b"{" + e.tail + b"}")  # the envelope stays valid JSON


def test_unknown_types_are_stored() -> None:
    e = event(b'{"type":"atis-latch","uuid":"q","sessionId":"s"}')
    assert orjson.loads(b"{" + e.tail + b"}")["type"] == "atis-latch"


def test_blank_lines_are_skipped() -> None:
    assert parse_line(b"", 0, MAIN) is None
    assert parse_line(b"  \t\r", 0, MAIN) is None


def test_non_string_ids_are_ignored() -> None:
    e = event(b'{"uuid":7,"sessionId":["x"],"type":3}')
    assert e.id.startswith("h:") and e.conv == "sess-1"
    assert orjson.loads(b"{" + e.tail + b"}")["type"] is None


@pytest.mark.parametrize(
    "ts",
    ["2025-06-01T12:34:56.789Z", "2025-06-01T12:34:56Z", "2025-06-01T12:34:56.789+02:00", "2025-06-01"],
)
def test_timestamps_to_ms_agree_with_the_general_parser(ts: str) -> None:
    from datetime import UTC, datetime

    d = datetime.fromisoformat(ts)
    d = d if d.tzinfo else d.replace(tzinfo=UTC)
    assert ts_ms(ts) == int(d.timestamp() * 1000)


@pytest.mark.parametrize("ts", ["2025-06-01T24:00:00.000Z", "2025-13-01T00:00:00.000Z", "nope", 5, None])
def test_bad_timestamps_have_no_ms(ts: object) -> None:
    assert ts_ms(ts) is None


def test_envelope_fragment_escapes_strange_text() -> None:
    e = event(json.dumps({"uuid": 'a"b\\c', "sessionId": "s", "type": "x\u2028y"}).encode())
    assert orjson.loads(b"{" + e.tail + b"}")["id"] == 'a"b\\c'
