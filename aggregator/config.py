"""Settings shared by every agg process.

Each setting comes from a command-line option, else an environment variable, else a default
(:mod:`aggregator.defaults`). The CLI resolves options and env vars with click; library users
build :class:`Settings` directly or with :meth:`Settings.from_env`.

========================= ================== ==============================================
setting                   environment        default
========================= ================== ==============================================
``redis_url``             ``AGG_REDIS_URL``  none: the embedded redis-server under data_dir
``namespace``             ``AGG_NAMESPACE``  ``agg``
``data_dir``              ``AGG_DATA_DIR``   the platform's user data dir for ``agg``
``claude_dirs``           ``AGG_CLAUDE_DIR`` ``$CLAUDE_CONFIG_DIR`` (``,``-separated), else
                          (``:``-separated)  ``~/.claude`` and ``~/.config/claude`` that exist
``host``                  ``AGG_HOST``       this machine's host name (cursors are per host)
``queue_url``             ``AGG_QUEUE_URL``  none: the store's Redis. The standalone Redis that
                                             holds the turn queue (RQ), the LLM limits and the
                                             daily budget; required when the store is a Redis
                                             Cluster (RQ does not run on a cluster)
========================= ================== ==============================================

:meth:`Settings.to_env` is the one builder of the ``AGG_*`` environment a child process gets
(``agg run``'s parts, ``agg worker --count``'s workers, the service units, the tests' processes).

Read where they are used rather than carried in :class:`Settings`: ``AGG_ACTIVE_MINUTES`` (default
10), the minutes a conversation stays ``active`` after its newest record (:func:`active_minutes`),
the watcher's ``AGG_WATCH_RESCAN_S`` / ``AGG_WATCH_STAT_ALL_S`` (:func:`watch_timings`), and
``AGG_SEAL_IDLE_S`` (default 3600), the idle seconds before a conversation is sealed (:func:`seal_idle_s`).
:func:`check_env` checks them all at once (``agg run`` does, before it starts anything).
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aggregator import defaults
from aggregator.errors import ConfigError
from aggregator.keys import Keys

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The platform's user data dir for agg: ``$XDG_DATA_HOME/agg`` (an absolute path only, as
    the XDG spec says), else ``~/.local/share/agg`` on Linux and the BSDs; platformdirs' answer
    elsewhere."""
    if sys.platform in ("darwin", "win32", "cygwin"):
        import platformdirs  # 10-15 ms of every command's start-up: only where XDG does not apply

        return Path(platformdirs.user_data_dir("agg", appauthor=False))
    # platformdirs' rule for XDG platforms (tests/unit/test_config.py compares the two).
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    return Path(xdg if os.path.isabs(xdg) else os.path.expanduser("~/.local/share")) / "agg"


