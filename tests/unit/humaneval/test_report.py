"""The report, its text, its plot and the export, on scripted campaigns judged through `Store.submit`:
system a always scored higher than b, one rater who scores at random, revisions kept as history."""

import csv
import json
import random

import pytest

from helpers import assert_picture, rate_campaign, toy_campaign
from qkv.humaneval.report import (
    EXPORT_COLUMNS,
    build_report,
    export_judgements,
    format_report,
    plot_report,
    render_plot,
)
from qkv.humaneval.store import Store

N_ITEMS = 40  # ⌈10%⌉ = 4 controls per rater: enough pairs for the QC test


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "h.db", create=True)
    yield s
    s.close()


def scripted(rater, system, item, bad):
    """a ≈ 80, b ≈ 55 (per item noise), BAD copies ≈ 15; rater3 scores everything at random."""
    rng = random.Random(f"{rater}:{system}:{item}:{bad}")
    if rater == "rater3":
        return rng.uniform(0, 100), rng.uniform(0, 100)
    base = 15 if bad else 80 if system == "a" else 55
    return min(100.0, base + rng.uniform(-8, 8)), min(100.0, base - 5 + rng.uniform(-8, 8))


@pytest.fixture
def judged(store):
    toy_campaign(store, n_items=N_ITEMS, raters=3)
    rate_campaign(store, "demo", scripted)
    return store


def test_a_clearly_better_system_wins_every_statistic(judged):
    d = build_report(judged, "demo")
    assert (d["judged"], d["tasks"], d["judgements"], d["revisions"]) == (132, 132, 132, 0)
    for criterion in ("accuracy", "fluency"):
        c = d["criteria"][criterion]
        a, b = c["systems"]["a"], c["systems"]["b"]
        assert a["n"] == b["n"] == N_ITEMS
        assert a["mean"] > b["mean"] + 10 and a["ci"][0] > b["ci"][1]  # CIs apart
        assert a["ci"][0] <= a["mean"] <= a["ci"][1]
        assert a["z_mean"] > 0 > b["z_mean"] and a["z_ci"][0] > b["z_ci"][1]
        assert c["wilcoxon"]["p"] < 1e-6 and c["wilcoxon"]["better"] == "a" and c["wilcoxon"]["n"] == N_ITEMS
        assert c["kendall"]["chrf++"]["n"] == 2 * N_ITEMS  # every regular candidate has a reference
        assert len(a["item_means"]) == len(a["item_z"]) == N_ITEMS
    # raw means by hand: the mean over items of the mean over the 3 raters' scripted scores
    by_hand = sum(sum(scripted(f"rater{k}", "a", i, False)[0] for k in (1, 2, 3)) / 3 for i in range(N_ITEMS))
    assert d["criteria"]["accuracy"]["systems"]["a"]["mean"] == pytest.approx(by_hand / N_ITEMS)
    prefs = d["preferences"]
    assert prefs["n"] == 3 * N_ITEMS and prefs["a"] > 0.75 * prefs["n"] and prefs["a"] > prefs["b"]
    assert d["errors"]["a"]["rated"] == 3 * N_ITEMS and d["errors"]["a"]["minor"] == 0
    alpha = d["criteria"]["accuracy"]["alpha"]
    assert alpha is not None and -1 < alpha < 0.9  # a random rater keeps agreement well below perfect


def test_quality_control_flags_the_random_rater(judged):
    qc = {q["rater"]: q for q in build_report(judged, "demo")["quality_control"]}
    assert qc["rater1"]["status"] == qc["rater2"]["status"] == "pass"
    assert qc["rater1"]["pairs"] == 4 and qc["rater1"]["bad_lower"] == 4
    assert qc["rater3"]["status"] == "FAIL"


def test_the_report_is_plain_json_and_deterministic(judged):
    d = build_report(judged, "demo")
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert build_report(judged, "demo") == d


def test_the_text_report(judged, tmp_path):
    text = format_report(build_report(judged, "demo"))
    assert "campaign demo: source-to-text, 2 system(s) (a, b), 40 items from toy, 3 raters" in text
    assert "judged 132 of 132 tasks" in text and "a is better" in text
    assert "preferences (non-control tasks): a " in text
    assert "Krippendorff's α (interval): accuracy " in text and "Kendall τ vs sentence chrF++" in text
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  rater")}
    assert "pass" in lines["rater1"] and "FAIL" in lines["rater3"]


def test_a_campaign_without_judgements(store, tmp_path):
    toy_campaign(store, n_items=5, raters=2)
    d = build_report(store, "demo")
    assert d["judged"] == 0 and d["judgements"] == 0
    for c in d["criteria"].values():
        assert c["alpha"] is None and c["wilcoxon"] is None and c["kendall"] is None
        assert all(s == {"n": 0, "mean": None, "ci": None, "z_mean": None, "z_ci": None, "item_means": [],
                         "item_z": []} for s in c["systems"].values())
    assert d["preferences"] == {"a": 0, "b": 0, "tie": 0, "n": 0}
    assert all(q["status"] == "untested" for q in d["quality_control"])
    json.dumps(d, allow_nan=False)
    assert "no judgements yet" in format_report(d)
    assert_picture(plot_report(d, tmp_path / "empty.png"))


