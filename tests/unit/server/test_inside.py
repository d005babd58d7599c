"""The "Look inside" API: `qkv explain` over HTTP gives the same numbers as the Python call, draws its pictures
as PNGs, and answers a topic that does not apply, a bad layer or an unknown topic with a JSON 4xx."""

import base64

import pytest

from qkv.explain import TOPICS, explain
from qkv.server import ServeConfig, create_app, load_runs

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def served(tiny_runs):
    return load_runs(list(tiny_runs.values()))


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served, ServeConfig()))


def test_topics_come_in_lesson_order_with_what_they_need(client):
    topics = client.get("/api/explain/topics").json()
    assert [t["name"] for t in topics] == list(TOPICS)
    assert next(t for t in topics if t["name"] == "alignment")["needs"] == ["text-source"]
    assert next(t for t in topics if t["name"] == "qkv")["needs"] == ["token-input", "source-to-text"]


def test_a_topic_over_http_has_the_numbers_of_the_python_call(client, served):
    r = client.post("/api/runs/lm/explain/tokens", json={"text": "<img src", "pictures": False})
    assert r.status_code == 200, r.text
    got = r.json()
    want = explain("tokens", served["lm"].run, text="<img src").to_json()
    assert got["blocks"] == want["blocks"] and got["data"] == want["data"]
    assert got["pictures"] == []


def test_pictures_are_png_data_urls(client):
    r = client.post("/api/runs/translate/explain/alignment", json={"src": "drei eins"})
    assert r.status_code == 200, r.text
    assert r.json()["pictures"]
    for p in r.json()["pictures"]:
        assert base64.b64decode(p["url"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/runs/lm/explain/alignment", {}, 404, "needs a run that reads its source as text (translation)"),
    ("/api/runs/lm/explain/nonsense", {}, 404, "unknown topic"),
    ("/api/runs/nobody/explain/tokens", {}, 404, "no run named"),
    ("/api/runs/lm/explain/tokens", {"text": "Zebra"}, 400, "not in the"),
    ("/api/runs/lm/explain/tokens", {"text": "<", "layer": 999}, 422, "layer"),
    ("/api/runs/lm/explain/tokens", {"txt": "<"}, 422, "txt"),
])
def test_bad_requests_are_one_line_json_errors(client, path, body, status, words):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err and "\n" not in err
