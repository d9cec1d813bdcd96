"""Amplify the real transcript corpus into a bigger one, for benchmarks.

Every output file is built from whole lines of real sessions (concatenated when the file must be
bigger than its source, cut after a whole line when it must be smaller), with every id renamed so
that no two output files share a session, a record or an API message:

* every UUID-shaped string (``sessionId``, ``uuid``, ``parentUuid``, ``leafUuid``,
  ``messageId``, … and the names of files and directories) becomes ``uuid5(segment namespace,
  original)``; a segment is one pass over one source file, so ``parentUuid`` chains and
  ``leafUuid`` pointers stay intact inside it;
* ``msg_…``, ``req_…`` and ``toolu_…`` ids are replaced by same-shaped ids derived the same way, so
  usage de-duplication by ``(message.id, requestId)`` still counts each copy once;
* agent ids (``a2898e3``, ``acompact-70d8e7``, …: the stems of the corpus' ``agent-*.jsonl`` files
  and every ``agentId`` value) likewise;
* the source file's own session id becomes the output file's session (and, for a subagent file,
  its parent's), and a subagent source's own agent id becomes the output file's agent id — so
  every segment of one output file belongs to the same conversation, as in a real file.

What the corpus holds is kept: the 1.0.x inline sidechains (inside main files), the 2.0.x legacy
``<project>/agent-<id>.jsonl`` layout and the 2.1.x ``<session>/subagents/agent-<id>.jsonl``
layout (also under ``subagents/workflows/<wf>/``), summary-only files (the smallest files are
built from ``summary`` records only), and the non-JSON lines some sources carry.

Profiles (file sizes, in decimal units: 1 KB = 1000 bytes):

``heavy-user``
    the public profile of a heavy user: about 3,100 files, median 105 KB, p99 5.4 MB, largest
    87 MB. Sizes follow a log-normal through the median and p99; above p99 the tail is stretched
    (a steeper log-normal slope) so that the largest of 3,100 files is 87 MB. File *i* of *N* gets
    the size at quantile ``(i + 0.5) / N`` (a stratified sample: the same N, the same sizes).
    The full profile is about 1.47 GB. A smaller (or larger) ``--size`` keeps the distribution and
    changes the number of files: N is the smallest count whose sample adds up to the size. So the
    median stays about 105 KB at every size and the largest file is the largest of N draws
    (293 files and a 20 MB largest file for 130 MB; 87 MB only at the full 1.47 GB).
``copies``
    whole copies of the source corpus (the real files' own sizes), renamed, until the size is reached.

Output is deterministic for a given source, profile, size and ``--seed``, and streamed: each output
line is written as soon as it is renamed, so memory stays flat whatever the file sizes.

Usage::

    python scripts/gen_corpus.py OUT_DIR --size 130MB [--profile heavy-user] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import statistics
import sys
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KB, MB, GB = 1000, 1000**2, 1000**3

HEAVY_FILES = 3100
HEAVY_MEDIAN = 105 * KB
HEAVY_P99 = 5.4 * MB
HEAVY_MAX = 87 * MB
SUMMARY_ONLY_BELOW = 4 * KB
"""Files smaller than this are summary-only (about 2.6 % of a heavy-user corpus; 1 in 39 files of
the real corpus is one)."""
SUBAGENT_SHARE = 12 / 39
"""Share of subagent files, as in the real corpus (12 of 39)."""
LAYOUT_WEIGHTS = {"subagents": 0.6, "workflow": 0.15, "legacy": 0.25}
"""How subagent files are laid out (2.1.x, 2.1.x workflows, 2.0.x project root)."""
FILES_PER_PROJECT = 40
_Z99 = statistics.NormalDist().inv_cdf(0.99)
_SIGMA = math.log(HEAVY_P99 / HEAVY_MEDIAN) / _Z99
_P_MAX = 1 - 1 / (2 * HEAVY_FILES)
_TAIL_SIGMA = math.log(HEAVY_MAX / HEAVY_P99) / (statistics.NormalDist().inv_cdf(_P_MAX) - _Z99)

# Searching for the dashes first is ten times faster than a pattern that starts with a hex run.
_UUID_TAIL = re.compile(rb"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX8 = re.compile(rb"[0-9a-fA-F]{8}")
_TOKENS = tuple((p, re.compile(re.escape(p) + rb"[A-Za-z0-9]{20,}")) for p in (b"msg_", b"req_", b"toolu_"))
_B62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_AGENT_FIELD = re.compile(rb'"agentId":"([^"\\]{1,64})"')


# --- sizes ---------------------------------------------------------------------------------------
def heavy_quantile(p: float) -> float:
    """File size (bytes) at quantile ``p`` of the heavy-user profile."""
    z = statistics.NormalDist().inv_cdf(min(p, _P_MAX))
    if z <= _Z99:
        return HEAVY_MEDIAN * math.exp(_SIGMA * z)
    return HEAVY_P99 * math.exp(_TAIL_SIGMA * (z - _Z99))


def heavy_sizes(n: int) -> list[int]:
    """The stratified sample of ``n`` heavy-user file sizes, smallest first."""
    return [max(1, round(heavy_quantile((i + 0.5) / n))) for i in range(n)]


def heavy_sizes_for_total(total: int) -> list[int]:
    """The heavy-user sample whose sizes add up to (at least) ``total`` bytes, smallest first."""
    lo, hi = 1, 1
    while sum(heavy_sizes(hi)) < total:
        lo, hi = hi, hi * 2
    while lo < hi:  # smallest n with sum >= total (the sum grows with n)
        mid = (lo + hi) // 2
        if sum(heavy_sizes(mid)) >= total:
            hi = mid
        else:
            lo = mid + 1
    return heavy_sizes(lo)


def parse_size(text: str) -> int:
    """``130MB``, ``1.5GB``, ``800KB``, ``1GiB`` or a byte count → bytes (KB/MB/GB decimal,
    KiB/MiB/GiB binary)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([KMG])(I?)B?|B?)\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 130MB, 1.5GB, 1GiB)")
    prefix, binary = m.group(2), m.group(3)
    power = "KMG".index(prefix) + 1 if prefix else 0
    return int(float(m.group(1)) * (1024 if binary else 1000) ** power)


