"""Helpers of the ``agg serve`` tests: the app in process, HTML inspection, a running server."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import redis
from starlette.testclient import TestClient

from aggregator.config import Settings
from aggregator.connection import Connection
from aggregator.live.web.access import allowed_hosts
from aggregator.live.web.app import build_app
from devtools.agg import HOST
from devtools.redisproc import RedisProcess
from tests.support.live import Agg

TOKEN = "t" * 43
PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"


def client_for(redis_server: RedisProcess, client: redis.Redis, tmp_path: Path) -> TestClient:
    """The ``agg serve`` app in process on the test Redis, as a browser at 127.0.0.1 would reach it."""
    settings = Settings(
        redis_url=redis_server.url, data_dir=tmp_path / "data", claude_dirs=[tmp_path / "claude"], host=HOST
    )
    app = build_app(
        settings,
        Connection(client, redis_server.url),
        token=TOKEN,
        allowed_hosts=allowed_hosts("127.0.0.1", PORT),
        port=PORT,
    )
    return TestClient(app, base_url=BASE)


class Tags(HTMLParser):
    """Every start tag of a document with its attributes, and its text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all_text(self) -> str:
        return "".join(self.text)

    def scripts(self) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "script"]

    def handlers(self) -> list[tuple[str, str]]:
        """Event-handler attributes (``onclick``, ``onerror``, …) anywhere."""
        return [(t, k) for t, a in self.tags for k in a if k.lower().startswith("on")]

    def hrefs(self) -> list[str]:
        return [str(a.get("href")) for t, a in self.tags if t == "a" and a.get("href")]


@contextmanager
def serving(env: dict[str, str], logdir: Path, *args: str) -> Iterator[tuple[Agg, str]]:
    """A real ``agg serve --port 0`` (plus ``args``); yields the process and the URL it printed."""
    proc = Agg(["serve", "--port", "0", *args], env, logdir, name="serve")
    proc.start(stdout=subprocess.PIPE)
    try:
        assert proc.proc is not None and proc.proc.stdout is not None
        url = proc.proc.stdout.readline().decode().strip()
        if not url:
            raise AssertionError(f"agg serve printed no URL: {proc.log()}")
        yield proc, url
    finally:
        proc.__exit__()


def base_of(url: str) -> str:
    """``http://host:port`` of a printed URL."""
    return url.split("/?", 1)[0]


def token_of(url: str) -> str:
    return url.rsplit("token=", 1)[1]


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse a ``text/event-stream`` into ``{"id", "data"}`` events (comments and retry skipped)."""
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                event["data"] = event.get("data", "") + value
            elif name == "id":
                event["id"] = value


class EventStream(threading.Thread):
    """Reads ``/api/events`` into a list of envelopes; ``last_id`` resumes where it stopped;
    ``limit``: drops the connection after that many events (the stop flag is only seen when an
    event comes, and none may come again: waiting for one cost a joining test 30 s)."""

    def __init__(
        self, base: str, token: str, *, since: int | str | None = None, last_id: str | None = None, limit: int = 0
    ) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.since, self.last_id, self.limit = base, token, since, last_id, limit
        self.envs: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        if self.last_id is not None:
            headers["last-event-id"] = self.last_id
        params = {"since": str(self.since)} if self.since is not None else {}
        try:
            with (
                httpx.Client(base_url=self.base, timeout=httpx.Timeout(5, read=None)) as http,
                http.stream("GET", "/api/events", params=params, headers=headers) as res,
            ):
                assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
                for ev in sse_events(res.iter_lines()):
                    self.envs.append(json.loads(ev["data"]))
                    self.ids.append(ev["id"])
                    if self.stop.is_set() or len(self.envs) == self.limit:
                        return
        except BaseException as e:  # reported by the test
            self.error = e
