"""Projects as people know them: the directory path, not Claude Code's encoded directory name.

Claude Code names a project's directory after its working directory with every character outside
``[A-Za-z0-9]`` replaced by ``-`` (``/home/u/my.app`` → ``-home-u-my-app``): one character for
one, so the encoding cannot be undone, but a working directory recorded in the transcripts can be
checked against it. A conversation's projection keeps the ``cwd`` of its first prompt; a project
is shown as the path that encodes to its name (the ``cwd`` itself, or the leading part of it when
the session was started in a subdirectory), else as a best guess (``-`` read as ``/``). The home
directory is shown as ``~``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from aggregator.store import Store

_ENCODED = re.compile(r"[^A-Za-z0-9]")


def encode(path: str) -> str:
    """Claude Code's directory name for a working directory."""
    return _ENCODED.sub("-", path)


def path_of(project: str, cwds: Iterable[str] = ()) -> str | None:
    """The path of ``project`` proven by one of ``cwds`` (a path encoding to it, or one it starts)."""
    n = len(project)
    for cwd in cwds:
        if len(cwd) >= n and encode(cwd[:n]) == project and (len(cwd) == n or cwd[n] in "/\\"):
            return cwd[:n]
    return None


def readable(project: str, cwds: Iterable[str] = (), home: str | None = None) -> str:
    """How to show ``project``: its proven path (see :func:`path_of`) or a guess, with ``~``."""
    path = path_of(project, cwds)
    if path is None:
        path = "/" + project[1:].replace("-", "/") if project.startswith("-") else project
    home = str(Path.home()) if home is None else home
    if home and home != "/" and (path == home or path.startswith(home + "/")):
        path = "~" + path[len(home) :]
    return path


def project_paths(store: Store, convs: list[str] | None = None) -> dict[str, str]:
    """Project directory name → readable path, for the projects of ``convs`` (default: all)."""
    convs = store.conversations() if convs is None else convs
    cwds: dict[str, list[str]] = {}
    for project, cwd in store.projection_fields(convs, ["project", "cwd"]):
        if project:
            seen = cwds.setdefault(project, [])
            if cwd:
                seen.append(cwd)
    return {p: readable(p, c) for p, c in cwds.items()}


def matches(query: str, project: str, path: str) -> bool:
    """Whether ``--project query`` selects ``project``: its name, the path it encodes, or a part of
    its readable path or name (case-insensitive)."""
    q = query.rstrip("/\\") or query
    if q in (project, path) or encode(os.path.expanduser(q)) == project:
        return True
    low = q.casefold()
    return low in path.casefold() or low in project.casefold()
