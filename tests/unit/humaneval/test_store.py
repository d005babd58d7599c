"""The human-evaluation store: opening (and refusing) files, a campaign stored all or nothing, what a rater
sees, every rule `submit` enforces, append-only history, and concurrent writers on threads."""

import json
import math
import re
import sqlite3
import threading

import pytest

from helpers import rate_campaign, toy_campaign
from qkv.errors import QKVError
from qkv.humaneval.judgement import MAX_SPANS
from qkv.humaneval.store import (
    SCHEMA_VERSION,
    CampaignPlan,
    InvalidJudgement,
    NotFound,
    PlannedCandidate,
    PlannedRater,
    PlannedTask,
    Store,
)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "h.db", create=True)
    yield s
    s.close()


def first_task(store, camp, rater_index=0):
    rater = store.rater(camp["raters"][rater_index]["token"])
    return rater, store.task(rater.id, 0)


def payload_for(task, accuracy=70, fluency=60, spans=(), preference="A"):
    p = {"candidates": {str(c["id"]): {"accuracy": accuracy, "fluency": fluency, "spans": list(spans)}
                        for c in task["candidates"]}}
    if len(task["candidates"]) == 2:
        p["preference"] = preference
    return p


# ------------------------------------------------------------------------------------------------ opening
def test_a_new_store_has_the_schema_version_and_the_pragmas(store, tmp_path):
    conn = store._conn()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    store.close()
    with Store(tmp_path / "h.db") as again:  # reopening an existing store needs no create
        assert again.campaign_names() == []


def test_a_missing_store_is_an_error_and_creates_no_file(tmp_path):
    with pytest.raises(QKVError, match="no human-evaluation store"):
        Store(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50, encoding="utf-8")
    for create in (False, True):
        with pytest.raises(QKVError, match="not a qkv human-evaluation store") as e:
            Store(path, create=create)
        assert "\n" not in str(e.value)


def test_sqlite_without_our_tables_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    with pytest.raises(QKVError, match="without its tables"):
        Store(path, create=True)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "h.db"
    Store(path, create=True).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(QKVError, match=f"newer qkv .*version {SCHEMA_VERSION + 1}"):
        Store(path)


# ------------------------------------------------------------------------------------------------ campaigns
def test_a_campaign_is_stored_with_its_counts(store):
    camp = toy_campaign(store, n_items=10, raters=2)
    assert camp["pairwise"] and [s["label"] for s in camp["systems"]] == ["a", "b"]
    assert camp["items"] == 10 and [r["name"] for r in camp["raters"]] == ["rater1", "rater2"]
    assert [r["tasks"] for r in camp["raters"]] == [11, 11]  # 10 items + ceil(10%) control
    (listed,) = store.campaigns()
    assert listed | {"created": None} == {"name": "demo", "kind": "source-to-text", "systems": ["a", "b"], "items": 10,
                                          "raters": 2, "tasks": 22, "judged": 0, "judgements": 0, "created": None}
    assert store.judgements_count("demo") == 0


def test_a_taken_name_is_refused_and_the_first_campaign_is_untouched(store):
    toy_campaign(store, n_items=5)
    with pytest.raises(QKVError, match="'demo' already exists"):
        toy_campaign(store, n_items=7)
    assert store.campaign("demo")["items"] == 5 and store.campaign_names() == ["demo"]


