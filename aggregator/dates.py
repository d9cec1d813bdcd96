"""Dates and times as users type them (``--since``, ``--until``), and the UTC periods usage is grouped by."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

from aggregator.errors import ConfigError

_RELATIVE = re.compile(r"^(\d+)\s*([hdw])$")
_UNITS_S = {"h": 3600, "d": 86400, "w": 7 * 86400}
DATE_HELP = "YYYY-MM-DD (UTC), YYYY-MM, an ISO time, 'today', 'yesterday', or an age such as 12h, 7d, 2w"


def parse_when(text: str, *, end: bool = False, now: float | None = None) -> int:
    """Epoch milliseconds of what a user typed as a date or time.

    A whole day or month means its start, or with ``end`` its last millisecond (so ``--until
    2026-02-12`` includes that day). Raises :class:`ConfigError` with the accepted forms.
    """
    raw = text.strip()
    low = raw.lower()
    now = time.time() if now is None else now
    if low in ("today", "yesterday"):
        d = datetime.fromtimestamp(now, UTC).date() - timedelta(days=1 if low == "yesterday" else 0)
        return _day_ms(d, end)
    m = _RELATIVE.match(low)
    if m:
        return int((now - int(m.group(1)) * _UNITS_S[m.group(2)]) * 1000)
    try:
        if re.fullmatch(r"\d{4}-\d{2}", raw):
            first = date.fromisoformat(raw + "-01")
            if not end:
                return _day_ms(first, False)
            nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
            return _day_ms(nxt, False) - 1
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return _day_ms(date.fromisoformat(raw), end)
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"bad date {text!r}: use {DATE_HELP}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _day_ms(d: date, end: bool) -> int:
    start = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
    return start + 86_400_000 - 1 if end else start


def day_of(ms: int) -> str:
    """``YYYY-MM-DD`` (UTC) of epoch milliseconds."""
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def week_of(day: str) -> str:
    """The Monday (``YYYY-MM-DD``) of the ISO week holding ``day``; ``""`` stays ``""``."""
    if not day:
        return ""
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


def month_of(day: str) -> str:
    """``YYYY-MM`` of ``day``; ``""`` stays ``""``."""
    return day[:7]
