"""Running a command on the quick client first (``agg status``, ``agg usage``).

The command's body runs with :attr:`cli.app.App.quick` set, so that :meth:`cli.app.App.connect`
opens :mod:`aggregator.quickredis`' client instead of redis-py's. If that client cannot answer it
raises :class:`~aggregator.errors.QuickFallback` before the body prints anything (both commands
print only once every read is done), and the body runs again from the start on redis-py, which
does what it always did: starts the embedded server, writes, and words the errors.

``AGG_QUICK`` (read here): ``1`` (default) as above; ``0`` never tries the quick client; ``only``
never falls back — the command fails with one line saying why the quick client could not answer
(for tests and benchmarks, which must know which path answered).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from aggregator.errors import AggError, ConfigError, QuickFallback
from cli.app import App

T = TypeVar("T")

MODES = ("1", "0", "only")


def quick_mode() -> str:
    """``AGG_QUICK``: ``1`` (default), ``0`` or ``only`` (module docstring)."""
    mode = os.environ.get("AGG_QUICK", "").strip() or "1"
    if mode not in MODES:
        raise ConfigError(f"bad AGG_QUICK {mode!r}: use 1 (quick client, else redis-py), 0 (redis-py) or only")
    return mode


def run_quick(app: App, body: Callable[[], T], scripts: Mapping[str, str | None] | None = None) -> T:
    """``body()`` on the quick client, allowed to run the read-only ``scripts`` (besides the
    library's, :data:`aggregator.scripts.READ_ONLY`); again on redis-py if it hands over."""
    mode = quick_mode()
    if mode == "0":
        return body()
    app.close()
    app.quick = dict(scripts or {})
    try:
        return body()
    except QuickFallback as e:
        if mode == "only":
            raise AggError(f"the quick client could not answer (AGG_QUICK=only): {e}") from None
    finally:
        app.close()
        app.quick = None
    return body()
