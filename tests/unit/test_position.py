"""Positions across the buckets of a Redis Cluster store (``agg tail --since 3:120,7:55``)."""

from __future__ import annotations

import pytest

from aggregator.errors import ConfigError
from aggregator.live.subscribe import format_position, parse_position, with_bucket


def test_a_position_reads_back_as_it_is_written() -> None:
    assert parse_position("3:120,7:55") == {3: 120, 7: 55}
    assert parse_position(" 7:55, 3:120 ") == {3: 120, 7: 55}
    assert parse_position("0") == {} and parse_position("0:0") == {0: 0}
    assert parse_position("3:9223372036854775807") == {3: 2**63 - 1}  # the largest seq INCR gives
    assert format_position({7: 55, 3: 120, 4: 0}) == "3:120,7:55"  # a bucket at 0 is its beginning anyway
    assert format_position({}) == "0" and format_position({2: 0}) == "0"
    for pos in ({15: 1}, {0: 9, 1: 8, 12: 7}):
        assert parse_position(format_position(pos)) == pos


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("3:120,", "bucket:seq pairs"),
        ("3", "bucket:seq pairs"),
        ("3:-1", "bucket:seq pairs"),
        ("a:1", "bucket:seq pairs"),
        ("16:1", "bucket 16 does not exist"),
        ("3:1,3:2", "bucket 3 is named twice"),
        ("3:9223372036854775808", "too large"),
        ("3:\u00b2", "bucket:seq pairs"),  # a digit to str.isdigit, not to int
        ("\u00b2:1", "bucket:seq pairs"),
        ("\u0663:5", "bucket:seq pairs"),  # ARABIC-INDIC DIGIT THREE: int reads it, a user does not mean it
        ("3:99999999999999999999999", "too large"),
    ],
)
def test_a_bad_position_is_refused_in_one_line(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_position(text)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_an_envelope_gets_its_bucket() -> None:
    raw = b'{"seq":4,"conv":"c","conv_seq":1,"id":"u","type":"user","ts":null,"agent":null,"revision":0}'
    assert with_bucket(raw, 3) == raw[:-1] + b',"bucket":3}'