# --- sources -------------------------------------------------------------------------------------
@dataclass
class Source:
    """One real transcript file."""

    path: Path
    kind: str  # main | subagent | summary-only
    project: str
    session: str | None  # the session the file belongs to (main: its stem; subagent: its parent)
    agent: str | None
    size: int


@dataclass
class Sources:
    main: list[Source] = field(default_factory=list)
    subagent: list[Source] = field(default_factory=list)
    summary_only: list[Source] = field(default_factory=list)
    summary_lines: list[bytes] = field(default_factory=list)
    """Every ``summary`` record (small), for building summary-only files."""
    agent_ids: set[bytes] = field(default_factory=set)

    @property
    def all(self) -> list[Source]:
        return sorted(self.main + self.subagent + self.summary_only, key=lambda s: str(s.path))


def scan_sources(root: Path) -> Sources:
    """Every transcript under ``root`` (a ``projects/`` dir), sorted, with what it is."""
    out = Sources()
    for path in sorted(root.rglob("*.jsonl")):
        if not path.is_file():
            continue
        stem = path.name[: -len(".jsonl")]
        parts = path.relative_to(root).parts
        agent = stem[len("agent-") :] if stem.startswith("agent-") else None
        if "subagents" in parts and agent is None:
            continue  # e.g. a workflow's journal.jsonl
        if agent:
            out.agent_ids.add(agent.encode())
        if "subagents" in parts:
            i = parts.index("subagents")
            project, session = (parts[i - 2] if i >= 2 else ""), (parts[i - 1] if i >= 1 else None)
        else:
            project, session = (parts[-2] if len(parts) >= 2 else ""), (None if agent else stem)
        has_records = False
        for line in _lines(path):
            out.agent_ids.update(_AGENT_FIELD.findall(line))
            if b'"type":"summary"' in line[:64] and len(line) < 4096:
                out.summary_lines.append(line)
            elif line.strip() and not line.startswith(b"//"):
                has_records = True
        kind = ("subagent" if agent else "main") if has_records else "summary-only"
        src = Source(path, kind, project, session, agent, path.stat().st_size)
        {"main": out.main, "subagent": out.subagent, "summary-only": out.summary_only}[kind].append(src)
    if not out.main:
        raise SystemExit(f"gen_corpus: no main transcript files under {root}")
    return out