def default_claude_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Claude Code config dirs to watch when none are given.

    ``$CLAUDE_CONFIG_DIR`` wins when set (several dirs may be given, ``,``-separated, as
    ccusage accepts); otherwise ``~/.claude`` and ``~/.config/claude``, those that exist.
    """
    env = os.environ if env is None else env
    configured = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        return [Path(p).expanduser() for p in configured.split(",") if p.strip()]
    home = Path(env.get("HOME") or Path.home())
    return [p for p in (home / ".claude", home / ".config" / "claude") if p.is_dir()]


def active_minutes(env: Mapping[str, str] | None = None) -> float:
    """Minutes after its newest record that a conversation counts as ``active``.

    ``AGG_ACTIVE_MINUTES`` if set (a non-negative number), else :data:`defaults.ACTIVE_MINUTES`.
    """
    env = os.environ if env is None else env
    raw = env.get("AGG_ACTIVE_MINUTES", "").strip()
    if not raw:
        return defaults.ACTIVE_MINUTES
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"bad AGG_ACTIVE_MINUTES {raw!r}: give a number of minutes >= 0")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < low:
        raise ConfigError(f"bad {name} {raw!r}: give a number of seconds >= {low:g}")
    return value


@dataclass(frozen=True)
class WatchTimings:
    """How often the watcher walks the claude dirs and stats every tracked file (seconds)."""

    rescan_s: float = defaults.WATCH_RESCAN_S
    stat_all_s: float = defaults.WATCH_STAT_ALL_S


def watch_timings(env: Mapping[str, str] | None = None) -> WatchTimings:
    """``AGG_WATCH_RESCAN_S`` and ``AGG_WATCH_STAT_ALL_S`` if set (at least 0.1 s), else the defaults."""
    env = os.environ if env is None else env
    return WatchTimings(
        rescan_s=_seconds(env, "AGG_WATCH_RESCAN_S", defaults.WATCH_RESCAN_S, 0.1),
        stat_all_s=_seconds(env, "AGG_WATCH_STAT_ALL_S", defaults.WATCH_STAT_ALL_S, 0.1),
    )


def seal_idle_s(env: Mapping[str, str] | None = None) -> float:
    """``AGG_SEAL_IDLE_S`` if set (seconds >= 0), else :data:`defaults.SEAL_IDLE_S`: how long a
    conversation is idle before its lines are sealed (:mod:`aggregator.compaction`)."""
    return _seconds(os.environ if env is None else env, "AGG_SEAL_IDLE_S", defaults.SEAL_IDLE_S, 0)


def check_env(env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` for the first bad setting read from the environment by the live
    parts (``agg run`` calls this before it starts any of them)."""
    active_minutes(env)
    watch_timings(env)
    seal_idle_s(env)


def default_host(env: Mapping[str, str] | None = None) -> str:
    """``AGG_HOST`` if set, else this machine's host name (cursors are per host)."""
    env = os.environ if env is None else env
    return env.get("AGG_HOST") or socket.gethostname()


def validate_namespace(ns: str) -> str:
    """Return ``ns`` if it is a usable key prefix, else raise :class:`ConfigError`."""
    if not _NAMESPACE_RE.match(ns):
        raise ConfigError(f"bad namespace {ns!r}: use 1-64 letters, digits, '_', '.' or '-'")
    return ns


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one agg process."""

    redis_url: str | None = None
    namespace: str = defaults.NAMESPACE
    data_dir: Path = field(default_factory=default_data_dir)
    claude_dirs: Sequence[Path] = field(default_factory=default_claude_dirs)
    host: str = field(default_factory=default_host)
    queue_url: str | None = None
    """Redis of the turn queue (:mod:`workers`); None: the store's own Redis."""

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)

    @property
    def keys(self) -> Keys:
        return Keys(self.namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``AGG_*`` environment variables, defaults elsewhere."""
        env = os.environ if env is None else env
        dirs = env.get("AGG_CLAUDE_DIR")
        return cls(
            redis_url=env.get("AGG_REDIS_URL") or None,
            namespace=env.get("AGG_NAMESPACE") or defaults.NAMESPACE,
            data_dir=Path(env["AGG_DATA_DIR"]).expanduser() if env.get("AGG_DATA_DIR") else default_data_dir(),
            claude_dirs=([Path(p).expanduser() for p in dirs.split(":") if p] if dirs else default_claude_dirs(env)),
            host=default_host(env),
            queue_url=env.get("AGG_QUEUE_URL") or None,
        )

    def to_env(self, redis_url: str | None = None) -> dict[str, str]:
        """The ``AGG_*`` variables that make a child ``agg`` process resolve these same settings.

        ``redis_url``: the URL the child should use (e.g. the embedded server's), if not
        :attr:`redis_url`. It may hold a password: the environment is readable only by this user,
        a command line by everyone; so may :attr:`queue_url`.
        """
        env = {
            "AGG_NAMESPACE": self.namespace,
            "AGG_DATA_DIR": str(Path(self.data_dir).absolute()),
            "AGG_CLAUDE_DIR": ":".join(str(Path(p).absolute()) for p in self.claude_dirs),
            "AGG_HOST": self.host,
        }
        url = redis_url or self.redis_url
        if url:
            env["AGG_REDIS_URL"] = url
        if self.queue_url:
            env["AGG_QUEUE_URL"] = self.queue_url
        return env
