"""agg's core library: settings, key names, Lua scripts, parsing, the store, the tailer, projections.

Layers, each importing only those below it (``tests/unit/test_layers.py`` walks the imports)::

    cli/                the ``agg`` command (click)
    aggregator/live/    long-running roles: watcher, writer, subscribe, supervisor, status
    workers/            LLM turns on RQ
    aggregator/         this library (flat): never imports aggregator.live, workers or cli

Modules: :mod:`~aggregator.config` (settings), :mod:`~aggregator.defaults` (every tunable
number), :mod:`~aggregator.errors` (the exception tree), :mod:`~aggregator.keys` (every Redis
key), :mod:`~aggregator.paths` (every file under the data dir), :mod:`~aggregator.scripts` (the
Lua scripts), :mod:`~aggregator.connection` and :mod:`~aggregator.embedded` (reaching Redis),
:mod:`~aggregator.endpoint` (URLs and the connection record, without redis-py),
:mod:`~aggregator.quickredis` (the read-only client ``agg status`` and ``agg usage`` start on),
:mod:`~aggregator.seqfloor` (seq never goes back), :mod:`~aggregator.layout` (where transcripts
live), :mod:`~aggregator.parse` (a line → an event), :mod:`~aggregator.titles`,
:mod:`~aggregator.text`, :mod:`~aggregator.store` (committing and reading events),
:mod:`~aggregator.buckets` (the store on a Redis Cluster: buckets, and reading over them),
:mod:`~aggregator.compaction` (idle conversations' lines sealed into compressed chunks),
:mod:`~aggregator.tailer` and :mod:`~aggregator.sidecars` (files → store),
:mod:`~aggregator.ingest` (``agg ingest``), :mod:`~aggregator.projections`,
:mod:`~aggregator.views` and :mod:`~aggregator.usage` (what is derived),
:mod:`~aggregator.prices` (what tokens cost), :mod:`~aggregator.dates` (dates as users type them),
:mod:`~aggregator.projects` (projects as directory paths), :mod:`~aggregator.fts`,
:mod:`~aggregator.searchindex` and :mod:`~aggregator.search` (full-text search),
:mod:`~aggregator.listing` (``agg list``), :mod:`~aggregator.forget` (``agg forget``), :mod:`~aggregator.transcript` and
:mod:`~aggregator.render` (a conversation as people read it), :mod:`~aggregator.files`
and :mod:`~aggregator.lifecycle` (private files, stopping, state files, locks),
:mod:`~aggregator.backoff` (the one backoff policy), :mod:`~aggregator.children` (the one child-process
supervisor), :mod:`~aggregator.logs` (the one log format).
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.connection import Connection, open_redis
    from aggregator.errors import AggError
    from aggregator.keys import Keys
    from aggregator.store import Store
    from aggregator.tailer import Tailer

__all__ = ["AggError", "Connection", "Keys", "Settings", "Store", "Tailer", "open_redis"]

_HOMES = {
    "AggError": "aggregator.errors",
    "Connection": "aggregator.endpoint",
    "Keys": "aggregator.keys",
    "Settings": "aggregator.config",
    "Store": "aggregator.store",
    "Tailer": "aggregator.tailer",
    "open_redis": "aggregator.connection",
}


def __getattr__(name: str) -> object:
    """The names above, imported on first use: importing one light module of the library
    (``aggregator.keys``) must not import redis-py — the CLI's start-up time
    (``tests/unit/test_cli_imports.py``)."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'aggregator' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