# --- renaming ------------------------------------------------------------------------------------
class Renamer:
    """Renames every id in lines of one segment (one pass over one source file)."""

    def __init__(self, ns: uuid.UUID, agent_ids: set[bytes], fixed: dict[bytes, bytes]) -> None:
        self.ns = ns
        self.fixed = fixed
        self.cache: dict[bytes, bytes] = {}
        self.agent_ids = tuple(agent_ids)
        alts = b"|".join(re.escape(a) for a in sorted(agent_ids, key=len, reverse=True))
        self.agent_re = re.compile(rb"(?<![0-9A-Za-z_-])(?:" + alts + rb")(?![0-9A-Za-z_])") if alts else None

    def _uuid(self, s: bytes) -> bytes:
        key = s.lower()
        r = self.cache.get(key)
        if r is None:
            r = self.fixed.get(key) or str(uuid.uuid5(self.ns, key.decode())).encode()
            self.cache[key] = r
        return r

    def _tok(self, m: re.Match[bytes]) -> bytes:
        s = m.group(0)
        r = self.cache.get(s)
        if r is None:
            prefix, _, rest = s.partition(b"_")
            r = prefix + b"_" + _token(self.ns.bytes + s, len(rest))
            self.cache[s] = r
        return r

    def _agent(self, m: re.Match[bytes]) -> bytes:
        s = m.group(0)
        r = self.fixed.get(s)
        if r is None:
            r = self.cache.get(b"agent:" + s)
            if r is None:
                r = new_agent_id(s, hashlib.sha256(self.ns.bytes + s).hexdigest())
                self.cache[b"agent:" + s] = r
        return r

    def line(self, raw: bytes) -> bytes:
        """``raw`` with every id renamed."""
        pieces: list[bytes] = []
        last = 0
        for m in _UUID_TAIL.finditer(raw):
            start = m.start() - 8
            if start < last or not _HEX8.fullmatch(raw, start, m.start()):
                continue
            pieces += (raw[last:start], self._uuid(raw[start : m.end()]))
            last = m.end()
        out = b"".join((*pieces, raw[last:])) if pieces else raw
        for prefix, pattern in _TOKENS:
            if prefix in out:
                out = pattern.sub(self._tok, out)
        if self.agent_re is not None and any(a in out for a in self.agent_ids):
            out = self.agent_re.sub(self._agent, out)
        return out


