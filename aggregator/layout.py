"""Where transcripts live, and what a file's place says about its records.

Claude Code writes (``<root>`` is a claude dir's ``projects/``)::

    <root>/<project>/<session>.jsonl                               main transcript
    <root>/<project>/agent-<agent>.jsonl                           2.0.x subagent (legacy)
    <root>/<project>/<session>/subagents/agent-<agent>.jsonl       2.1.2+ subagent
    <root>/<project>/<session>/subagents/workflows/<wf>/agent-<agent>.jsonl

A main file's stem is its session; a subagent file under ``<session>/subagents/`` belongs to that
session; a legacy root ``agent-*.jsonl`` names no session (its records' ``sessionId`` do). Other
files (``*.meta.json``, ``sessions-index.json``, ``tool-results/``, ``memory/``, a workflow's
``journal.jsonl``) are not transcripts and are skipped. The project is always the directory name
under ``projects/``, never a record's ``cwd``.

Discovery streams (it never builds a list of a huge tree before starting), skips FIFOs, sockets
and devices without opening them, follows symlinks to directories once (a loop is not followed),
accepts file names that are not valid UTF-8, yields a file reachable under two spellings once,
reports unreadable directories and follows a transcript symlink only when its target lies inside
the dirs walked (:class:`Walk`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aggregator.errors import ConfigError

SUFFIX = ".jsonl"
_AGENT_PREFIX = "agent-"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A transcript file and what its location tells about it."""

    path: str
    """The path as the OS takes it (may carry surrogate escapes for non-UTF-8 bytes)."""
    project: str
    """Name of the project directory (the encoded cwd), or ``""`` if unknown."""
    session: str | None
    """Session the file belongs to, for records that carry no ``sessionId``."""
    agent: str | None
    """Subagent id for subagent files."""
    kind: str
    """``main``, ``subagent`` or ``legacy-agent``."""

    @property
    def display(self) -> str:
        return display_path(self.path)


def display_path(path: str) -> str:
    """``path`` as printable text: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def clean_name(name: str) -> str:
    """A directory or file-name component usable as a key: undecodable bytes as ``\\xNN``."""
    return display_path(name)


def classify(path: str) -> SourceFile | None:
    """What ``path`` is, from its place in the tree; None if it is not a transcript."""
    p = Path(path)
    name = p.name
    if not name.endswith(SUFFIX):
        return None
    stem = clean_name(name[: -len(SUFFIX)])
    parts = p.parts
    if "subagents" in parts[:-1]:
        if not stem.startswith(_AGENT_PREFIX):
            return None  # e.g. a workflow's journal.jsonl: not a transcript
        i = len(parts) - 2 - parts[:-1][::-1].index("subagents")
        session = clean_name(parts[i - 1]) if i >= 1 else None
        project = clean_name(parts[i - 2]) if i >= 2 else ""
        return SourceFile(path, project, session, stem[len(_AGENT_PREFIX) :], "subagent")
    project = clean_name(p.parent.name)
    if stem.startswith(_AGENT_PREFIX):
        return SourceFile(path, project, None, stem[len(_AGENT_PREFIX) :], "legacy-agent")
    return SourceFile(path, project, stem, None, "main")


def projects_root(path: Path) -> Path:
    """The dir to walk for ``path``: a claude dir's ``projects/`` if it has one, else ``path``."""
    sub = path / "projects"
    return sub if sub.is_dir() else path


@dataclass
class Walk:
    """What a walk of the claude dirs met besides transcripts (pass one to :func:`iter_transcripts`)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(path, reason)`` of what could not or must not be read: an unreadable directory, a
    transcript symlink whose target lies outside the dirs walked."""
    dirs: list[tuple[str, int, int]] | None = None
    """``(path, st_dev, st_ino)`` of every directory walked, if set to a list before the walk
    (the watcher compares them with the directories its file notifications cover)."""

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))


