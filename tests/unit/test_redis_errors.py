"""One mapping of Redis' errors: which mean "wait and retry", and the one line a user reads."""

from __future__ import annotations

import pytest
import redis

from aggregator.connection import as_agg_error, is_away
from aggregator.errors import RedisUnavailable

SCRIPT_OOM = (
    "Error running script (call to f_d9f6): @user_script:128: @user_script: 128: "
    "-OOM command not allowed when used memory > 'maxmemory'."
)


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("Connection refused"),
        redis.TimeoutError("Timeout reading from socket"),
        redis.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.ResponseError(SCRIPT_OOM),
        redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),  # a plain command's
        redis.ResponseError("MISCONF Errors writing to the AOF file: No space left on device"),
        RedisUnavailable("cannot reach Redis"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_waitable_errors(exc: BaseException) -> None:
    assert is_away(exc)


@pytest.mark.parametrize(
    "exc",
    [
        redis.AuthenticationError("invalid username-password pair"),
        redis.ResponseError("unknown command 'EVAL'"),
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.InvalidResponse('Protocol error, got "<" as reply type byte'),
        ValueError("not a Redis error"),
    ],
)
def test_refusals_that_waiting_does_not_change(exc: BaseException) -> None:
    assert not is_away(exc)


def test_one_line_without_the_script_wrapper() -> None:
    err = as_agg_error(redis.ResponseError(SCRIPT_OOM), "unix:///s?password=***")
    assert isinstance(err, RedisUnavailable) and err.exit_code == 3
    assert str(err) == (
        "Redis at unix:///s?password=*** answered with an error: "
        "OOM command not allowed when used memory > 'maxmemory'."
    )
    assert "\n" not in str(as_agg_error(redis.InvalidResponse("Protocol error\nmore")))
    assert as_agg_error(redis.InvalidResponse("Protocol error")).exit_code == 3
    plain = as_agg_error(redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."))
    assert str(plain) == "Redis answered with an error: OOM command not allowed when used memory > 'maxmemory'."
