"""The human-evaluation store: one SQLite file holds every campaign, its tasks and every judgement ever made.

    campaigns   id, name UNIQUE, kind (source-to-text | image-to-text | audio-to-text | chat | continuation), created,
                spec (JSON: how it was made)
    systems     id, campaign_id, position, label, run_path        the 1 or 2 runs compared
    items       id, campaign_id, position, line, source, reference  what is translated / prompted
    candidates  id, item_id, system_id, text, bad_of               a system's output for an item; a BAD copy
                                                                   (quality control) points at its original
    raters      id, campaign_id, name, token UNIQUE                one private link each
    tasks       id, rater_id, position, item_id, candidate_ids, control
                                                                   what a rater sees at one position: the item and
                                                                   its candidates in display order (slot A, B)
    judgements  id, task_id, rater_id, created, payload, preference, preferred_system_id
                                                                   append-only: a changed score is a new row

Why these choices:

- **Append-only judgements.** Triggers ABORT every UPDATE and DELETE on ``judgements``: a rater who changes
  a score adds a row, the latest row of a task counts, and the history stays for the export (an audit trail
  of when each score was given, the raw material of intra-rater consistency).
- **One transaction per write.** A campaign is inserted in one transaction after every candidate exists, so
  a failure leaves nothing behind; a judgement is validated, inserted and committed before `submit` returns.
  Writes open with ``BEGIN IMMEDIATE``: they take the write lock up front, so two writers queue on
  ``busy_timeout`` instead of one failing when it upgrades a read lock.
- **Safe for a web server.** One connection per thread (`threading.local`), so FastAPI's thread pool can call
  the store concurrently; ``journal_mode=WAL`` lets readers run while one writer commits;
  ``synchronous=FULL`` makes a committed judgement survive a power cut; ``foreign_keys=ON`` keeps the rows
  consistent; ``busy_timeout=5000`` waits up to 5 s for the lock.
- **What a rater may see.** `task` returns the source and the candidates' texts in display order, never the
  systems, the reference or whether the task is a quality control. A submitted preference ("A", "B", "tie")
  is stored as given and also resolved to the system it names (``preferred_system_id``), so reports never
  depend on the display order.
- **Validated.** `submit` checks a judgement against its task with `qkv.humaneval.judgement` before it is
  inserted: a malformed one is an `InvalidJudgement` and writes nothing.
- **Versioned.** The schema version is ``PRAGMA user_version``; a store written by a newer qkv is refused
  with a one-line error, as is a file that is not SQLite or an SQLite file without these tables. A store of
  schema 1 (kinds named after tasks) or 2 (no audio-to-text kind) is upgraded in place when opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from qkv.errors import QKVError
from qkv.humaneval.judgement import SLOTS, InvalidJudgement, validate_judgement

__all__ = ["CampaignPlan", "InvalidJudgement", "NotFound", "PlannedCandidate", "PlannedRater", "PlannedTask", "Rater",
           "Store"]

SCHEMA_VERSION = 3
_MAX_INTEGER = 2**63 - 1  # SQLite's INTEGER is 64-bit: a bigger Python int cannot be bound (OverflowError)
# what the raters see, from what the runs can do (`qkv.humaneval.campaign.kind_of`): a source (a sentence, an
# image or a recording) and the text a run wrote about it, a question and a chat reply, a prompt and its continuation
KINDS = ("source-to-text", "image-to-text", "audio-to-text", "chat", "continuation")
_KINDS_V1 = {"translate": "source-to-text", "chat": "chat", "lm": "continuation"}  # schema 1's task names

_TABLES = ("campaigns", "systems", "items", "candidates", "raters", "tasks", "judgements")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('source-to-text', 'image-to-text', 'audio-to-text', 'chat', 'continuation')),
    created TEXT NOT NULL,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS systems (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    position INTEGER NOT NULL,
    label TEXT NOT NULL,
    run_path TEXT NOT NULL,
    UNIQUE (campaign_id, position),
    UNIQUE (campaign_id, label)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    position INTEGER NOT NULL,
    line INTEGER NOT NULL,
    source TEXT NOT NULL,
    reference TEXT,
    UNIQUE (campaign_id, position)
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    system_id INTEGER NOT NULL REFERENCES systems(id),
    text TEXT NOT NULL,
    bad_of INTEGER REFERENCES candidates(id)
);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    name TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    UNIQUE (campaign_id, name)
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items(id),
    candidate_ids TEXT NOT NULL,
    control INTEGER NOT NULL CHECK (control IN (0, 1)),
    UNIQUE (rater_id, position)
);
CREATE TABLE IF NOT EXISTS judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    created TEXT NOT NULL,
    payload TEXT NOT NULL,
    preference TEXT CHECK (preference IN ('A', 'B', 'tie')),
    preferred_system_id INTEGER REFERENCES systems(id)
);
CREATE INDEX IF NOT EXISTS judgements_by_task ON judgements(task_id, id);
CREATE INDEX IF NOT EXISTS judgements_by_rater ON judgements(rater_id, task_id);
CREATE INDEX IF NOT EXISTS candidates_by_item ON candidates(item_id);
CREATE TRIGGER IF NOT EXISTS judgements_are_append_only_update BEFORE UPDATE ON judgements
BEGIN SELECT RAISE(ABORT, 'judgements are append-only: submit a new judgement instead'); END;
CREATE TRIGGER IF NOT EXISTS judgements_are_append_only_delete BEFORE DELETE ON judgements
BEGIN SELECT RAISE(ABORT, 'judgements are append-only: they are never deleted'); END;
"""


