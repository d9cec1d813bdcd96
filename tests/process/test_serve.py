"""`agg serve` as a real process: its URL and token, refusals over real HTTP, its event stream
resuming without gap or duplicate after a dropped connection and after Redis is killed, and
`agg run` serving it (or not, with --no-web)."""

from __future__ import annotations

import itertools
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.embedded import EmbeddedRedis
from aggregator.keys import Keys
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from devtools.agg import HOST, REPO, agg_env, embedded_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.live import Agg, Appender, descendants, file_lines, state
from tests.support.records import user, write
from tests.support.web import EventStream as Stream
from tests.support.web import base_of, serving, token_of


def _sessions(tmp_path: Path, names: list[str], count: int, first: int = 0) -> list[Appender]:
    out = []
    for name in names:
        a = Appender(tmp_path / "claude" / "projects" / "p" / f"{name}.jsonl", name, count, pause=0.005, first=first)
        a.start()
        out.append(a)
    return out


def test_serve_prints_its_url_first_and_keeps_one_private_token(redis_server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    with serving(env, tmp_path) as (_, url):
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        base, token = base_of(url), token_of(url)
        token_file = tmp_path / "data" / "state" / "web-agg.token"
        assert token_file.read_text().strip() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with httpx.Client(base_url=base) as http:
            assert http.get("/api/status").status_code == 401
            assert http.get("/api/status", params={"token": "x" * 43}).status_code == 401
            assert http.get("/", params={"token": token}).status_code == 200
            assert http.get("/api/conversations").status_code == 200  # the cookie it was given
            port = base.rsplit(":", 1)[1]
            refused = http.get("/", params={"token": token}, headers={"host": f"attacker.example:{port}"})
            assert refused.status_code == 403
    with serving(env, tmp_path) as (_, again):
        assert token_of(again) == token  # a bookmarked URL keeps working


def test_a_stop_right_after_the_url_stops_the_server(redis_server: RedisProcess, tmp_path: Path) -> None:
    """A SIGTERM sent on reading the URL was lost now and then (handled before the server was told,
    it set a flag no one read): the server served on until killed."""
    env = agg_env(redis_server, tmp_path)
    for delay_ms in range(8):
        with serving(env, tmp_path) as (proc, _):
            time.sleep(delay_ms / 1000)
            assert proc.stop(timeout=10) == 0, proc.log()


def test_wildcard_host_warns_once_and_a_taken_port_is_one_line(redis_server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    with serving(env, tmp_path, "--host", "0.0.0.0") as (proc, url):
        assert url.startswith(f"http://{socket.gethostname().lower()}:")
        log = proc.log()
    assert len([ln for ln in log.splitlines() if "warning" in ln]) == 1 and "0.0.0.0" in log
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_agg(["serve", "--port", str(port)], env, check=False, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "in use" in res.stderr and "Traceback" not in res.stderr


def test_serve_keeps_the_search_index_caught_up_and_stops_cleanly(
    redis_server: RedisProcess, corpus: Path, tmp_path: Path
) -> None:
    """No search is asked for: the index follows the log by itself, so the first search has nothing to do."""
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    store = Store(redis_server.client(), Keys("agg"), HOST)
    with serving(env, tmp_path) as (proc, url):
        index = SearchIndex.open(store, tmp_path / "data")
        try:

            def caught_up() -> bool:
                return index.checkpoint() == store.last_seq() > 0

            wait_until(caught_up, "agg serve indexing the corpus", timeout=180)
            session = "5f0e8a4c-1d2b-4c3d-9e8f-000000000777"
            write(corpus / "-home-user-new" / f"{session}.jsonl", [user(session, "n", "a wombat in the garden")])
            run_agg(["ingest"], env)
            wait_until(caught_up, "agg serve indexing a new line", timeout=60)
            with httpx.Client(base_url=base_of(url), headers={"authorization": f"Bearer {token_of(url)}"}) as http:
                hits = http.get("/api/search", params={"q": "wombat"}).json()["hits"]
            assert [h["conv"] for h in hits] == [session]
        finally:
            index.close()
        assert proc.stop() == 0  # the indexer thread stops with the server
    assert "Traceback" not in proc.log()


def test_agg_help_does_not_load_the_web_stack() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from cli.main import cli; "
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'sse_starlette', 'markdown_it') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _seqs_exactly(envs: list[dict[str, Any]], upto: int) -> None:
    seqs = [e["seq"] for e in envs]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "a seq twice or going back"
    assert seqs == list(range(1, upto + 1)), "a gap"


def test_events_resume_from_last_event_id_after_a_dropped_connection(
    redis_server: RedisProcess, store: Store, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    with Agg(["watch"], env, tmp_path, name="watch"), serving(env, tmp_path) as (_, url):
        base, token = base_of(url), token_of(url)
        first = _sessions(tmp_path, ["a", "b"], 60)
        reader = Stream(base, token, since=0, limit=30)
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive() and len(reader.envs) == 30
        assert reader.error is None and reader.ids == [str(e["seq"]) for e in reader.envs]
        more = _sessions(tmp_path, ["c"], 40) + first
        for a in more:
            a.join()
        total = 160
        wait_until(lambda: store.stats()["events"] >= total, "every line stored")
        resumed = Stream(base, token, last_id=reader.ids[-1])
        resumed.start()
        wait_until(lambda: resumed.envs and resumed.envs[-1]["seq"] >= store.last_seq(), "the resumed stream")
        resumed.stop.set()
        _seqs_exactly(reader.envs + resumed.envs, store.last_seq())


@pytest.mark.slow
def test_events_resume_after_redis_is_killed(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", password="web-pw", appendfsync="always").start()
    env = agg_env(server, tmp_path)
    store = Store(server.client(), Keys("agg"), HOST)
    try:
        with Agg(["watch"], env, tmp_path, name="watch"), serving(env, tmp_path) as (_, url):
            wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
            reader = Stream(base_of(url), token_of(url), since=0)
            reader.start()
            before = _sessions(tmp_path, ["k1", "k2"], 50)
            for a in before:
                a.join()
            wait_until(lambda: reader.envs and reader.envs[-1]["seq"] >= 100, "the events before the kill")
            server.kill()  # kill -9: the stream's subscription loses its connection
            bearer = {"authorization": f"Bearer {token_of(url)}"}
            with httpx.Client(base_url=base_of(url), headers=bearer, timeout=60) as http:
                down = http.get("/api/status")  # the service's own state, and one line on Redis
                assert down.status_code == 503 and down.json()["redis"]["ok"] is False
                assert down.json()["watcher"]["state"] != "not running"
                page = http.get("/")
                assert page.status_code == 503 and "Redis" in page.text and "Traceback" not in page.text
            during = _sessions(tmp_path, ["k1", "k3"], 30, first=50)  # lines written while Redis is down
            server.start()
            after = _sessions(tmp_path, ["k4"], 40)
            for a in during + after:
                a.join()
            lines = sum(len(file_lines(p)) for p in {a.path for a in before + during + after})
            wait_until(lambda: store.stats()["events"] >= lines, "every line stored", timeout=90)
            wait_until(lambda: reader.envs and reader.envs[-1]["seq"] >= store.last_seq(), "the stream", timeout=90)
            assert reader.error is None and reader.is_alive()  # one connection, never broken for the browser
            _seqs_exactly(reader.envs, store.last_seq())
            assert {(e["conv"], e["id"]) for e in reader.envs} == {
                (e.env()["conv"], e.env()["id"]) for e in store.entries_after(0)
            }
    finally:
        server.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _run(env: dict[str, str], tmp_path: Path, *args: str) -> Iterator[Agg]:
    run = Agg(["run", "--interval", "0.2", *args], {**env, "AGG_WEB_PORT": str(_free_port())}, tmp_path, name="run")
    run.start(stdout=subprocess.PIPE)
    try:
        yield run
    finally:
        run.__exit__()


@pytest.mark.slow
def test_agg_run_serves_the_pages_unless_no_web(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    data = tmp_path / "data"
    (tmp_path / "claude" / "projects").mkdir(parents=True)
    try:
        with _run(env, tmp_path) as run:
            assert run.proc is not None and run.proc.stdout is not None
            url = run.proc.stdout.readline().decode().strip()
            assert url == f"http://127.0.0.1:{run.env['AGG_WEB_PORT']}/?token={token_of(url)}"
            assert token_of(url) == (data / "state" / "web-agg.token").read_text().strip()

            status_url = url.replace("/?", "/api/status?")

            def answers() -> Any:
                try:
                    return httpx.get(status_url, timeout=5).json()
                except httpx.TransportError:
                    return None

            assert wait_until(answers, "the web part", timeout=60)["redis"]["ok"] is True
            names = " ".join(" ".join(p.cmdline()) for p in descendants(run.pid))
            assert " serve" in names
            # the ready line comes once the watcher has checked every file: maybe after the pages answer
            wait_until(lambda: "agg.run: ready:" in run.log(), "the ready line", timeout=60)
            assert run.stop() == 0
            # agg run's ready line shows the same URL
            assert "agg.run: ready: watch, writer, worker, serve running\n    watching" in run.log()
            assert f"\n    pages         {url}\n" in run.log()
        with _run(env, tmp_path, "--no-web") as run:
            wait_until(lambda: state(data, "watch").get("state") == "watching", "the watcher", timeout=60)
            names = " ".join(" ".join(p.cmdline()) for p in descendants(run.pid))
            assert "watch" in names and " serve" not in names
            assert run.stop() == 0
            assert run.proc is not None and run.proc.stdout is not None
            assert b"token=" not in run.proc.stdout.read()
    finally:
        EmbeddedRedis(data).stop()