def _token(seed: bytes, n: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        for b in hashlib.sha256(seed + counter.to_bytes(4, "big")).digest():
            out.append(_B62[b % 62])
        counter += 1
    return bytes(out[:n])


def new_agent_id(original: bytes, hexdigest: str) -> bytes:
    """An agent id shaped like ``original`` (``a`` + hex, or ``<kind>-`` + hex) from ``hexdigest``."""
    if b"-" in original:
        kind, _, rest = original.rpartition(b"-")
        return kind + b"-" + hexdigest[: len(rest)].encode()
    return b"a" + hexdigest[: max(1, len(original) - 1)].encode()


# --- building files --------------------------------------------------------------------------------
@dataclass
class Planned:
    """One output file to write."""

    index: int
    size: int
    kind: str  # main | subagent | summary-only
    layout: str  # main | subagents | workflow | legacy | summary-only
    project: str
    session: str
    agent: str | None = None
    workflow: str | None = None
    source: Source | None = None
    """For the ``copies`` profile: the one source file this file is a renamed copy of."""

    def relpath(self) -> Path:
        p = Path(self.project)
        if self.layout == "subagents":
            return p / self.session / "subagents" / f"agent-{self.agent}.jsonl"
        if self.layout == "workflow":
            return p / self.session / "subagents" / "workflows" / str(self.workflow) / f"agent-{self.agent}.jsonl"
        if self.layout == "legacy":
            return p / f"agent-{self.agent}.jsonl"
        return p / f"{self.session}.jsonl"


@dataclass
class Report:
    """What was generated."""

    out: str
    profile: str
    seed: int
    files: int = 0
    bytes: int = 0
    lines: int = 0
    median_bytes: int = 0
    p99_bytes: int = 0
    max_bytes: int = 0
    by_layout: dict[str, int] = field(default_factory=dict)


def plan(sizes: list[int], seed: int) -> list[Planned]:
    """Assign each size a kind, layout, project and ids (deterministic for ``seed``)."""
    rng = random.Random(seed)
    order = list(range(len(sizes)))
    rng.shuffle(order)
    n_projects = max(1, round(len(sizes) / FILES_PER_PROJECT))
    mains: dict[str, list[str]] = {}
    out: list[Planned] = []
    for idx, si in enumerate(order):
        size = sizes[si]
        project = f"-home-user-work-project{rng.randrange(n_projects):03d}"
        session = str(uuid.uuid5(uuid.NAMESPACE_URL, f"agg-gen-corpus:{seed}:session:{idx}"))
        hexd = hashlib.sha256(f"agg-gen-corpus:{seed}:agent:{idx}".encode()).hexdigest()
        if size < SUMMARY_ONLY_BELOW:
            out.append(Planned(idx, size, "summary-only", "summary-only", project, session))
            continue
        parents = mains.get(project)
        if parents and rng.random() < SUBAGENT_SHARE:
            layout = rng.choices(list(LAYOUT_WEIGHTS), weights=list(LAYOUT_WEIGHTS.values()))[0]
            wf = f"wf_{hexd[7:15]}" if layout == "workflow" else None
            out.append(Planned(idx, size, "subagent", layout, project, rng.choice(parents), "a" + hexd[:6], wf))
            continue
        mains.setdefault(project, []).append(session)
        out.append(Planned(idx, size, "main", "main", project, session))
    return out


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        for line in f:
            yield line if line.endswith(b"\n") else line + b"\n"


class Builder:
    """Writes planned files from the sources."""

    def __init__(self, sources: Sources, seed: int) -> None:
        self.src = sources
        self.seed = seed

    def _ns(self, p: Planned, segment: int) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"agg-gen-corpus:{self.seed}:file:{p.index}:segment:{segment}")

    def segments(self, p: Planned) -> Iterator[tuple[Renamer, Iterator[bytes]]]:
        """(renamer, lines) of each source pass that makes up ``p``, endlessly."""
        rng = random.Random(f"{self.seed}:{p.index}")
        seg = 0
        if p.kind == "summary-only" and p.source is None:
            summaries = self.src.summary_lines
            while summaries:
                line = summaries[rng.randrange(len(summaries))]
                yield Renamer(self._ns(p, seg), self.src.agent_ids, {}), iter([line])
                seg += 1
            return
        pool = self.src.subagent if p.kind == "subagent" and self.src.subagent else self.src.main
        while True:
            s = p.source or pool[rng.randrange(len(pool))]
            fixed: dict[bytes, bytes] = {}
            if s.session:
                fixed[s.session.lower().encode()] = p.session.encode()
            if s.agent and p.agent:
                fixed[s.agent.encode()] = p.agent.encode()
            yield Renamer(self._ns(p, seg), self.src.agent_ids, fixed), _lines(s.path)
            if p.source is not None:
                return
            seg += 1

    def write(self, p: Planned, out_root: Path) -> tuple[int, int]:
        """Write ``p`` under ``out_root``; returns (bytes, lines)."""
        path = out_root / p.relpath()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        written = lines = 0
        sized = p.source is None  # a copy is written whole
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            for renamer, source in self.segments(p):
                for raw in source:
                    line = renamer.line(raw)
                    # A whole line is kept if the file is empty or it brings the size closer.
                    if sized and written and written + len(line) - p.size > p.size - written:
                        return written, lines
                    f.write(line)
                    written += len(line)
                    lines += 1
                    if sized and written >= p.size:
                        return written, lines
        return written, lines


