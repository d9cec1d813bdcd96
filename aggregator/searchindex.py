"""The search index: a projection of the event log into a SQLite FTS5 file in the data dir.

Like the Redis projections it is built from the log by ``seq``, in steps, each step one SQLite
transaction that writes its rows *and* moves the checkpoint — so a process killed at any
instant leaves the index at the end of some step, and the next catch-up goes on from there
(``tests/adversarial/test_search_kill.py::test_kill_during_indexing_then_catch_up_gives_the_same_hits``).
Several processes may catch up at once: a step is written under SQLite's write lock
(``BEGIN IMMEDIATE``) only if the checkpoint is still the one it started from.

It lives on the machine, not in Redis: every machine that shares a store builds its own from the
store's log, and the history is not held a second time in Redis' memory. The file is named after
the store's id (``<ns>:store``, set once) and namespace; it notices a store that went back (the
entry at its checkpoint is gone or another event) and then starts over. ``agg replay --rebuild``
rebuilds it.

An ``agg-forget`` entry (``agg forget``) drops every row of its conversation, at its place in the
log: rows of entries before it go, those of entries after it (the conversation came back) stay.

Each event's newest revision is indexed: a revision replaces the rows of its event (so does the
same event met again under a later seq). One row per
text of an event (its ``part``: the index of its role in :data:`aggregator.fts.ROLES`).

A text goes in the FTS5 column of its role (the other columns of its row stay empty), so that
``--role`` is a column filter inside the FTS5 query rather than a join. The FTS5 table is
*contentless*: it holds the words' positions, not the text (which the store has;
snippets are cut from it, :func:`aggregator.fts.snippet`) — less than half the size of a table
that keeps a copy (``scripts/bench/search.py``). SQLite before 3.43 cannot delete from such a
table, so a replaced row is dropped from ``docs`` only: every query joins ``docs``, so it is never
found again, and ``agg replay --rebuild`` clears what it left in the word index (``orphans``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import tenacity

from aggregator import defaults
from aggregator.buckets import Buckets
from aggregator.errors import StoreError
from aggregator.fts import INDEXED_TYPES, ROLES, parts, prepare
from aggregator.parse import loads
from aggregator.paths import DataPaths
from aggregator.store import LogEntry, Store

SCHEMA = "3"
"""Version of the file's layout; a file of another version is rebuilt."""

_TABLES = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS convs(n INTEGER PRIMARY KEY, conv TEXT NOT NULL UNIQUE, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    rowid INTEGER PRIMARY KEY,
    conv INTEGER NOT NULL,
    id TEXT NOT NULL,
    part INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER,
    agent TEXT
);
CREATE INDEX IF NOT EXISTS docs_event ON docs(conv, id);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    user, assistant, tool, title, summary, content='', tokenize='unicode61 remove_diacritics 0'
);
"""


def _buckets_id(ids: list[str]) -> str:
    """The id of a cluster store's index: one for its buckets' ids together."""
    return "c" + hashlib.sha1(",".join(ids).encode()).hexdigest()[:16]


def store_identity(store: Store) -> str:
    """The store's id (``<ns>:store``), given to it now if it has none."""
    return store.identity()


@dataclass(frozen=True)
class Doc:
    """One text of one event, ready to index."""

    conv: str
    project: str
    id: str
    part: int
    seq: int
    ts: int | None
    agent: str | None
    body: str


_Texts = tuple[LogEntry, dict[str, Any], list[Doc]]
"""A log entry, its envelope and its texts to index."""


@dataclass(frozen=True)
class Row:
    """One hit as the index has it."""

    conv: str
    project: str
    id: str
    role: str
    seq: int
    ts: int | None
    agent: str | None
    score: float
    """BM25 (lower is better)."""


