"""The rater and admin API through FastAPI's test client, on a toy campaign (no runs): a rater sees and writes
only their own items, a judgement is acknowledged after its commit and read back, bad judgements are JSON 4xx,
and reports and exports need the admin token."""

import json

import pytest

from helpers import rate_campaign, toy_campaign
from qkv.humaneval.store import Store
from qkv.server import ServeConfig, create_app

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

ADMIN = "k" * 32


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "he.db"
    with Store(path, create=True) as store:
        toy_campaign(store, "demo", n_items=8, raters=2)
        toy_campaign(store, "other", n_items=4, systems=("x",), raters=1)
    return path


@pytest.fixture
def client(store_path):
    return TestClient(create_app({}, ServeConfig(db=store_path, admin_token=ADMIN)))


def tokens(store_path, name):
    with Store(store_path) as store:
        return [r["token"] for r in store.campaign(name)["raters"]]


def judgement(task, accuracy=70, fluency=80, preference="A", spans=()):
    return {"candidates": {str(c["id"]): {"accuracy": accuracy, "fluency": fluency, "spans": list(spans)}
                           for c in task["candidates"]}, "preference": preference}


def test_a_rater_rates_their_items_and_comes_back_to_them(client, store_path):
    token = tokens(store_path, "demo")[0]
    page = client.get(f"/rate/{token}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["referrer-policy"] == "no-referrer"
    status = client.get(f"/api/rate/{token}").json()
    assert status["campaign"] == "demo" and status["pairwise"] is True and status["done"] == 0 and status["next"] == 0
    task = client.get(f"/api/rate/{token}/tasks/0").json()
    assert [c["slot"] for c in task["candidates"]] == ["A", "B"]
    assert "system" not in json.dumps(task) and task["judgement"] is None  # no system names, no control flag
    text = task["candidates"][0]["text"]
    body = judgement(task, spans=[{"start": 0, "end": min(3, len(text)), "severity": "minor"}])
    r = client.post(f"/api/rate/{token}/tasks/{task['task_id']}", json=body)
    assert r.status_code == 200 and r.json()["done"] == 1 and r.json()["next"] == 1
    again = client.get(f"/api/rate/{token}/tasks/0").json()
    assert again["judgement"]["candidates"][str(task["candidates"][0]["id"])]["spans"][0]["severity"] == "minor"
    # a changed score is a new row; the latest counts and the history is kept
    r = client.post(f"/api/rate/{token}/tasks/{task['task_id']}", json=judgement(task, accuracy=10, preference="B"))
    assert r.status_code == 200 and r.json()["done"] == 1
    latest = client.get(f"/api/rate/{token}/tasks/0").json()["judgement"]
    assert latest["preference"] == "B" and {c["accuracy"] for c in latest["candidates"].values()} == {10}
    with Store(store_path) as store:
        assert store.judgements_count("demo") == 2


def test_a_rater_cannot_touch_another_raters_or_campaigns_items(client, store_path):
    mine, theirs = tokens(store_path, "demo")
    (other,) = tokens(store_path, "other")
    their_task = client.get(f"/api/rate/{theirs}/tasks/0").json()
    other_task = client.get(f"/api/rate/{other}/tasks/0").json()
    for task in (their_task, other_task):
        r = client.post(f"/api/rate/{mine}/tasks/{task['task_id']}", json=judgement(task))
        assert r.status_code == 404 and "error" in r.json()
    assert client.get(f"/api/rate/{mine}").json()["done"] == 0
    assert client.get(f"/api/rate/{theirs}").json()["done"] == 0
    for bad in ("x" * 30, "short", "../../etc"):
        assert client.get(f"/api/rate/{bad}").status_code == 404
    assert client.get(f"/api/rate/{mine}/tasks/999").status_code == 404


def test_a_path_number_sqlite_cannot_hold_is_a_json_404(client, store_path):
    """Positions and task ids go to SQLite, whose INTEGER is 64-bit: a bigger number in a rater link used to be a
    500 (OverflowError) with two tracebacks in the log."""
    token = tokens(store_path, "demo")[0]
    task = client.get(f"/api/rate/{token}/tasks/0").json()
    for n in ("99999999999999999999999", str(2**63), str(2**63 - 1), "-1", str(-(2**63) - 1)):
        for r in (client.get(f"/api/rate/{token}/tasks/{n}"),
                  client.post(f"/api/rate/{token}/tasks/{n}", json=judgement(task))):
            assert r.status_code == 404, (n, r.text)
            assert "rater" in r.json()["error"] and "\n" not in r.json()["error"]
    assert client.get(f"/api/rate/{token}").json()["done"] == 0


@pytest.mark.parametrize(("change", "needle"), [
    (lambda b, t: b["candidates"][str(t["candidates"][0]["id"])].update(accuracy=101), "0"),
    (lambda b, t: b["candidates"][str(t["candidates"][0]["id"])].update(fluency=-1), "0"),
    (lambda b, t: b["candidates"][str(t["candidates"][0]["id"])].update(accuracy="high"), "number"),
    (lambda b, t: b["candidates"][str(t["candidates"][0]["id"])].update(
        spans=[{"start": 0, "end": 10_000, "severity": "minor"}]), "span"),
    (lambda b, t: b["candidates"][str(t["candidates"][0]["id"])].update(
        spans=[{"start": 0, "end": 1, "severity": "fatal"}]), "severity"),
    (lambda b, t: b.update(preference=None), "preference"),
    (lambda b, t: b["candidates"].pop(str(t["candidates"][1]["id"])), "candidate"),
    (lambda b, t: b.update(extra=1), "extra"),
])
def test_bad_judgements_are_a_json_422_and_store_nothing(client, store_path, change, needle):
    token = tokens(store_path, "demo")[0]
    task = client.get(f"/api/rate/{token}/tasks/0").json()
    body = judgement(task)
    change(body, task)
    r = client.post(f"/api/rate/{token}/tasks/{task['task_id']}", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"] and "\n" not in r.json()["error"]
    with Store(store_path) as store:
        assert store.judgements_count("demo") == 0
    r = client.post(f"/api/rate/{token}/tasks/{task['task_id']}", content=b"[1, 2",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_reports_and_exports_need_the_admin_token(client, store_path):
    for path in ("/api/admin/campaigns", "/api/admin/campaigns/demo/report", "/api/admin/campaigns/demo/plot.png",
                 "/api/admin/campaigns/demo/export.csv"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    auth = {"Authorization": f"Bearer {ADMIN}"}
    names = [c["name"] for c in client.get("/api/admin/campaigns", headers=auth).json()]
    assert names == ["demo", "other"]
    assert client.get("/api/admin/campaigns/nope/report", headers=auth).status_code == 404
    assert client.get("/api/admin/campaigns/demo/export.xml", headers=auth).status_code == 404


def test_the_report_follows_the_judgements(client, store_path):
    auth = {"Authorization": f"Bearer {ADMIN}"}
    before = client.get("/api/admin/campaigns/demo/report", headers=auth).json()
    assert before["judged"] == 0
    with Store(store_path) as store:  # system a always scored 80, b 40, BAD copies 5
        rate_campaign(store, "demo", lambda rater, system, item, bad: (5, 5) if bad else
                      ((80, 80) if system == "a" else (40, 40)))
    after = client.get("/api/admin/campaigns/demo/report", headers=auth).json()
    acc = after["criteria"]["accuracy"]["systems"]
    assert after["judged"] == after["tasks"] and acc["a"]["mean"] == 80 and acc["b"]["mean"] == 40
    assert after["preferences"]["a"] == after["preferences"]["n"] > 0
    png = client.get("/api/admin/campaigns/demo/plot.png", headers=auth)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    csv = client.get("/api/admin/campaigns/demo/export.csv", headers=auth)
    assert csv.status_code == 200 and csv.text.splitlines()[0].startswith("campaign,judgement_id")
    rows = client.get("/api/admin/campaigns/demo/export.jsonl", headers=auth).text.splitlines()
    assert len(rows) == len(csv.text.splitlines()) - 1 == 2 * after["judgements"]  # two candidates per judgement


def test_no_store_no_rating_pages():
    client = TestClient(create_app({}, ServeConfig()))
    r = client.get("/api/rate/" + "x" * 24)
    assert r.status_code == 404 and "--db" in r.json()["error"]