class NotFound(QKVError):
    """The rater, task or campaign does not exist, or the task is not this rater's (the server's 404)."""


@dataclass(frozen=True)
class Rater:
    """Who a private link belongs to (`Store.rater`)."""

    id: int
    name: str
    campaign: str
    kind: str
    pairwise: bool  # two systems: each task shows two candidates and asks for a preference


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class PlannedTask:
    item: int  # index into CampaignPlan.items
    candidates: list[int]  # indices into CampaignPlan.candidates, in display order (slot A, slot B)
    control: bool = False  # a quality-control task: one candidate is a BAD copy


@dataclass
class PlannedRater:
    name: str
    token: str
    tasks: list[PlannedTask]  # in the order the rater sees them


@dataclass
class PlannedCandidate:
    item: int  # index into CampaignPlan.items
    system: int  # index into CampaignPlan.systems
    text: str
    bad_of: int | None = None  # index of the original candidate this BAD copy degrades


@dataclass
class CampaignPlan:
    """A whole campaign before it is stored (`qkv.humaneval.campaign` builds it); rows refer to each other by
    list index, and `Store.add_campaign` turns the indices into row ids inside one transaction."""

    name: str
    kind: str
    spec: dict  # how it was made: runs, data, seed, n, ... (JSON)
    systems: list[tuple[str, str]]  # (label, run path)
    items: list[tuple[int, str, str | None]]  # (line in the data, source, reference or None)
    candidates: list[PlannedCandidate]
    raters: list[PlannedRater] = field(default_factory=list)