class SearchIndex:
    """One store's search index file on this machine."""

    def __init__(self, path: Path, store_id: str = "") -> None:
        self.path = path
        if not path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        # Usable from any one thread at a time (the MCP server answers on worker threads; its
        # callers serialize their calls).
        self.db = sqlite3.connect(
            str(path), timeout=defaults.SEARCH_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._use_wal()
        # WAL with synchronous=NORMAL: a commit is atomic against a crash of this process (kill -9);
        # after a power loss the last steps may be lost, and catch-up redoes them.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA journal_size_limit={defaults.SEARCH_WAL_LIMIT_BYTES}")
        self.store_id = store_id
        self.scope = ""
        """Suffix of the position's meta keys: ``""`` for a store's one log; ``:b<n>`` for bucket
        ``n``'s log in a cluster store's index (:meth:`follow`)."""
        self._setup()

    def _use_wal(self) -> None:
        """Put the file in WAL mode (once: it stays so). Switching needs the file to itself, and
        SQLite answers "database is locked" at once, without its busy timeout, when another
        connection opens it at the same moment — two opening a new index, as `agg serve`'s
        indexer and a search do (tests/store/test_web_api.py::test_the_indexer_follows_the_log_and_stops
        failed 1 run in 10): tried again, up to the busy timeout."""
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, sqlite3.OperationalError) and "locked" in str(e)),
            wait=tenacity.wait_exponential(multiplier=0.005, max=0.2),
            stop=tenacity.stop_after_delay(defaults.SEARCH_BUSY_TIMEOUT_S),
            reraise=True,
        ):
            with attempt:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")

    @classmethod
    def open(cls, store: Store, data_dir: Path) -> SearchIndex:
        """The index of ``store`` in ``data_dir`` (created empty if there is none yet).

        A file SQLite cannot read as a database (damaged, or not ours) is set aside and the index
        built again: it is a projection, nothing is lost
        (``tests/store/test_search.py::test_a_damaged_index_file_is_built_again``). One it cannot
        open or write at all is one line (:class:`StoreError`).
        """
        sid = store_identity(store)
        return cls._open_file(DataPaths(data_dir, store.keys.ns).search_index(sid), sid, data_dir)

    @classmethod
    def _open_file(cls, path: Path, sid: str, data_dir: Path) -> SearchIndex:
        """:meth:`open`'s work, for the index file ``path`` of store id ``sid``."""
        try:
            try:
                return cls(path, sid)
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.OperationalError):
                    raise
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    if p.exists():
                        p.replace(p.with_name(p.name + ".damaged"))
                return cls(path, sid)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot use the search index in {data_dir}: {e}") from None

    @classmethod
    def open_all(cls, buckets: Buckets, data_dir: Path) -> SearchIndex:
        """The index of a store's buckets (:mod:`aggregator.buckets`): for one, :meth:`open`; for
        a cluster store's, one file that follows every bucket's log (:meth:`follow`), named after
        their ids together — one index, so that ranking weighs every text as a single store's does."""
        if not buckets.cluster:
            return cls.open(buckets.stores[0], data_dir)
        sid = _buckets_id([store_identity(s) for s in buckets])
        return cls._open_file(DataPaths(data_dir, buckets.keys.ns).search_index(sid), sid, data_dir)

    @classmethod
    def existing(cls, buckets: Buckets, data_dir: Path) -> SearchIndex | None:
        """:meth:`open_all`'s index if this machine has one (none is created), else None."""
        ids = [s.current_identity() for s in buckets]
        sid = "" if not all(ids) else ids[0] if not buckets.cluster else _buckets_id(ids)
        path = DataPaths(data_dir, buckets.keys.ns).search_index(sid)
        if not sid or not path.exists():
            return None
        return cls._open_file(path, sid, data_dir)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def following(self, bucket: int | None) -> Iterator[SearchIndex]:
        """This index with its position that of bucket ``bucket``'s log (None: the store's one log)."""
        before, self.scope = self.scope, "" if bucket is None else f":b{bucket}"
        try:
            yield self
        finally:
            self.scope = before

    def follow(self, stores: list[Store], progress: Callable[[int], None] | None = None) -> int:
        """:meth:`catch_up` with the log of each of ``stores`` (a cluster store's buckets, each at
        its own position; one store: its log); returns how many entries were taken in. One
        bucket out of step starts the whole index over: rows are not kept per bucket."""
        if len(stores) == 1:
            return self.catch_up(stores[0], progress)
        for n, store in enumerate(stores):
            with self.following(n):
                if not self.in_step(store):
                    self.reset()
                    break
        applied = 0
        for n, store in enumerate(stores):
            with self.following(n):
                applied += self.catch_up(store, progress)
        return applied

    def behind(self, stores: list[Store]) -> int:
        """How many seqs the index is behind the logs of ``stores`` (summed over buckets)."""
        if len(stores) == 1:
            return stores[0].last_seq() - self.checkpoint()
        total = 0
        for n, store in enumerate(stores):
            with self.following(n):
                total += max(0, store.last_seq() - self.checkpoint())
        return total

    # --- layout and checkpoint ------------------------------------------------------------------
    def _setup(self) -> None:
        with self._write():
            version = self._meta("schema")
            if version is not None and version != SCHEMA:
                self._drop()
            self._create()

    def _create(self) -> None:
        for statement in _TABLES.split(";"):
            if statement.strip():
                self.db.execute(statement)
        self._set_meta("schema", SCHEMA)
        if self.store_id:
            self._set_meta("store_id", self.store_id)

    def _drop(self) -> None:
        for table in ("fts", "docs", "convs", "meta"):
            self.db.execute(f"DROP TABLE IF EXISTS {table}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction (taking SQLite's write lock at once)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta(self, k: str) -> str | None:
        try:
            row = self.db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        except sqlite3.OperationalError:  # no meta table yet
            return None
        return None if row is None else str(row[0])

    def _set_meta(self, k: str, v: str) -> None:
        self.db.execute("INSERT INTO meta(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", (k, v))

    def checkpoint(self) -> int:
        """The last log seq the index holds."""
        return int(self._meta("seq" + self.scope) or 0)

    def reset(self) -> None:
        """Empty the index (its checkpoint back to 0)."""
        with self._write():
            self._drop()
            self._create()
        self.db.execute("VACUUM")  # give the dropped tables' pages back to the file system

    def size(self) -> dict[str, int]:
        """``docs`` indexed, ``orphans`` (replaced rows left in the word index) and ``bytes`` of the
        file (with its write-ahead log)."""
        n = self.db.execute("SELECT count(*) FROM docs").fetchone()[0]
        total = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {"docs": int(n), "orphans": int(self._meta("orphans") or 0), "bytes": total}

    # --- catching up ------------------------------------------------------------------------------
    def in_step(self, store: Store) -> bool:
        """Whether the store still holds what the index was built from: its sequence has not gone
        back below the checkpoint, and the last event indexed is still stored with the bytes that
        were indexed, or was forgotten since (a store emptied, or restored from an older copy,
        fails one or the other)."""
        cp = self.checkpoint()
        if cp == 0:
            return True
        conv, eid, digest = (self._meta(k + self.scope) for k in ("last_conv", "last_id", "last_digest"))
        if not (conv and eid and digest):
            return False
        if eid.startswith("forget:"):  # the last entry was a forget: the log still holds it
            return store.last_seq() >= cp and [e.env()["id"] for e in store.batches_at([cp])[0]] == [eid]
        if store.last_seq() < cp:
            return False
        # an event a forget removed (the index applies that forget further on) is not a store gone back
        return digest in store.versions([(conv, eid)])[0] or store.forgotten_at(conv) is not None

    def catch_up(self, store: Store, progress: Callable[[int], None] | None = None) -> int:
        """Index every log entry past the checkpoint; returns how many entries were taken in."""
        if not self.in_step(store):
            self.reset()
        if self.checkpoint() >= store.last_seq():
            return 0  # caught up: two GETs and an HGET, not a read of the log's last batch
        applied = 0
        while True:
            cp = self.checkpoint()
            entries, docs = self._read_step(store, cp)
            if not entries:
                return applied
            if self._apply(cp, entries, docs):  # else another process moved the checkpoint: go on from there
                applied += len(entries)
                if progress is not None:
                    progress(len(entries))

    def _read_step(self, store: Store, cp: int) -> tuple[list[LogEntry], list[_Texts]]:
        """The log entries of the step after ``cp`` and their texts (none when the log ends)."""
        entries = list(store.entries_after(cp, cp + defaults.SEARCH_STEP_ENTRIES))
        if not entries:
            # seq may jump past a whole step (aggregator.seqfloor raised it after Redis lost writes).
            later = store.log_batches(cp, count=1)
            if later:
                entries = list(store.entries_after(cp, later[0][0] + defaults.SEARCH_STEP_ENTRIES - 1))
        return entries, list(self._docs(store, entries)) if entries else []

    def rebuild(self, store: Store | list[Store]) -> dict[str, Any]:
        """Drop the index and build it again from the whole log (every bucket's: ``seq`` then
        has one per bucket)."""
        stores = store if isinstance(store, list) else [store]
        self.reset()
        entries = self.follow(stores)
        if len(stores) == 1:
            return {"entries": entries, "seq": self.checkpoint(), **self.size()}
        seqs = []
        for n in range(len(stores)):
            with self.following(n):
                seqs.append(self.checkpoint())
        return {"entries": entries, "seq": seqs, **self.size()}

    def _docs(self, store: Store, entries: list[LogEntry]) -> Iterator[_Texts]:
        """Each entry with its envelope and the texts of its stored bytes."""
        envs = [e.env() for e in entries]
        wanted = [(e, env) for e, env in zip(entries, envs, strict=True) if env["type"] in INDEXED_TYPES]
        refs = [(env["conv"], e.digest) for e, env in wanted]
        bodies = dict(zip(refs, store.bodies(refs), strict=True))
        for e, env in zip(entries, envs, strict=True):
            docs: list[Doc] = []
            raw = bodies.get((env["conv"], e.digest))
            if raw is not None:
                try:
                    obj = loads(raw)
                except ValueError:
                    obj = None
                tms = orjson.loads(e.facts).get("tms")
                for role, text in parts(obj):
                    docs.append(
                        Doc(env["conv"], e.project, env["id"], ROLES.index(role), e.seq, tms, env.get("agent"), text)
                    )
            yield e, env, docs

    def _apply(self, cp: int, entries: list[LogEntry], docs: list[_Texts]) -> bool:
        """Write one step and move the checkpoint, if no other process moved it first."""
        last = entries[-1]
        with self._write():
            if self.checkpoint() != cp:
                return False  # another process indexed these entries: take it from its checkpoint
            # A forget (an agg-forget entry) drops every row of its conversation, between the
            # entries before it and those after (the conversation may come back later).
            orphans = 0
            part: list[_Texts] = []
            for item in docs:
                if item[0].is_forget:
                    orphans += self._write_texts(part)
                    orphans += self._forget(item[1]["conv"])
                    part = []
                else:
                    part.append(item)
            orphans += self._write_texts(part)
            if orphans:
                self._set_meta("orphans", str(int(self._meta("orphans") or 0) + orphans))
            self._set_meta("seq" + self.scope, str(last.seq))
            env = last.env()
            for k, v in (("last_conv", env["conv"]), ("last_id", env["id"]), ("last_digest", last.digest)):
                self._set_meta(k + self.scope, v)
        return True

    def _write_texts(self, docs: list[_Texts]) -> int:
        """Index the texts of a run of entries (inside a step's transaction); returns how many
        rows it replaced (left in the word index)."""
        # The newest version of each event in this step replaces whatever the index holds for it
        # (an earlier version; or the event itself, stored again under a later seq after a
        # restore): an event's rows are never there twice.
        newest: dict[tuple[str, str], list[Doc]] = {}
        projects: dict[str, str] = {}
        for entry, env, ds in docs:
            if ds or env["revision"]:
                newest[(env["conv"], env["id"])] = ds
                projects.setdefault(env["conv"], entry.project)
        if not newest:
            return 0
        conv_n = self._conv_numbers(projects)
        changes = self.db.total_changes
        self.db.executemany("DELETE FROM docs WHERE conv = ? AND id = ?", [(conv_n[c], e) for c, e in newest])
        orphans = self.db.total_changes - changes
        # Row ids are never reused: a replaced row's words stay in the contentless word index
        # under its old id, which must not come to mean another text.
        top = int(self._meta("rowid") or 0)
        rows, bodies = [], []
        for ds in newest.values():
            for d in ds:
                top += 1
                rows.append((top, conv_n[d.conv], d.id, d.part, d.seq, d.ts, d.agent))
                bodies.append((d.part, top, prepare(d.body)))
        self.db.executemany("INSERT INTO docs(rowid, conv, id, part, seq, ts, agent) VALUES (?,?,?,?,?,?,?)", rows)
        for part, group in _by_part(bodies):
            self.db.executemany(f"INSERT INTO fts(rowid, {ROLES[part]}) VALUES (?, ?)", group)
        self._set_meta("rowid", str(top))
        return orphans

    def _forget(self, conv: str) -> int:
        """Drop every row of ``conv`` (inside a step's transaction); returns how many."""
        row = self.db.execute("SELECT n FROM convs WHERE conv = ?", (conv,)).fetchone()
        if row is None:
            return 0
        changes = self.db.total_changes
        self.db.execute("DELETE FROM docs WHERE conv = ?", (row[0],))
        return int(self.db.total_changes - changes)

    # --- forgetting ---------------------------------------------------------------------------------
    def indexed_texts(self, store: Store, conv: str) -> list[tuple[int, int, str]]:
        """``(rowid, part, text)`` of each of ``conv``'s rows, the text as it was indexed (read
        back from the stored version the row was made from): what :meth:`purge` needs to take
        its words out of the word index. Call it while the store still holds the conversation;
        rows whose text cannot be found again are left out (a forget leaves their words)."""
        rows = self.db.execute(
            "SELECT d.rowid, d.id, d.part, d.seq FROM docs d JOIN convs c ON c.n = d.conv WHERE c.conv = ?"
            " ORDER BY d.rowid",
            (conv,),
        ).fetchall()
        if not rows:
            return []
        digests = {e.seq: e.digest for e in store.conversation_entries(conv, 0)}
        versions = sorted({(eid, seq) for _, eid, _, seq in rows if seq in digests})
        raws = dict(zip(versions, store.bodies([(conv, digests[seq]) for _, seq in versions]), strict=True))
        by_version: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        for rowid, eid, part, seq in rows:
            by_version[(eid, seq)].append((rowid, part))
        out: list[tuple[int, int, str]] = []
        for version, got in by_version.items():
            raw = raws.get(version)
            if raw is None:
                continue
            try:
                texts = [(ROLES.index(role), text) for role, text in parts(loads(raw))]
            except ValueError:
                continue
            # the same texts, in the same order, as the rows were made: else it is not that version
            if [part for _, part in got] == [part for part, _ in texts]:
                out += [(rowid, part, text) for (rowid, part), (_, text) in zip(got, texts, strict=True)]
        return out

    def purge(self, texts: list[tuple[int, int, str]]) -> int:
        """Take rows out of the index *and* their words out of the word index (FTS5's ``delete``
        with the text as it was indexed: :meth:`indexed_texts`), for those still there; returns
        how many. A row dropped without it (a revision, a forget applied from the log) leaves its
        words behind, unmatchable, until the index is rebuilt."""
        done = 0
        with self._write():
            for rowid, part, text in texts:
                if self.db.execute("DELETE FROM docs WHERE rowid = ?", (rowid,)).rowcount:
                    self.db.execute(
                        f"INSERT INTO fts(fts, rowid, {ROLES[part]}) VALUES('delete', ?, ?)", (rowid, prepare(text))
                    )
                    done += 1
        return done

    def _conv_numbers(self, projects: dict[str, str]) -> dict[str, int]:
        """Number of each conversation in the ``convs`` table (added with its project if new)."""
        out: dict[str, int] = {}
        for conv, project in projects.items():
            row = self.db.execute("SELECT n FROM convs WHERE conv = ?", (conv,)).fetchone()
            if row is None:
                cur = self.db.execute("INSERT INTO convs(conv, project) VALUES (?, ?)", (conv, project))
                out[conv] = int(cur.lastrowid or 0)
            else:
                out[conv] = int(row[0])
        return out

    # --- querying -----------------------------------------------------------------------------------
    def query(
        self,
        match: str,
        *,
        roles: tuple[str, ...] = (),
        conv: str | None = None,
        projects: set[str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = defaults.SEARCH_LIMIT,
    ) -> tuple[int, list[Row]]:
        """``(total, rows)``: how many texts match ``match`` (an FTS5 expression, see
        :func:`aggregator.fts.translate`) under the filters, and the best ``limit`` of them — by
        BM25, the newest first among equals."""
        if roles:
            match = "{" + " ".join(roles) + "} : (" + match + ")"
        where: list[str] = []
        args: list[Any] = []
        if conv is not None:
            where.append("c.conv = ?")
            args.append(conv)
        if projects is not None:
            where.append(f"c.project IN ({','.join('?' * len(projects))})")
            args += sorted(projects)
        if since_ms is not None:
            where.append("d.ts >= ?")
            args.append(since_ms)
        if until_ms is not None:
            where.append("d.ts <= ?")
            args.append(until_ms)
        meta = (
            "SELECT d.rowid, c.conv, c.project, d.id, d.part, d.seq, d.ts, d.agent "
            "FROM docs d JOIN convs c ON c.n = d.conv"
        )
        if not where and not int(self._meta("orphans") or 0):
            # Every word-index row has its docs row: rank and count in FTS5 alone (no join per match).
            total = int(self.db.execute("SELECT count(*) FROM fts WHERE fts MATCH ?", (match,)).fetchone()[0])
            if total == 0 or limit <= 0:
                return total, []
            best = self.db.execute(
                _ranked("SELECT rowid, bm25(fts) AS score FROM fts WHERE fts MATCH ?", "rowid", total, limit),
                (match, limit),
            ).fetchall()
            ids = [b[0] for b in best]
            info = {r[0]: r for r in self.db.execute(f"{meta} WHERE d.rowid IN ({','.join('?' * len(ids))})", ids)}
            found = [(score, info[rowid]) for rowid, score in best if rowid in info]
        else:
            joined = " FROM fts JOIN docs d ON d.rowid = fts.rowid JOIN convs c ON c.n = d.conv WHERE fts MATCH ?"
            cond = "".join(" AND " + w for w in where)
            total = int(self.db.execute("SELECT count(*)" + joined + cond, [match, *args]).fetchone()[0])
            if total == 0 or limit <= 0:
                return total, []
            best = self.db.execute(
                _ranked("SELECT d.rowid, bm25(fts) AS score" + joined + cond, "d.rowid", total, limit),
                [match, *args, limit],
            ).fetchall()
            ids = [b[0] for b in best]
            info = {r[0]: r for r in self.db.execute(f"{meta} WHERE d.rowid IN ({','.join('?' * len(ids))})", ids)}
            found = [(score, info[rowid]) for rowid, score in best]
        # Equal scores: the newest record first (the FTS5-only path cut at the limit by the newest
        # stored first, rowids growing with seq).
        found.sort(key=lambda f: (f[0], -(f[1][6] or 0), -f[1][5]))
        rows = [
            Row(conv, project, eid, ROLES[part], seq, ts, agent, score)
            for score, (_rowid, conv, project, eid, part, seq, ts, agent) in found
        ]
        return total, rows


def _ranked(select: str, rowid: str, total: int, limit: int) -> str:
    """``select`` (rowid, score) ordered by BM25 and cut at ``limit``; past
    :data:`~aggregator.defaults.SEARCH_RANK_CANDIDATES` matches, only the newest that many are
    ranked (computing BM25 costs about a microsecond per match)."""
    if total <= defaults.SEARCH_RANK_CANDIDATES or limit > defaults.SEARCH_RANK_CANDIDATES:
        return f"{select} ORDER BY score, {rowid} DESC LIMIT ?"
    newest = f"{select} ORDER BY {rowid} DESC LIMIT {defaults.SEARCH_RANK_CANDIDATES}"
    return f"SELECT * FROM ({newest}) ORDER BY score, 1 DESC LIMIT ?"


def _by_part(bodies: list[tuple[int, int, str]]) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """``(part, [(rowid, text)…])`` for each part (one INSERT statement per column)."""
    groups: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for part, rowid, text in bodies:
        groups[part].append((rowid, text))
    yield from sorted(groups.items())