def copies_sizes(sources: Sources, total: int) -> list[tuple[Source, int]]:
    """Whole copies of the sources (in order, repeated) until ``total`` bytes."""
    out: list[tuple[Source, int]] = []
    acc = 0
    everything = sources.all
    copy = 0
    while acc < total:
        for s in everything:
            out.append((s, copy))
            acc += s.size
            if acc >= total:
                break
        copy += 1
    return out


def generate(source_root: Path, out_root: Path, total: int, profile: str, seed: int) -> Report:
    """Write an amplified corpus of about ``total`` bytes under ``out_root`` (a ``projects/`` dir)."""
    sources = scan_sources(source_root)
    out_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if any(out_root.iterdir()):
        raise SystemExit(f"gen_corpus: {out_root} is not empty")
    builder = Builder(sources, seed)
    if profile == "heavy-user":
        planned = plan(heavy_sizes_for_total(total), seed)
    else:
        planned = _plan_copies(sources, total, seed)
    report = Report(str(out_root), profile, seed)
    sizes: list[int] = []
    for p in planned:
        nbytes, nlines = builder.write(p, out_root)
        sizes.append(nbytes)
        report.lines += nlines
        report.by_layout[p.layout] = report.by_layout.get(p.layout, 0) + 1
    sizes.sort()
    report.files = len(sizes)
    report.bytes = sum(sizes)
    report.median_bytes = int(statistics.median(sizes)) if sizes else 0
    report.p99_bytes = sizes[min(len(sizes) - 1, math.ceil(0.99 * len(sizes)) - 1)] if sizes else 0
    report.max_bytes = sizes[-1] if sizes else 0
    return report


def _plan_copies(sources: Sources, total: int, seed: int) -> list[Planned]:
    """One planned file per source file per copy, same kind, layout and size as the source."""
    out: list[Planned] = []
    for idx, (s, copy) in enumerate(copies_sizes(sources, total)):
        tag = f"agg-gen-corpus:{seed}:copy:{copy}"
        session = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}:session:{s.session or s.path.stem}"))
        agent = (
            new_agent_id(s.agent.encode(), hashlib.sha256(f"{tag}:{s.agent}".encode()).hexdigest()) if s.agent else None
        )
        layout = {"subagent": "subagents", "summary-only": "summary-only"}.get(s.kind, "main")
        if s.kind == "subagent" and s.session is None:
            layout = "legacy"
        project = f"{s.project}-copy{copy:04d}"
        out.append(Planned(idx, s.size, s.kind, layout, project, session, agent.decode() if agent else None, source=s))
    return out


def describe(report: Report) -> str:
    """One line: count, size, and the size profile of a generated corpus."""
    return (
        f"{report.files} files, {report.bytes / MB:.1f} MB, {report.lines} lines; median "
        f"{report.median_bytes / KB:.0f} KB, p99 {report.p99_bytes / MB:.2f} MB, max {report.max_bytes / MB:.2f} MB; "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.by_layout.items()))
    )


def default_source() -> Path:
    """The shared corpus (``shared/corpus/projects`` beside the checkout or above it)."""
    if os.environ.get("AGG_TEST_CORPUS"):
        return Path(os.environ["AGG_TEST_CORPUS"])
    for parent in [REPO, *REPO.parents]:
        candidate = parent / "shared" / "corpus" / "projects"
        if candidate.is_dir():
            return candidate
    return Path("/work/shared/corpus/projects")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("out", type=Path, help="output dir (created; must be empty); laid out like projects/")
    ap.add_argument("--size", type=parse_size, default=parse_size("130MB"), help="total size (default 130MB)")
    ap.add_argument("--profile", choices=["heavy-user", "copies"], default="heavy-user")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", type=Path, default=None, help="real corpus (a projects/ dir)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    source = args.source or default_source()
    if not source.is_dir():
        print(f"gen_corpus: no source corpus at {source}", file=sys.stderr)
        return 2
    report = generate(source, args.out, args.size, args.profile, args.seed)
    print(json.dumps(asdict(report)) if args.json else describe(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