def resolved(path: str) -> str:
    """``path`` with every symlink resolved: the identity of a file that may be reachable under
    several spellings (a symlinked dir) — its cursor is keyed by it (:meth:`Store.file_id`)."""
    return os.path.realpath(path)


def inside(path: str, dirs: list[str]) -> bool:
    """Whether ``path`` (resolved) lies inside one of ``dirs`` (resolved)."""
    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)


def outside_link(path: str, allowed: list[str]) -> str | None:
    """Why the transcript ``path`` must not be followed, if it is a symlink whose target lies
    outside the ``allowed`` dirs (resolved); else None. A link to ``/etc/passwd`` would otherwise
    put the first bytes of every one of its lines into the store's rejections
    (``tests/adversarial/test_files.py::test_a_symlink_out_of_the_claude_dirs_is_not_followed``)."""
    if not os.path.islink(path):
        return None
    if inside(resolved(path), allowed):
        return None
    return "a symlink to a file outside the claude dirs: not followed"


def iter_transcripts(
    paths: list[Path], walk: Walk | None = None, *, allowed: list[Path] | None = None
) -> Iterator[SourceFile]:
    """Every transcript under ``paths`` (files or dirs), each once.

    ``walk`` collects what was skipped (and, if asked, every directory walked). A transcript
    symlink is followed only when its target lies inside ``allowed`` (default: ``paths``),
    resolved; a file named in ``paths`` itself is always read. Raises :class:`ConfigError` for a
    path that does not exist.
    """
    walk = walk if walk is not None else Walk()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    within = [resolved(str(p)) for p in (allowed if allowed is not None else paths)]
    for top in paths:
        try:
            st = os.stat(top)
        except OSError as e:
            raise ConfigError(f"cannot read {display_path(str(top))}: {e.strerror or e}") from None
        if stat.S_ISDIR(st.st_mode):
            root = projects_root(top)
            yield from _walk(str(root), seen_dirs, seen_files, walk, within)
        elif stat.S_ISREG(st.st_mode):
            sf = classify(str(top)) or SourceFile(
                str(top), clean_name(top.parent.name), clean_name(top.stem), None, "main"
            )
            real = resolved(sf.path)
            if real not in seen_files:
                seen_files.add(real)
                yield sf
        else:
            raise ConfigError(f"not a file or directory: {display_path(str(top))}")


def _walk(
    root: str, seen_dirs: set[tuple[int, int]], seen_files: set[str], walk: Walk, within: list[str]
) -> Iterator[SourceFile]:
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError:
            continue  # gone since its parent was listed
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:
            continue  # a symlink loop, or a dir reached twice
        seen_dirs.add(ident)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            walk.skip(d, f"unreadable directory: {e.strerror or e}")
            continue
        if walk.dirs is not None:
            walk.dirs.append((d, st.st_dev, st.st_ino))
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows symlinks; loops are caught by seen_dirs
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_dir:
                if entry.name not in ("tool-results", "memory"):
                    subdirs.append(entry.path)
            elif is_file and entry.name.endswith(SUFFIX):
                sf = classify(entry.path)
                if sf is None:
                    continue
                why = outside_link(entry.path, within) if entry.is_symlink() else None
                if why:
                    walk.skip(entry.path, why)
                    continue
                real = resolved(entry.path)
                if real not in seen_files:
                    seen_files.add(real)
                    yield sf
        stack.extend(reversed(subdirs))


CONFIG_DIR_MARKERS = ("history.jsonl", "settings.json", ".credentials.json", "todos", "statsig", "shell-snapshots")
"""Entries of a claude config dir: one without ``projects/`` yet is waited for, not walked (its
``history.jsonl`` is prompt history, not a transcript)."""


def watch_path(root: Path) -> Path | None:
    """The directory to watch for a claude dir: its ``projects/``, else the dir itself if it is a
    projects dir; None while it does not exist (or is a config dir without ``projects/`` yet)."""
    if not root.is_dir():
        return None
    p = projects_root(root)
    if p == root and any((root / m).exists() for m in CONFIG_DIR_MARKERS):
        return None
    return p
