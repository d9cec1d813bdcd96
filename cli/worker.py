"""``agg worker``: run LLM turns (RQ worker + scheduler) in this process, or a supervised pool."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from aggregator.logs import setup_logging
from cli.app import App, app_context
from workers.config import TurnConfig


@click.command("worker")
@click.option(
    "--count", "-n", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes to run."
)
@click.option("--burst", is_flag=True, help="Run every pending turn now (no debounce or cooldown), then exit.")
@click.option("--name", help="RQ worker name (default: a random one).")
@click.option("--verbose", "-v", is_flag=True, help="Also log each turn and RQ's job lines.")
@click.pass_context
def worker_cmd(ctx: click.Context, count: int, burst: bool, name: str | None, verbose: bool) -> None:
    """Run LLM turns: an RQ worker with the turn scheduler inside it.

    `agg watch` plus `agg worker` are all that turns need. The provider and limits come from
    AGG_LLM_* / AGG_TURN_* environment variables (see the README). On a Redis Cluster store the
    turn queue needs a standalone Redis: --queue-url / AGG_QUEUE_URL. SIGTERM or Ctrl-C stops warm:
    running turns finish first.
    """
    if count > 1 and (burst or name):
        raise click.UsageError("--burst and --name work with one worker only")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Until RQ installs its own handlers, a SIGTERM / Ctrl-C only asks for a stop.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    config = TurnConfig.from_env()  # bad settings fail here, before anything starts
    with app_context(ctx) as app:
        assert isinstance(app, App)
        conn = app.connect()
        if count == 1:
            from workers.worker import run_worker

            run_worker(app.settings, config=config, burst=burst, name=name, verbose=verbose, connection=conn, stop=stop)
            return
        from workers.pool import run_workers

        # Fail on bad provider settings (a missing SDK, a bad AGG_TURN) here, once, not in N children.
        from workers.providers import make_provider
        from workers.turns import load_turn_function

        make_provider(config)
        load_turn_function(config.turn)
        # ... and a queue's Redis that cannot serve (none for a cluster store, a cluster node, away)
        from aggregator.connection import open_queue

        queue = open_queue(app.settings, conn)
        if queue is not conn:
            queue.close()
        setup_logging(verbose)
        codes = run_workers(app.settings, count, stop, redis_url=conn.url, args=["-v"] if verbose else [])
        click.echo(f"stopped {count} workers (exit codes {codes})", err=True)
        # -SIGTERM: a worker stopped before it was far enough to stop warm (nothing was running)
        if any(c not in (0, -signal.SIGTERM) for c in codes):
            sys.exit(1)
