"""The gate every request to ``agg serve`` passes: Host header, method, token; and the headers every
answer carries.

In this order:

1. the ``Host`` header must be one of the server's own names (:func:`~aggregator.live.web.access.allowed_hosts`),
   else ``403`` — what stops DNS rebinding;
2. only ``GET`` and ``HEAD`` (everything is read-only), else ``405``;
3. the token: in the query (``?token=…``, the URL ``agg serve`` prints), in the
   ``agg_token_<port>`` cookie, or as ``Authorization: Bearer …``; else ``401``. A valid query
   token sets the cookie (``HttpOnly; SameSite=Strict``), so the page's own links, fetches and
   event stream carry it and the page's script takes the token out of the address bar. (No
   redirect to do that: after a navigation started on another site, SameSite=Strict would keep
   the cookie off the redirected request.)

Every answer gets a Content-Security-Policy that runs only the server's own script files (no
inline script, no ``eval``, no other origin), fetches nothing from elsewhere, and cannot be framed;
``Referrer-Policy: no-referrer``; ``Cache-Control: no-store`` (transcripts stay out of caches).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""No inline script or style, no eval, nothing from another origin; forms and fetches stay here."""

SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")
"""Added unless the answer says otherwise (the versioned static files may be cached)."""
_REPLACED = {name for name, _ in SECURITY_HEADERS}

COOKIE_MAX_AGE_S = 30 * 24 * 3600
"""How long the browser keeps the token cookie."""


def cookie_name(port: int) -> str:
    """The token cookie's name: one per port, so two servers on one machine keep their own."""
    return f"agg_token_{port}"


class Guard:
    """ASGI middleware applying the checks above to every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: str, allowed_hosts: frozenset[str], port: int) -> None:
        self.app = app
        self.token = token.encode()
        self.allowed = allowed_hosts
        self.cookie = cookie_name(port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return  # websockets: not served
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        api = scope.get("path", "").startswith("/api/")
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.allowed:
            await _refuse(send, 403, "this server answers only to its own address (foreign Host header refused)", api)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await _refuse(send, 405, "read-only: only GET and HEAD", api)
            return
        from_query = self._valid(_query_token(scope))
        if not (from_query or self._valid(self._cookie_token(headers)) or self._valid(_bearer(headers))):
            await _refuse(send, 401, "the access token is missing or wrong: open the URL agg serve printed", api)
            return
        set_cookie = (
            f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_S}"
            if from_query
            else None
        )
        await self.app(scope, receive, _with_headers(send, set_cookie))

    def _valid(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token)

    def _cookie_token(self, headers: dict[bytes, bytes]) -> str | None:
        raw = headers.get(b"cookie")
        if not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw.decode("latin-1"))
        except CookieError:
            return None
        morsel = jar.get(self.cookie)
        return str(morsel.value) if morsel is not None else None


def _query_token(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    for k, v in parse_qsl(query.decode("latin-1")):
        if k == "token":
            return v
    return None


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, value = raw.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _with_headers(send: Send, set_cookie: str | None) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0].lower() not in _REPLACED]
            if not any(h[0].lower() == NO_STORE[0] for h in headers):
                headers.append(NO_STORE)
            headers += SECURITY_HEADERS
            if set_cookie:
                headers.append((b"set-cookie", set_cookie.encode()))
            message["headers"] = headers
        await send(message)

    return wrapped


async def _refuse(send: Send, status: int, reason: str, api: bool) -> None:
    if api:
        body = b'{"error": "' + reason.encode() + b'"}'
        ctype = b"application/json"
    else:
        body = (
            b"<!doctype html><meta charset=utf-8><title>agg</title><h1>"
            + str(status).encode()
            + b"</h1><p>"
            + reason.encode()
            + b"</p>"
        )
        ctype = b"text/html; charset=utf-8"
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), NO_STORE, *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
