"""agg's core library: settings, key names, Lua scripts, parsing, the store, the tailer."""

from __future__ import annotations

from aggregator.config import Settings
from aggregator.connection import Connection, open_redis
from aggregator.errors import AggError
from aggregator.keys import Keys
from aggregator.store import Store
from aggregator.tailer import Tailer

__all__ = ["AggError", "Connection", "Keys", "Settings", "Store", "Tailer", "open_redis"]