def _now() -> str:
    """ISO-8601 UTC with milliseconds: ``2025-01-31T12:00:00.123+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------------ the store
class Store:
    """The SQLite file of every campaign. Safe to share between threads (one connection per thread)."""

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path).expanduser()
        self._create = create
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        if not create and not self.path.is_file():
            raise QKVError(f"no human-evaluation store at {self.path} (create a campaign first: "
                           f"qkv human-eval create NAME --runs RUN ... --db {self.path})")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_schema(self._conn())

    # -------------------------------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        # mode=rw: opening an existing store never creates a file by accident
        target = self.path.resolve().as_uri() + ("?mode=rwc" if self._create else "?mode=rw")
        try:
            conn = sqlite3.connect(target, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise QKVError(f"{self.path}: cannot open the store ({e})") from None
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError:
            conn.close()
            raise QKVError(f"{self.path}: not a qkv human-evaluation store (not an SQLite database)") from None
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise QKVError(f"{self.path}: the store is closed")
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: COMMIT when the block ends, ROLLBACK if it raises."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        with conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside the block sees one state of the store (a read transaction: with WAL, writers go
        on meanwhile and their commits show after the block). `build_report` reads through one."""
        conn = self._conn()
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        not_ours = f"{self.path}: not a qkv human-evaluation store"
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError:
            raise QKVError(f"{not_ours} (not an SQLite database)") from None
        if version > SCHEMA_VERSION:
            raise QKVError(f"{self.path} was written by a newer qkv (store schema version {version}; this qkv reads "
                           f"version {SCHEMA_VERSION}); upgrade qkv to read it")
        if version == 0 and not (tables & set(_TABLES)):
            if tables or not self._create:
                raise QKVError(f"{not_ours} (an SQLite database without its tables)")
            with self._write() as c:
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        missing = [t for t in _TABLES if t not in tables]
        if version in (1, 2) and not missing:
            self._migrate(version)
            return
        if version != SCHEMA_VERSION or missing:
            raise QKVError(f"{not_ours} (schema version {version}, missing tables: {', '.join(missing) or 'none'})")

    def _migrate(self, version: int) -> None:
        """Schema 1 named a campaign's kind after its runs' task ('translate', 'chat', 'lm'), schema 2 after what the
        raters see; schema 3 adds the kind 'audio-to-text'. The campaigns table is rebuilt with the new names (from
        1) and the new CHECK (SQLite cannot alter a CHECK), in one transaction with the foreign keys off, as SQLite's
        documentation prescribes."""
        conn = self._conn()
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with self._write() as c:
                if c.execute("PRAGMA user_version").fetchone()[0] != version:  # another process upgraded it meanwhile
                    return
                create = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS campaigns"):_SCHEMA.index(");") + 2]
                c.execute(create.replace("CREATE TABLE IF NOT EXISTS campaigns", "CREATE TABLE campaigns_new"))
                cases = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in _KINDS_V1.items())
                kind = f"CASE kind {cases} END" if version == 1 else "kind"
                c.execute(f"INSERT INTO campaigns_new (id, name, kind, created, spec) SELECT id, name, {kind}, "
                          "created, spec FROM campaigns")
                c.execute("DROP TABLE campaigns")
                c.execute("ALTER TABLE campaigns_new RENAME TO campaigns")
                if c.execute("PRAGMA foreign_key_check").fetchall():
                    raise QKVError(f"{self.path}: the store's rows do not agree after upgrading it; it was left as "
                                   "it was")
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            conn.execute("PRAGMA foreign_keys = ON")

    # -------------------------------------------------------------------------------------- campaigns
    def add_campaign(self, plan: CampaignPlan) -> int:
        """Insert a whole campaign in one transaction (all or nothing); its id. QKVError if the name is taken."""
        if plan.kind not in KINDS:
            raise QKVError(f"unknown campaign kind {plan.kind!r}; valid: {', '.join(KINDS)}")
        try:
            with self._write() as c:
                if c.execute("SELECT 1 FROM campaigns WHERE name = ?", (plan.name,)).fetchone():
                    raise QKVError(f"a campaign named {plan.name!r} already exists in {self.path}")
                cid = c.execute("INSERT INTO campaigns (name, kind, created, spec) VALUES (?, ?, ?, ?)",
                                (plan.name, plan.kind, _now(), json.dumps(plan.spec))).lastrowid
                system_ids = [c.execute("INSERT INTO systems (campaign_id, position, label, run_path) "
                                        "VALUES (?, ?, ?, ?)", (cid, i, label, path)).lastrowid
                              for i, (label, path) in enumerate(plan.systems)]
                item_ids = [c.execute("INSERT INTO items (campaign_id, position, line, source, reference) "
                                      "VALUES (?, ?, ?, ?, ?)", (cid, i, line, src, ref)).lastrowid
                            for i, (line, src, ref) in enumerate(plan.items)]
                cand_ids: list[int] = []
                for cand in plan.candidates:  # originals come before their BAD copies (a BAD copy names one)
                    bad_of = None if cand.bad_of is None else cand_ids[cand.bad_of]
                    cand_ids.append(c.execute("INSERT INTO candidates (item_id, system_id, text, bad_of) "
                                              "VALUES (?, ?, ?, ?)", (item_ids[cand.item], system_ids[cand.system],
                                                                      cand.text, bad_of)).lastrowid)
                for rater in plan.raters:
                    rid = c.execute("INSERT INTO raters (campaign_id, name, token) VALUES (?, ?, ?)",
                                    (cid, rater.name, rater.token)).lastrowid
                    c.executemany(
                        "INSERT INTO tasks (rater_id, position, item_id, candidate_ids, control) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(rid, pos, item_ids[t.item], json.dumps([cand_ids[k] for k in t.candidates]), int(t.control))
                         for pos, t in enumerate(rater.tasks)])
        except sqlite3.IntegrityError as e:
            raise QKVError(f"cannot store campaign {plan.name!r}: {e}") from None
        return cid

    def campaign_names(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT name FROM campaigns ORDER BY id")]

    def campaigns(self) -> list[dict]:
        """Every campaign with its counts: name, kind, systems (labels), items, raters, tasks, judged (tasks with
        a judgement), judgements (rows, history included), created."""
        rows = self._conn().execute("""
            SELECT c.id, c.name, c.kind, c.created,
                (SELECT COUNT(*) FROM items i WHERE i.campaign_id = c.id) AS items,
                (SELECT COUNT(*) FROM raters r WHERE r.campaign_id = c.id) AS raters,
                (SELECT COUNT(*) FROM tasks t JOIN raters r ON r.id = t.rater_id WHERE r.campaign_id = c.id) AS tasks,
                (SELECT COUNT(DISTINCT j.task_id) FROM judgements j JOIN raters r ON r.id = j.rater_id
                    WHERE r.campaign_id = c.id) AS judged,
                (SELECT COUNT(*) FROM judgements j JOIN raters r ON r.id = j.rater_id
                    WHERE r.campaign_id = c.id) AS judgements
            FROM campaigns c ORDER BY c.id""").fetchall()
        out = []
        for r in rows:
            labels = [s[0] for s in self._conn().execute(
                "SELECT label FROM systems WHERE campaign_id = ? ORDER BY position", (r["id"],))]
            out.append({"name": r["name"], "kind": r["kind"], "systems": labels, "items": r["items"],
                        "raters": r["raters"], "tasks": r["tasks"], "judged": r["judged"],
                        "judgements": r["judgements"], "created": r["created"]})
        return out

    def _campaign_row(self, name: str) -> sqlite3.Row:
        row = self._conn().execute("SELECT * FROM campaigns WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = self.campaign_names()
            raise NotFound(f"no campaign named {name!r} in {self.path}; "
                           + (f"known: {', '.join(known)}" if known else "it holds no campaigns yet"))
        return row

    def campaign(self, name: str) -> dict:
        """One campaign: id, name, kind, created, spec, pairwise, systems [{id, label, run_path}], items (count),
        raters [{id, name, token, tasks, done}]. NotFound if there is none of that name."""
        row = self._campaign_row(name)
        conn = self._conn()
        systems = [dict(s) for s in conn.execute(
            "SELECT id, label, run_path FROM systems WHERE campaign_id = ? ORDER BY position", (row["id"],))]
        raters = [dict(r) for r in conn.execute("""
            SELECT r.id, r.name, r.token,
                (SELECT COUNT(*) FROM tasks t WHERE t.rater_id = r.id) AS tasks,
                (SELECT COUNT(DISTINCT j.task_id) FROM judgements j WHERE j.rater_id = r.id) AS done
            FROM raters r WHERE r.campaign_id = ? ORDER BY r.id""", (row["id"],))]
        n_items = conn.execute("SELECT COUNT(*) FROM items WHERE campaign_id = ?", (row["id"],)).fetchone()[0]
        return {"id": row["id"], "name": row["name"], "kind": row["kind"], "created": row["created"],
                "spec": json.loads(row["spec"]), "pairwise": len(systems) == 2, "systems": systems,
                "items": n_items, "raters": raters}

    def items(self, name: str) -> list[dict]:
        """The campaign's items in order: {id, position, line, source, reference}."""
        cid = self._campaign_row(name)["id"]
        return [dict(r) for r in self._conn().execute(
            "SELECT id, position, line, source, reference FROM items WHERE campaign_id = ? ORDER BY position",
            (cid,))]

    def candidates(self, name: str) -> list[dict]:
        """Every candidate, BAD copies included: {id, item (position), system (label), text, bad_of}."""
        cid = self._campaign_row(name)["id"]
        return [dict(r) for r in self._conn().execute("""
            SELECT k.id, i.position AS item, s.label AS system, k.text, k.bad_of
            FROM candidates k JOIN items i ON i.id = k.item_id JOIN systems s ON s.id = k.system_id
            WHERE i.campaign_id = ? ORDER BY i.position, s.position, k.id""", (cid,))]

    def tasks(self, name: str) -> list[dict]:
        """Every task of every rater: {id, rater, position, item (position), candidate_ids, control}."""
        cid = self._campaign_row(name)["id"]
        rows = self._conn().execute("""
            SELECT t.id, r.name AS rater, t.position, i.position AS item, t.candidate_ids, t.control
            FROM tasks t JOIN raters r ON r.id = t.rater_id JOIN items i ON i.id = t.item_id
            WHERE r.campaign_id = ? ORDER BY r.id, t.position""", (cid,)).fetchall()
        return [dict(r) | {"candidate_ids": json.loads(r["candidate_ids"]), "control": bool(r["control"])}
                for r in rows]

    def judgements_count(self, campaign: str) -> int:
        """Judgement rows of a campaign, history included."""
        cid = self._campaign_row(campaign)["id"]
        return self._conn().execute("SELECT COUNT(*) FROM judgements j JOIN raters r ON r.id = j.rater_id "
                                    "WHERE r.campaign_id = ?", (cid,)).fetchone()[0]

    def judged_candidates(self, campaign: str, history: bool = False) -> list[dict]:
        """One row per judged candidate of every judgement (only each task's latest unless `history`), in the
        order the judgements were made: {campaign, judgement_id, created, rater, task_position, item, system,
        control, bad, slot, candidate_id, source, reference, candidate, accuracy, fluency, spans, preference,
        latest}.

        ``slot`` is where the candidate was shown ("A" or "B"; "A" when a task shows one), ``candidate_id`` its
        row id (a BAD copy has its own); ``preference`` is the system label the rater preferred, "tie", or None
        (single-system campaigns); ``control`` says the task was a quality control, ``bad`` that this candidate
        is its BAD copy."""
        row = self._campaign_row(campaign)
        conn = self._conn()
        cands = {k["id"]: k for k in conn.execute("""
            SELECT k.id, k.text, k.bad_of, s.label FROM candidates k JOIN systems s ON s.id = k.system_id
            WHERE s.campaign_id = ?""", (row["id"],))}
        labels = {s["id"]: s["label"] for s in conn.execute("SELECT id, label FROM systems WHERE campaign_id = ?",
                                                               (row["id"],))}
        latest_only = "" if history else "AND j.id = (SELECT MAX(id) FROM judgements WHERE task_id = j.task_id)"
        rows = conn.execute(f"""
            SELECT j.id, j.created, j.payload, j.preference, j.preferred_system_id, r.name AS rater,
                t.position, t.candidate_ids, t.control, i.position AS item, i.source, i.reference,
                (SELECT MAX(id) FROM judgements WHERE task_id = j.task_id) AS latest_id
            FROM judgements j JOIN tasks t ON t.id = j.task_id JOIN raters r ON r.id = j.rater_id
                JOIN items i ON i.id = t.item_id
            WHERE r.campaign_id = ? {latest_only} ORDER BY j.id""", (row["id"],)).fetchall()
        out = []
        for j in rows:
            payload = json.loads(j["payload"])
            ids = json.loads(j["candidate_ids"])
            preference = "tie" if j["preference"] == "tie" else labels.get(j["preferred_system_id"])
            for slot_index, cand_id in enumerate(ids):
                cand, scores = cands[cand_id], payload["candidates"][str(cand_id)]
                out.append({"campaign": campaign, "judgement_id": j["id"], "created": j["created"],
                            "rater": j["rater"], "task_position": j["position"], "item": j["item"],
                            "system": cand["label"], "control": bool(j["control"]), "bad": cand["bad_of"] is not None,
                            "slot": SLOTS[slot_index], "candidate_id": cand_id, "source": j["source"],
                            "reference": j["reference"], "candidate": cand["text"], "accuracy": scores["accuracy"],
                            "fluency": scores["fluency"], "spans": scores["spans"], "preference": preference,
                            "latest": j["id"] == j["latest_id"]})
        return out

    # -------------------------------------------------------------------------------------- raters
    def rater(self, token: str) -> Rater | None:
        """The rater a private link's token belongs to, or None (a UNIQUE-index lookup: no timing leak)."""
        if not isinstance(token, str) or not 8 <= len(token) <= 128:
            return None
        row = self._conn().execute("""
            SELECT r.id, r.name, c.name AS campaign, c.kind,
                (SELECT COUNT(*) FROM systems s WHERE s.campaign_id = c.id) AS n_systems
            FROM raters r JOIN campaigns c ON c.id = r.campaign_id WHERE r.token = ?""", (token,)).fetchone()
        if row is None:
            return None
        return Rater(row["id"], row["name"], row["campaign"], row["kind"], row["n_systems"] == 2)

    def _rater_row(self, conn: sqlite3.Connection, rater_id: int) -> sqlite3.Row:
        row = conn.execute("""
            SELECT r.id, r.name, c.name AS campaign, c.kind,
                (SELECT COUNT(*) FROM systems s WHERE s.campaign_id = c.id) AS n_systems
            FROM raters r JOIN campaigns c ON c.id = r.campaign_id WHERE r.id = ?""", (rater_id,)).fetchone()
        if row is None:
            raise NotFound(f"no rater with id {rater_id}")
        return row

    @staticmethod
    def _progress(conn: sqlite3.Connection, rater_id: int) -> tuple[int, int, int | None]:
        """(tasks, tasks with a judgement, first position without one or None)."""
        tasks, done = conn.execute("""
            SELECT COUNT(*), COUNT(DISTINCT j.task_id) FROM tasks t LEFT JOIN judgements j ON j.task_id = t.id
            WHERE t.rater_id = ?""", (rater_id,)).fetchone()
        nxt = conn.execute("""
            SELECT MIN(t.position) FROM tasks t WHERE t.rater_id = ?
                AND NOT EXISTS (SELECT 1 FROM judgements j WHERE j.task_id = t.id)""", (rater_id,)).fetchone()[0]
        return tasks, done, nxt

    def status(self, rater_id: int) -> dict:
        """{campaign, kind, pairwise, rater, tasks, done, next}: positions are 0-based; next is None when done."""
        conn = self._conn()
        row = self._rater_row(conn, rater_id)
        tasks, done, nxt = self._progress(conn, rater_id)
        return {"campaign": row["campaign"], "kind": row["kind"], "pairwise": row["n_systems"] == 2,
                "rater": row["name"], "tasks": tasks, "done": done, "next": nxt}

    def task(self, rater_id: int, position: int) -> dict | None:
        """What the rater sees at `position`: {task_id, position, source, candidates [{id, slot, text}],
        judgement (the latest payload, or None)}; None if the position is out of range. Never the systems, the
        reference, or whether the task is a control."""
        if not 0 <= position <= _MAX_INTEGER:
            return None
        conn = self._conn()
        row = conn.execute("""
            SELECT t.id, t.position, t.candidate_ids, i.source FROM tasks t JOIN items i ON i.id = t.item_id
            WHERE t.rater_id = ? AND t.position = ?""", (rater_id, position)).fetchone()
        if row is None:
            return None
        ids = json.loads(row["candidate_ids"])
        texts = {r["id"]: r["text"] for r in conn.execute(
            f"SELECT id, text FROM candidates WHERE id IN ({','.join('?' * len(ids))})", ids)}
        latest = conn.execute("SELECT payload FROM judgements WHERE task_id = ? ORDER BY id DESC LIMIT 1",
                              (row["id"],)).fetchone()
        return {"task_id": row["id"], "position": row["position"], "source": row["source"],
                "candidates": [{"id": k, "slot": SLOTS[i] if len(ids) == 2 else None, "text": texts[k]}
                               for i, k in enumerate(ids)],
                "judgement": json.loads(latest["payload"]) if latest else None}

    def submit(self, rater_id: int, task_id: int, payload: dict) -> dict:
        """Validate and store a judgement of one of the rater's tasks: {judgement_id, done, next}.

        NotFound if the task is not this rater's; InvalidJudgement (one line) if the payload breaks a rule:
        ``{"candidates": {"<id>": {"accuracy": 0-100, "fluency": 0-100, "spans": [{start, end, severity}]}},
        "preference": "A" | "B" | "tie" | null}`` (a preference is required with two candidates, refused with one).
        """
        if not 0 <= task_id <= _MAX_INTEGER:
            raise NotFound(f"task {task_id} is not one of this rater's tasks")
        with self._write() as conn:
            self._rater_row(conn, rater_id)
            task = conn.execute("SELECT id, candidate_ids FROM tasks WHERE id = ? AND rater_id = ?",
                                (task_id, rater_id)).fetchone()
            if task is None:
                raise NotFound(f"task {task_id} is not one of this rater's tasks")
            ids = json.loads(task["candidate_ids"])
            cands = {r["id"]: (r["text"], r["system_id"]) for r in conn.execute(
                f"SELECT id, text, system_id FROM candidates WHERE id IN ({','.join('?' * len(ids))})", ids)}
            clean = validate_judgement(payload, [(k, cands[k][0]) for k in ids])
            preferred = None
            if clean["preference"] in SLOTS:
                preferred = cands[ids[SLOTS.index(clean["preference"])]][1]
            jid = conn.execute(
                "INSERT INTO judgements (task_id, rater_id, created, payload, preference, preferred_system_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, rater_id, _now(), json.dumps(clean), clean["preference"], preferred)).lastrowid
            _, done, nxt = self._progress(conn, rater_id)
        return {"judgement_id": jid, "done": done, "next": nxt}
