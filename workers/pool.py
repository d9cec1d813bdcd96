"""Running N turn workers as child processes (``agg worker --count N``): each is a real
``agg worker`` process, respawned if it dies, stopped warm — by the one child supervisor
(:class:`aggregator.children.Children`) that ``agg run`` uses too.

Children run in their own session, so a Ctrl-C at the terminal reaches only the supervisor, which
then sends each worker exactly one SIGTERM (a warm shutdown: running turns finish and commit); a
worker still running after the timeout gets SIGKILL (its turn is redone after its lease expires).
Each child watches its parent (``AGG_PARENT_PID``) and shuts down warm if the supervisor dies.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence

from aggregator import defaults
from aggregator.children import Children
from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.lifecycle import PARENT_ENV

log = logging.getLogger("agg.turns")


def run_workers(
    settings: Settings,
    count: int,
    stop: threading.Event,
    *,
    redis_url: str,
    args: Sequence[str] = (),
    poll_interval_s: float = 1.0,
    stop_timeout_s: float = defaults.SUPERVISOR_STOP_TIMEOUT_S,
) -> list[int | None]:
    """Run ``count`` turn workers until ``stop`` is set, respawning any that die (with the
    supervisor's backoff, :class:`~aggregator.children.RestartPolicy`), then stop them warm;
    returns their exit codes. ``agg worker --count N`` runs this; a supervisor of its own may call
    it too, in a thread if it likes. A worker exiting on bad configuration (status 2) stops the
    others and raises :class:`ConfigError`: it would only fail again."""
    env = {**os.environ, **settings.to_env(redis_url=redis_url)}
    pool = Children(env, log=log)
    for i in range(count):
        pool.add(f"turn worker {i}", "worker", *args)
    pool.start()
    try:
        while not stop.wait(poll_interval_s):
            for ex in pool.reap():
                if ex.code == ConfigError.exit_code:
                    raise ConfigError(f"{ex.child.name} exited: bad configuration (see its error above)")
                log.warning("%s exited with %s: starting it again in %.1f s", ex.child.name, ex.code, ex.restart_in)
            pool.restart_due()
    finally:
        codes = pool.stop(stop_timeout_s)
    return codes


def watch_parent(stop: threading.Event) -> None:
    """In a worker started by a pool: shut down warm (SIGTERM to itself) if the supervisor dies."""
    raw = os.environ.get(PARENT_ENV)
    if not raw or not raw.isdigit():
        return
    parent = int(raw)

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="agg-parent-watch", daemon=True).start()