def test_a_single_system_campaign_without_references(store):
    toy_campaign(store, n_items=10, systems=("solo",), references=False)
    rate_campaign(store, "demo", lambda rater, s, i, bad: (10.0 * (i % 5), 50.0))
    d = build_report(store, "demo")
    assert d["preferences"] is None and d["criteria"]["accuracy"]["wilcoxon"] is None
    assert d["criteria"]["accuracy"]["kendall"] is None
    assert d["criteria"]["accuracy"]["alpha"] == pytest.approx(1.0)  # the raters agree exactly
    assert d["criteria"]["fluency"]["alpha"] is None  # one value throughout: undefined
    assert d["criteria"]["accuracy"]["systems"]["solo"]["mean"] == pytest.approx(20.0)
    text = format_report(d)
    assert "Wilcoxon" not in text and "no references" in text


def test_the_plot(judged, tmp_path):
    d = build_report(judged, "demo")
    path = plot_report(d, tmp_path / "sub" / "plot.png")
    assert path == tmp_path / "sub" / "plot.png"
    assert_picture(path, min_size=(600, 500))
    assert render_plot(d) == path.read_bytes()  # the bytes the server can send without a file


def test_the_plot_draws_an_interval_that_excludes_the_mean(judged):
    """A BCa interval of skewed scores (a short run's many zeros) can lie beside the mean: the plot draws it
    anyway (it used to raise, and the admin page's plot was a 500)."""
    d = build_report(judged, "demo")
    v = d["criteria"]["accuracy"]["systems"][d["systems"][0]]
    v["ci"] = [v["mean"] + 1.0, v["mean"] + 5.0]
    assert render_plot(d)[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_has_every_judged_candidate_with_history(judged, tmp_path):
    camp = judged.campaign("demo")
    rater = judged.rater(camp["raters"][0]["token"])
    task = judged.task(rater.id, 0)
    revised = {"candidates": {str(c["id"]): {"accuracy": 1, "fluency": 2, "spans": [
        {"start": 0, "end": 1, "severity": "major"}]} for c in task["candidates"]}, "preference": "tie"}
    judged.submit(rater.id, task["task_id"], revised)
    paths = export_judgements(judged, "demo", tmp_path / "out")
    assert [p.name for p in paths] == ["demo-judgements.csv", "demo-judgements.jsonl"]
    n = 2 * (132 + 1)  # two candidates per judgement, the revision included
    with open(paths[0], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    jsonl = [json.loads(line) for line in paths[1].read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(jsonl) == n and tuple(rows[0]) == EXPORT_COLUMNS
    task_rows = [j for j in jsonl if j["rater"] == "rater1" and j["task_position"] == 0]
    assert [j["latest"] for j in task_rows] == [False, False, True, True]
    assert task_rows[-1]["spans"] == [{"start": 0, "end": 1, "severity": "major"}]
    assert task_rows[-1]["preference"] == "tie" and task_rows[0]["preference"] in ("a", "b")
    assert sum(j["control"] for j in jsonl) == 2 * 3 * 4 and sum(j["bad"] for j in jsonl) == 3 * 4
    csv_last = [r for r in rows if r["judgement_id"] == str(task_rows[-1]["judgement_id"])]
    assert json.loads(csv_last[0]["spans"]) == task_rows[-1]["spans"] and csv_last[0]["latest"] == "True"
    # the report counts only the latest judgement: the revision replaced the first, the history stays
    d = build_report(judged, "demo")
    assert (d["judged"], d["judgements"], d["revisions"]) == (132, 133, 1)


def test_export_rows_say_where_each_candidate_was_shown_and_which_it_was(store, tmp_path):
    """Every row, in CSV and JSONL, has the slot its candidate was shown in (A/B; A when a task shows one) and
    the candidate's id, so a row can be traced back to the screen the rater saw; the older columns stay."""
    toy_campaign(store, n_items=10, raters=2)
    toy_campaign(store, "solo", n_items=10, systems=("x",), raters=1)
    for name in ("demo", "solo"):
        rate_campaign(store, name, lambda rater, system, item, bad: (20.0 if bad else 70.0, 60.0))
        shown = {(t["rater"], t["position"]): t["candidate_ids"] for t in store.tasks(name)}  # display order
        bad_ids = {c["id"] for c in store.candidates(name) if c["bad_of"] is not None}
        csv_path, jsonl_path = export_judgements(store, name, tmp_path / name)
        with open(csv_path, encoding="utf-8", newline="") as f:
            records = list(csv.DictReader(f))
        jsonl = [json.loads(line) for line in jsonl_path.read_text(encoding="utf-8").splitlines()]
        assert records and len(records) == len(jsonl)
        assert EXPORT_COLUMNS[:17] == ("campaign", "judgement_id", "created", "rater", "task_position", "item",
                                       "system", "control", "bad", "source", "reference", "candidate", "accuracy",
                                       "fluency", "spans", "preference", "latest")
        assert tuple(records[0]) == tuple(jsonl[0]) == EXPORT_COLUMNS
        assert {"slot", "candidate_id"} <= set(EXPORT_COLUMNS)
        for row, record in zip(jsonl, records, strict=True):
            ids = shown[row["rater"], row["task_position"]]
            assert row["candidate_id"] == ids["AB".index(row["slot"])]
            assert row["bad"] == (row["candidate_id"] in bad_ids)
            assert (record["slot"], record["candidate_id"]) == (row["slot"], str(row["candidate_id"]))
        slots = {row["slot"] for row in jsonl}
        assert slots == ({"A", "B"} if name == "demo" else {"A"})
