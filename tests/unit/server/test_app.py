"""The app's own answers on a real socket: uvicorn on 127.0.0.1 in a thread (`serve_fixtures.LiveServer`), no
runs, a toy human-evaluation store; what FastAPI's in-process test client cannot show (a chunked body)."""

import json

import pytest

from helpers import toy_campaign
from qkv.humaneval.store import Store
from qkv.server import ServeConfig, create_app
from serve_fixtures import LiveServer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
LIMIT = 1024


@pytest.fixture
def server(tmp_path):
    db = tmp_path / "he.db"
    with Store(db, create=True) as store:
        token = toy_campaign(store, "demo", n_items=4, raters=1)["raters"][0]["token"]
    with LiveServer(create_app({}, ServeConfig(db=db, max_body_bytes=LIMIT))) as url:
        yield url, token


def chunks(body: bytes, size: int = 256):
    """A generator body: httpx sends it with Transfer-Encoding: chunked and no Content-Length."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_a_chunked_body_over_the_limit_is_a_json_413(server):
    """Without a Content-Length the limit is found while the handler reads the body; FastAPI used to turn
    that into its own 400 ("There was an error parsing the body")."""
    url, token = server
    with httpx.Client(base_url=url, timeout=10) as client:
        task = client.get(f"/api/rate/{token}/tasks/0").json()
        payload = {"candidates": {str(c["id"]): {"accuracy": 50, "fluency": 50, "spans": []}
                                  for c in task["candidates"]}, "preference": "A"}
        big = httpx.Request("POST", f"{url}/api/rate/{token}/tasks/{task['task_id']}",
                            content=chunks(b'{"pad": "' + b"x" * 4 * LIMIT + b'"}'),
                            headers={"content-type": "application/json"})
        assert big.headers["transfer-encoding"] == "chunked" and "content-length" not in big.headers
        r = client.send(big)
        assert r.status_code == 413, r.text
        assert r.json() == {"error": f"the request body is over the {LIMIT:,}-byte limit"}
        # a chunked body under the limit is read as before; the same client goes on
        r = client.post(f"/api/rate/{token}/tasks/{task['task_id']}", content=chunks(json.dumps(payload).encode()),
                        headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert client.get(f"/api/rate/{token}").json()["done"] == 1
        # and a Content-Length over the limit is refused before any byte is read, as it was
        r = client.post(f"/api/rate/{token}/tasks/{task['task_id']}", content=b"x" * (LIMIT + 1),
                        headers={"content-type": "application/json"})
        assert r.status_code == 413 and "error" in r.json()
