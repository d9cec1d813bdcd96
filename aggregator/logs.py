"""One log format for every long-running agg process (``agg run`` and its parts, ``agg watch``,
``agg writer``, ``agg worker``): ``time level name: message`` on stderr.

``agg run``'s terminal is for what a user cares about — ready, a Redis outage and its end, a part
restarted, a rejected line and its file. Routine lines (each snapshot written, each LLM turn, RQ's
per-job and housekeeping lines) are kept for ``-v``; client libraries whose debug lines may show
request headers stay at WARNING even then.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

ROUTINE = ("rq", "agg.turns")
"""Loggers whose INFO lines are routine (RQ's per-job lines, one line per LLM turn): WARNING
unless verbose."""

QUIET = ("openai", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2")
"""Client libraries kept at WARNING: their debug logs may show request headers."""


def _not_rq_reconnecting(record: logging.LogRecord) -> bool:
    """RQ logs every attempt to reach Redis again (at ERROR); the worker says the outage once."""
    return "could not connect to Redis" not in record.getMessage()


def setup_logging(verbose: bool = False) -> None:
    """Send log lines to stderr in the one format; ``verbose`` shows the routine lines too."""
    root = logging.getLogger()
    if not any(getattr(h, "agg", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        handler.agg = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("agg").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ROUTINE:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    rq_worker = logging.getLogger("rq.worker")
    if not verbose and _not_rq_reconnecting not in rq_worker.filters:
        rq_worker.addFilter(_not_rq_reconnecting)


def rq_level(verbose: bool) -> str:
    """The level to give RQ's ``Worker.work(logging_level=...)`` (RQ sets its loggers' level)."""
    return "INFO" if verbose else "WARNING"