def test_a_failure_mid_campaign_leaves_nothing_behind(store):
    """The plan's last task names a candidate that does not exist: the insert fails after the campaign, systems,
    items, candidates and the first rater's tasks were written, and all of it is rolled back."""
    plan = CampaignPlan("broken", "source-to-text", {}, [("a", "/a")], [(0, "s0", None), (1, "s1", None)],
                        [PlannedCandidate(0, 0, "c0"), PlannedCandidate(1, 0, "c1")],
                        [PlannedRater("rater1", "t" * 24, [PlannedTask(0, [0]), PlannedTask(1, [1])]),
                         PlannedRater("rater2", "u" * 24, [PlannedTask(0, [0]), PlannedTask(1, [5])])])
    with pytest.raises(IndexError):
        store.add_campaign(plan)
    conn = store._conn()
    for table in ("campaigns", "systems", "items", "candidates", "raters", "tasks", "judgements"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    assert store.rater("t" * 24) is None


def test_an_unknown_campaign_names_the_known_ones(store):
    toy_campaign(store, n_items=3)
    with pytest.raises(NotFound, match="no campaign named 'nope'.*known: demo"):
        store.campaign("nope")


# ------------------------------------------------------------------------------------------------ rater view
def test_a_rater_is_found_by_token_only(store):
    camp = toy_campaign(store, n_items=4)
    r = store.rater(camp["raters"][1]["token"])
    assert (r.name, r.campaign, r.kind, r.pairwise) == ("rater2", "demo", "source-to-text", True)
    assert store.rater(camp["raters"][1]["token"][:-1] + "x") is None
    assert store.rater("") is None and store.rater(None) is None


def test_status_and_task_show_what_the_rater_needs_and_nothing_else(store):
    camp = toy_campaign(store, n_items=6)
    rater, task = first_task(store, camp)
    assert store.status(rater.id) == {"campaign": "demo", "kind": "source-to-text", "pairwise": True,
                                      "rater": "rater1", "tasks": 7, "done": 0, "next": 0}
    assert set(task) == {"task_id", "position", "source", "candidates", "judgement"}
    assert [c["slot"] for c in task["candidates"]] == ["A", "B"] and task["judgement"] is None
    assert all(set(c) == {"id", "slot", "text"} for c in task["candidates"])
    shown = json.dumps([store.task(rater.id, p) for p in range(7)])
    assert "reference" not in shown and "/runs/" not in shown and "control" not in shown
    assert "a sentence with the number" not in shown  # the references' text
    assert store.task(rater.id, 7) is None and store.task(rater.id, -1) is None


def test_a_single_system_task_has_no_slots(store):
    camp = toy_campaign(store, n_items=4, systems=("solo",))
    rater, task = first_task(store, camp)
    assert not rater.pairwise and [c["slot"] for c in task["candidates"]] == [None]
    res = store.submit(rater.id, task["task_id"], payload_for(task))
    assert res["done"] == 1


def test_both_display_orders_occur(store):
    camp = toy_campaign(store, n_items=20)
    cands = {c["id"]: c["system"] for c in store.candidates("demo")}
    rater = store.rater(camp["raters"][0]["token"])
    firsts = {cands[store.task(rater.id, p)["candidates"][0]["id"]] for p in range(22)}
    assert firsts == {"a", "b"}


# ------------------------------------------------------------------------------------------------ submitting
def test_submit_counts_progress_and_the_latest_judgement_is_shown(store):
    camp = toy_campaign(store, n_items=4)
    rater, task = first_task(store, camp)
    first = store.submit(rater.id, task["task_id"], payload_for(task, accuracy=10))
    assert first["done"] == 1 and first["next"] == 1
    second = store.submit(rater.id, task["task_id"], payload_for(task, accuracy=90, preference="tie"))
    assert second["judgement_id"] > first["judgement_id"] and second["done"] == 1
    shown = store.task(rater.id, 0)["judgement"]
    assert {c["accuracy"] for c in shown["candidates"].values()} == {90.0} and shown["preference"] == "tie"
    latest = store.judged_candidates("demo")
    history = store.judged_candidates("demo", history=True)
    assert [r["accuracy"] for r in latest] == [90.0, 90.0] and all(r["latest"] for r in latest)
    assert [(r["accuracy"], r["latest"]) for r in history] == [(10.0, False)] * 2 + [(90.0, True)] * 2
    assert store.judgements_count("demo") == 2


def test_next_is_the_first_unjudged_position_and_none_when_done(store):
    camp = toy_campaign(store, n_items=3)
    rater = store.rater(camp["raters"][0]["token"])
    t1 = store.task(rater.id, 1)
    assert store.submit(rater.id, t1["task_id"], payload_for(t1))["next"] == 0
    for pos in (0, 2, 3):
        t = store.task(rater.id, pos)
        res = store.submit(rater.id, t["task_id"], payload_for(t))
    assert res == {"judgement_id": res["judgement_id"], "done": 4, "next": None}
    assert store.status(rater.id)["next"] is None


def test_a_preference_is_stored_as_the_system_it_names(store):
    camp = toy_campaign(store, n_items=8)
    rater = store.rater(camp["raters"][0]["token"])
    systems = {c["id"]: c["system"] for c in store.candidates("demo")}
    for pos in range(4):
        task = store.task(rater.id, pos)
        store.submit(rater.id, task["task_id"], payload_for(task, preference="B"))
        slot_b_system = systems[task["candidates"][1]["id"]]
        assert store.judged_candidates("demo")[-1]["preference"] == slot_b_system


def test_judgements_are_append_only(store):
    camp = toy_campaign(store, n_items=3)
    rater, task = first_task(store, camp)
    store.submit(rater.id, task["task_id"], payload_for(task))
    conn = store._conn()
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE judgements SET payload = '{}'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM judgements")
    assert store.judgements_count("demo") == 1
    assert store.task(rater.id, 0)["judgement"]["candidates"]


def test_a_task_of_another_rater_or_campaign_is_not_found(store):
    camp = toy_campaign(store, n_items=3)
    other = toy_campaign(store, name="other", n_items=3)
    rater, _ = first_task(store, camp, 0)
    _, task_of_rater2 = first_task(store, camp, 1)
    _, task_elsewhere = first_task(store, other, 0)
    for task in (task_of_rater2, task_elsewhere):
        with pytest.raises(NotFound, match="not one of this rater's tasks"):
            store.submit(rater.id, task["task_id"], payload_for(task))
    with pytest.raises(NotFound):
        store.submit(rater.id, 10**9, payload_for(task_of_rater2))
    with pytest.raises(NotFound):
        store.status(10**9)
    assert store.judgements_count("demo") == store.judgements_count("other") == 0


def test_numbers_beyond_sqlites_integer_are_not_found_rather_than_an_overflow(store):
    """SQLite's INTEGER is 64-bit: a bigger Python int used to raise OverflowError from the query."""
    camp = toy_campaign(store, n_items=3)
    rater, task = first_task(store, camp)
    for n in (2**63, 10**23, -(2**63) - 1):
        assert store.task(rater.id, n) is None
        with pytest.raises(NotFound, match="not one of this rater's tasks"):
            store.submit(rater.id, n, payload_for(task))
    assert store.judgements_count("demo") == 0


def _cid(task, k=0):
    return str(task["candidates"][k]["id"])


def _set(p, task, key, value, k=0):
    p["candidates"][_cid(task, k)][key] = value
    return p


INVALID = {
    "not an object": (lambda p, t: ["scores"], "must be a JSON object"),
    "unknown key": (lambda p, t: p | {"comment": "nice"}, "unknown key"),
    "candidates not an object": (lambda p, t: p | {"candidates": []}, "'candidates' must be an object"),
    "missing candidate": (lambda p, t: p | {"candidates": {_cid(t): p["candidates"][_cid(t)]}}, "missing"),
    "candidate not in task": (lambda p, t: p | {"candidates": p["candidates"] | {"999999": p["candidates"][_cid(t)]}},
                              "not in this task"),
    "score is text": (lambda p, t: _set(p, t, "accuracy", "80"), "must be a number"),
    "score is a bool": (lambda p, t: _set(p, t, "fluency", True), "must be a number"),
    "score above 100": (lambda p, t: _set(p, t, "accuracy", 100.5), "from 0 to 100"),
    "score below 0": (lambda p, t: _set(p, t, "fluency", -1), "from 0 to 100"),
    "score NaN": (lambda p, t: _set(p, t, "accuracy", math.nan), "from 0 to 100"),
    "score inf": (lambda p, t: _set(p, t, "accuracy", math.inf), "from 0 to 100"),
    "score missing": (lambda p, t: p | {"candidates": p["candidates"] | {_cid(t): {"fluency": 5}}},
                      "accuracy is missing"),
    "unknown score key": (lambda p, t: _set(p, t, "adequacy", 5), "unknown key"),
    "spans not a list": (lambda p, t: _set(p, t, "spans", {"start": 0}), "spans must be a list"),
    "span past the end": (lambda p, t: _set(p, t, "spans", [{"start": 0, "end": 10**6, "severity": "minor"}]),
                          "inside the candidate"),
    "span start = end": (lambda p, t: _set(p, t, "spans", [{"start": 3, "end": 3, "severity": "minor"}]),
                         "non-empty range"),
    "span negative": (lambda p, t: _set(p, t, "spans", [{"start": -1, "end": 2, "severity": "major"}]),
                      "non-empty range"),
    "span float offsets": (lambda p, t: _set(p, t, "spans", [{"start": 0.0, "end": 2, "severity": "major"}]),
                           "integers"),
    "span severity": (lambda p, t: _set(p, t, "spans", [{"start": 0, "end": 2, "severity": "critical"}]),
                      "minor or major"),
    "span missing key": (lambda p, t: _set(p, t, "spans", [{"start": 0, "end": 2}]), "expected keys"),
    "too many spans": (lambda p, t: _set(p, t, "spans", [{"start": 0, "end": 1, "severity": "minor"}]
                                         * (MAX_SPANS + 1)), f"at most {MAX_SPANS}"),
    "preference missing": (lambda p, t: {"candidates": p["candidates"]}, "preference must be one of"),
    "preference null": (lambda p, t: p | {"preference": None}, "preference must be one of"),
    "preference unknown": (lambda p, t: p | {"preference": "C"}, "preference must be one of"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_every_invalid_judgement_is_refused_with_one_line(store, case):
    camp = toy_campaign(store, n_items=3)
    rater, task = first_task(store, camp)
    change, message = INVALID[case]
    with pytest.raises(InvalidJudgement, match=message) as e:
        store.submit(rater.id, task["task_id"], change(payload_for(task), task))
    assert "\n" not in str(e.value)
    assert store.judgements_count("demo") == 0
    store.submit(rater.id, task["task_id"], payload_for(task))  # the unchanged payload is accepted
    assert store.judgements_count("demo") == 1


def test_a_preference_in_a_single_system_task_is_refused(store):
    camp = toy_campaign(store, n_items=3, systems=("solo",))
    rater, task = first_task(store, camp)
    with pytest.raises(InvalidJudgement, match="takes no preference"):
        store.submit(rater.id, task["task_id"], payload_for(task) | {"preference": "A"})
    store.submit(rater.id, task["task_id"], payload_for(task) | {"preference": None})
    assert store.judgements_count("demo") == 1


def test_spans_are_counted_in_code_points(store):
    plan = CampaignPlan("emoji", "continuation", {}, [("a", "/a")], [(0, "prompt", None)],
                        [PlannedCandidate(0, 0, "né 🙂!")], [PlannedRater("rater1", "e" * 24, [PlannedTask(0, [0])])])
    store.add_campaign(plan)
    rater = store.rater("e" * 24)
    task = store.task(rater.id, 0)
    whole = [{"start": 0, "end": 5, "severity": "major"}]  # 5 code points (the emoji is one), 9 UTF-8 bytes
    store.submit(rater.id, task["task_id"], payload_for(task, spans=whole))
    with pytest.raises(InvalidJudgement):
        store.submit(rater.id, task["task_id"], payload_for(task, spans=[{"start": 0, "end": 6, "severity": "major"}]))
    assert store.judged_candidates("emoji")[0]["spans"] == whole


# ------------------------------------------------------------------------------------------------ threads
def test_threads_submit_concurrently_through_their_own_connections(tmp_path):
    """Each rater judges all their tasks on their own thread, as the server's thread pool would."""
    store = Store(tmp_path / "h.db", create=True)
    toy_campaign(store, n_items=12, raters=4)
    errors: list[BaseException] = []

    def work(name):
        try:
            rate_campaign(store, "demo", lambda *a: (50, 50), raters=[name])
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"rater{k}",)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(store._connections) == 5  # the main thread's and one per worker
    assert store.judgements_count("demo") == 4 * 14
    assert all(r["done"] == r["tasks"] == 14 for r in store.campaign("demo")["raters"])
    store.close()
    with pytest.raises(QKVError, match="closed"):
        store.campaign_names()


def test_a_snapshot_reads_one_state_while_another_thread_writes(store):
    camp = toy_campaign(store, n_items=3)
    rater, task = first_task(store, camp)
    with store.snapshot():
        assert store.judgements_count("demo") == 0
        writer = threading.Thread(target=store.submit, args=(rater.id, task["task_id"], payload_for(task)))
        writer.start()
        writer.join()  # committed on the writer's own connection while the snapshot is open
        assert store.judgements_count("demo") == 0 and store.judged_candidates("demo") == []
    assert store.judgements_count("demo") == 1


def _with_kinds(kinds: str) -> str:
    """The store's schema with the campaigns' CHECK of an older version (`kinds`: its SQL list)."""
    from qkv.humaneval import store as store_module

    old = re.sub(r"CHECK \(kind IN \([^)]*\)\)", f"CHECK (kind IN ({kinds}))", store_module._SCHEMA, count=1)
    assert old != store_module._SCHEMA
    return old


def test_a_schema_1_store_is_upgraded_when_opened(tmp_path):
    """Schema 1 named a campaign's kind after its runs' task; opening such a store renames the kinds to what the
    raters see (translate -> source-to-text, lm -> continuation) in place, judgements and all, and it stays a
    store a campaign of the new kinds can join (the old CHECK would refuse 'image-to-text')."""
    from qkv.humaneval import store as store_module

    path = tmp_path / "old.db"
    old_schema = _with_kinds("'translate', 'chat', 'lm'")
    with sqlite3.connect(path) as conn:
        conn.executescript(old_schema)
        conn.execute("INSERT INTO campaigns (name, kind, created, spec) VALUES ('mt', 'translate', 'then', '{}')")
        conn.execute("INSERT INTO campaigns (name, kind, created, spec) VALUES ('story', 'lm', 'then', '{}')")
        conn.execute("INSERT INTO systems (campaign_id, position, label, run_path) VALUES (1, 0, 'a', '/a')")
        conn.execute("PRAGMA user_version = 1")
    with Store(path) as store:
        assert {c["name"]: c["kind"] for c in store.campaigns()} == {"mt": "source-to-text", "story": "continuation"}
        store.add_campaign(CampaignPlan("pics", "image-to-text", {}, [("a", "/a")],
                                        [(0, "data:image/png;base64,x", None)],
                                        [PlannedCandidate(0, 0, "a red circle")],
                                        [PlannedRater("rater1", "p" * 24, [PlannedTask(0, [0])])]))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
        assert conn.execute("SELECT COUNT(*) FROM systems").fetchone()[0] == 2  # the old campaign's system kept


def test_a_schema_2_store_is_upgraded_in_place_and_takes_audio_campaigns(tmp_path):
    """Schema 2 had no 'audio-to-text' kind (its CHECK refuses one): opening such a store rebuilds the campaigns
    table with the new CHECK in place; its campaigns, raters, tasks and append-only judgements stay as they were,
    ids and all, and an audio-to-text campaign can join it."""
    path = tmp_path / "v2.db"
    with Store(path, create=True) as store:
        toy_campaign(store, "demo", n_items=4, raters=2)
        rate_campaign(store, "demo", lambda rater, system, item, bad: (60, 70))
        before = store.judged_candidates("demo", history=True), store.campaign("demo")
    # the store as schema 2 wrote it: its campaigns table (SQLite changes a CHECK by a new table, renamed) and
    # its version number
    old = _with_kinds("'source-to-text', 'image-to-text', 'chat', 'continuation'")
    old_table = old[old.index("CREATE TABLE"):old.index(");") + 1]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(old_table.replace("CREATE TABLE IF NOT EXISTS campaigns", "CREATE TABLE campaigns_v2"))
        conn.execute("INSERT INTO campaigns_v2 SELECT * FROM campaigns")
        conn.execute("DROP TABLE campaigns")
        conn.execute("ALTER TABLE campaigns_v2 RENAME TO campaigns")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("INSERT INTO campaigns (name, kind, created, spec) VALUES ('x', 'audio-to-text', 't', '{}')")
    conn.close()

    with Store(path) as store:  # opening it upgrades it
        assert (store.judged_candidates("demo", history=True), store.campaign("demo")) == before
        store.add_campaign(CampaignPlan("speech", "audio-to-text", {}, [("a", "/a")],
                                        [(0, "data:audio/wav;base64,UklGRg==", "zero")],
                                        [PlannedCandidate(0, 0, "zero")],
                                        [PlannedRater("rater1", "q" * 24, [PlannedTask(0, [0])])]))
        kinds = {c["name"]: c["kind"] for c in store.campaigns()}
    assert kinds == {"demo": "source-to-text", "speech": "audio-to-text"}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'campaigns'").fetchone()[0]
        assert "'audio-to-text'" in sql and "campaigns_new" not in sql
    conn.close()
