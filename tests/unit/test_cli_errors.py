"""One error handler at the CLI's entry: a command needs no decorator to end in one line."""

from __future__ import annotations

import errno

import click
import pytest
import redis
from click.testing import CliRunner

from aggregator.errors import ConfigError, EvictingRedis, Interrupted, NotFound, NotRedis
from cli.app import AggGroup
from cli.main import cli

FAULTS: dict[str, tuple[BaseException, int, str]] = {
    "config": (ConfigError("bad namespace 'a b'"), 2, "agg: bad namespace 'a b'"),
    "evicting": (EvictingRedis("Redis may evict"), 3, "agg: Redis may evict"),
    "not-redis": (NotRedis("x does not speak the Redis protocol"), 3, "agg: x does not speak the Redis protocol"),
    "redis": (redis.ConnectionError("Connection refused"), 3, "agg: lost the connection to Redis: Connection refused"),
    "not-found": (NotFound("no conversation 'x'"), 4, "agg: no conversation 'x'"),
    "interrupted": (Interrupted("interrupted: 3 of 9 files"), 130, "agg: interrupted: 3 of 9 files"),
    "disk": (
        OSError(errno.ENOSPC, "No space left on device", "/x/current.json"),
        1,
        "agg: No space left on device: /x/current.json",
    ),
}


@click.group(cls=AggGroup)
def group() -> None:
    """A group like agg's."""


@group.group("sub")
def sub() -> None:
    """A sub-group (`agg redis …`)."""


def _command(name: str, exc: BaseException) -> None:
    @sub.command(name)
    def fails() -> None:
        raise exc


for _name, (_exc, _, _) in FAULTS.items():
    _command(_name, _exc)
_command("ctrl-c", KeyboardInterrupt())


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_error_is_one_line_and_its_exit_code(name: str) -> None:
    _, code, line = FAULTS[name]
    res = CliRunner().invoke(group, ["sub", name])
    assert (res.exit_code, res.stderr.splitlines(), res.stdout) == (code, [line], "")


def test_ctrl_c_exits_130_without_click_s_aborted() -> None:
    res = CliRunner().invoke(group, ["sub", "ctrl-c"])
    assert (res.exit_code, res.stderr) == (130, "")


def test_agg_is_such_a_group() -> None:
    assert isinstance(cli, AggGroup)
