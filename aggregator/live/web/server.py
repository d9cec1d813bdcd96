"""Running ``agg serve``: bind, print the URL, serve with uvicorn until stopped.

The socket is bound before anything is printed, so the URL on the first stdout line is one that
answers (with the real port when ``--port 0`` asked for any free one). SIGTERM / Ctrl-C stop it
(uvicorn closes the listening socket and gives open pages :data:`~aggregator.defaults.WEB_STOP_GRACE_S`
to go); under ``agg run`` it also stops when the supervisor is gone (``AGG_PARENT_PID``).

While it serves, :class:`~aggregator.live.web.indexer.Indexer` keeps the search index caught up
with the log on a thread of its own, stopped (between two indexing steps) when the server stops.
"""

from __future__ import annotations

import errno
import socket
import sys

import uvicorn

from aggregator import defaults
from aggregator.buckets import Buckets
from aggregator.config import Settings
from aggregator.connection import open_redis
from aggregator.errors import ConfigError
from aggregator.lifecycle import StopFlag
from aggregator.live.web.access import allowed_hosts, load_token, serve_url
from aggregator.live.web.app import build_app
from aggregator.live.web.indexer import Indexer


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; :class:`ConfigError` (one line) if it cannot be had."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = found[0]
    except socket.gaierror as e:
        raise ConfigError(f"cannot serve on {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another agg serve?): choose another with --port or AGG_WEB_PORT"
            ) from None
        raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, *, host: str, port: int, print_url: bool = True) -> None:
    """Serve until stopped; the URL (with the token) is the first line on stdout (unless not ``print_url``)."""
    conn = open_redis(settings)
    token = load_token(settings)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    app = build_app(settings, conn, token=token, allowed_hosts=allowed_hosts(host, port), port=port)
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's warnings go through agg's one format (aggregator.logs)
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=int(defaults.WEB_STOP_GRACE_S),
    )
    server = uvicorn.Server(config)
    stop = StopFlag().install()  # uvicorn takes SIGTERM/SIGINT over; this keeps AGG_PARENT_PID
    stop.on_set(lambda: setattr(server, "should_exit", True))
    # Printed once a stop is handled: a SIGTERM sent on reading the URL stops the server cleanly
    # (tests/process/test_serve.py::test_a_stop_right_after_the_url_stops_the_server).
    if print_url:
        sys.stdout.write(serve_url(host, port, token) + "\n")
        sys.stdout.flush()
    indexer = Indexer(Buckets.of(conn, settings), settings.data_dir).start()
    try:
        server.run(sockets=[sock])
    finally:
        indexer.stop(defaults.WEB_STOP_GRACE_S)
        sock.close()
        conn.close()
