"""Which keys Lua scripts touch, seen through MONITOR: on a Redis Cluster a script may only touch
the keys it is given (KEYS), so every key name is spelled by :mod:`aggregator.keys`, never in Lua."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_NO_KEY = {b"TIME", b"PUBLISH"}
_ALL_KEYS = {b"UNLINK", b"DEL", b"EXISTS"}
_END = b"scriptkeys-end-of-watch"


@dataclass
class ScriptKeys:
    """The scripts run while watched: for each, its declared KEYS and the keys its commands touched."""

    calls: list[tuple[set[bytes], set[bytes]]] = field(default_factory=list)

    def undeclared(self) -> set[bytes]:
        """Keys a script touched without being given them."""
        return {k for declared, touched in self.calls for k in touched - declared}


def _tokens(line: bytes) -> tuple[bytes, list[bytes]]:
    """The client (``lua``, ``unix:…``, an address) and the unescaped arguments of a MONITOR line."""
    client = line.split(b"[", 1)[1].split(b"]", 1)[0].split(b" ", 1)[1]
    args = [re.sub(rb"\\(.)", rb"\1", t) for t in _TOKEN.findall(line.split(b"]", 1)[1])]
    return client, args


def _touched(args: list[bytes]) -> set[bytes]:
    name = args[0].upper()
    if name in _NO_KEY:
        return set()
    return set(args[1:]) if name in _ALL_KEYS else set(args[1:2])


@contextmanager
def watch_scripts(r: redis.Redis) -> Iterator[ScriptKeys]:
    """Record, through MONITOR on ``r``'s server, the keys every script run in the block declares
    and touches."""
    seen = ScriptKeys()
    ready = threading.Event()
    lines: list[bytes] = []

    def listen() -> None:
        with r.monitor() as m:
            ready.set()
            while True:
                line = m.connection.read_response()
                if _END in line:
                    return
                lines.append(line)

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    ready.wait(5)
    r.ping()  # MONITOR's OK is read before the block's commands run
    try:
        yield seen
    finally:
        r.echo(_END)
        reader.join(10)
        for line in lines:
            client, args = _tokens(line)
            if args and args[0].upper() in (b"EVALSHA", b"EVAL") and client != b"lua":
                n = int(args[2])
                seen.calls.append((set(args[3 : 3 + n]), set()))
            elif client == b"lua" and args and seen.calls:
                seen.calls[-1][1].update(_touched(args))


def run_watched(r: redis.Redis, action: Callable[[], object]) -> ScriptKeys:
    """``action()`` with its scripts watched (:func:`watch_scripts`)."""
    with watch_scripts(r) as seen:
        action()
    return seen
