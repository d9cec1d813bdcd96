"""Who may use ``agg serve``: its access token, the URL that carries it, the Host names that are its own.

Light on purpose (no Starlette): ``agg run`` imports it to print the URL its ``serve`` part serves.

* The token is 32 random bytes (URL-safe text) kept in ``<data dir>/state/web-<ns>.token``,
  0600, created on first use and the same on every start, so a bookmarked URL keeps working.
* A request is let in only if its ``Host`` header names this server: the address it is bound to,
  ``localhost`` / ``127.0.0.1`` / ``[::1]`` when that is a loopback address, and this machine's
  names and interface addresses when it is bound to all of them. A page on another site that
  re-points its own DNS name at 127.0.0.1 (DNS rebinding) sends its own name and is refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket

import psutil

from aggregator.config import Settings
from aggregator.files import locked, write_private
from aggregator.paths import DataPaths

TOKEN_BYTES = 32
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def load_token(settings: Settings) -> str:
    """The server's access token, created (0600) if there is none yet."""
    path = DataPaths(settings.data_dir, settings.namespace).web_token
    with locked(path.with_name(path.name + ".lock")):
        with contextlib.suppress(FileNotFoundError):
            token = path.read_text().strip()
            if len(token) >= TOKEN_BYTES:
                return token
        token = secrets.token_urlsafe(TOKEN_BYTES)
        write_private(path, token + "\n")
        return token


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_wildcard(host: str) -> bool:
    """Whether ``host`` means every address of this machine (``0.0.0.0``, ``::``)."""
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    ip = _ip(host)
    return host == "localhost" if ip is None else ip.is_loopback


def _netloc(host: str) -> str:
    ip = _ip(host)
    return f"[{ip}]" if ip is not None and ip.version == 6 else host.lower()


def url_host(host: str) -> str:
    """The host part of the URL to open for a server bound to ``host``."""
    return socket.gethostname().lower() if is_wildcard(host) else _netloc(host)


def serve_url(host: str, port: int, token: str) -> str:
    """The URL ``agg serve`` prints: it carries the token (the page then keeps it in a cookie)."""
    return f"http://{url_host(host)}:{port}/?token={token}"


def own_names(host: str) -> set[str]:
    """The names (without port) a request to a server bound to ``host`` may carry in ``Host``."""
    names = {_netloc(host)}
    if is_loopback(host) or is_wildcard(host):
        names.update(LOOPBACK_NAMES)
    if not is_loopback(host):
        with contextlib.suppress(OSError):
            names.update(n.lower() for n in (socket.gethostname(), socket.getfqdn()) if n)
    if is_wildcard(host):
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(_netloc(a.address.split("%", 1)[0]))
    return names


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """Every accepted ``Host`` header value (lower case): each own name, with and without ``:port``."""
    names = own_names(host)
    return frozenset(names | {f"{n}:{port}" for n in names})
