"""The playground's API, through FastAPI's test client, on one tiny trained run of each task: every answer
equals what the run's own Python calls give, and every bad request is a JSON 4xx (never a 500)."""

import base64
import io
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from qkv.evaluation.attention import gpt_attention
from qkv.evaluation.params import parameter_groups, report_for_model
from qkv.server import ServeConfig, create_app, load_runs

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def served(tiny_runs):
    return load_runs(list(tiny_runs.values()))


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served, ServeConfig(admin_token="a" * 32)))


def sse(client, path, body) -> list[tuple[str, dict]]:
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = []
    for chunk in text.split("\n\n"):
        lines = [x for x in chunk.split("\n") if x and not x.startswith(":")]
        if lines:
            name = lines[0].removeprefix("event: ")
            events.append((name, json.loads("".join(x.removeprefix("data: ") for x in lines[1:]))))
    return events


def png(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


# ------------------------------------------------------------------------------------------------ runs
def test_runs_list_their_task_and_pages(client):
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert {n: r["pages"] for n, r in runs.items()} == {
        "lm": ["generate", "attention", "params", "explain"],
        "chat": ["chat", "generate", "attention", "params", "explain"],
        "translate": ["translate", "attention", "params", "explain"], "digits": ["images", "params", "explain"]}
    assert runs["digits"]["conditioning"] == "class" and runs["digits"]["n_classes"] == 10
    page = client.get("/runs/translate/translate")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert client.get("/runs/translate/generate").json() == {
        "error": "translate has no generate page; its pages are translate, attention, params, explain"}
    assert client.get("/runs/nope/generate").status_code == 404


def test_the_api_docs_work_offline(client):
    """FastAPI's OpenAPI page, with Swagger UI served by this server (no CDN) and only its own inline script
    allowed (by hash)."""
    page = client.get("/docs")
    assert page.status_code == 200
    srcs = [line for line in page.text.splitlines() if "src=" in line or "href=" in line]
    assert srcs and all("http" not in line for line in srcs), srcs  # every asset is local
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    csp = page.headers["content-security-policy"]
    assert "'sha256-" in csp and "unsafe-inline" not in csp
    spec = client.get("/openapi.json").json()
    assert {"/api/runs/{name}/generate", "/api/rate/{token}", "/api/admin/campaigns"} <= set(spec["paths"])


def test_params_count_every_parameter(client, served):
    gpt = client.get("/api/runs/lm/params").json()
    assert gpt["kind"] == "gpt" and gpt["total"] == report_for_model(served["lm"].run.model).total
    for name in ("translate", "digits"):
        got = client.get(f"/api/runs/{name}/params").json()
        model = served[name].run.model
        assert got["kind"] == "groups" and got["total"] == sum(p.numel() for p in model.parameters())
        assert sum(g["count"] for g in got["groups"]) == got["total"]
        rows, _ = parameter_groups(model)
        assert [g["name"] for g in got["groups"]] == [r.name for r in rows]


# ------------------------------------------------------------------------------------------------ text
def test_generate_streams_the_runs_own_text_with_the_top_tokens(client, served):
    run = served["lm"].run
    body = {"prompt": "<", "temperature": 0.9, "top_k": 8, "seed": 7, "max_new_tokens": 30}
    events = sse(client, "/api/runs/lm/generate", body)
    tokens = [d for e, d in events if e == "token"]
    done = [d for e, d in events if e == "done"]
    assert len(done) == 1 and done[0]["tokens"] == 30 and done[0]["reason"] == "length"
    expected = run.generate("<", run.sampling(temperature=0.9, top_k=8, seed=7, max_new_tokens=30))
    assert "".join(t["text"] for t in tokens) == expected
    for t in tokens:
        if t["id"] is None:
            continue
        ps = [p for _, _, p, _ in t["top"]]
        assert len(t["top"]) == 5 and ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6
        assert sum(q for *_, q in t["top"]) <= 1 + 1e-6


def test_greedy_tokens_take_all_the_sampling_mass(client):
    tokens = [d for e, d in sse(client, "/api/runs/lm/generate",
                                {"prompt": "<", "temperature": 0, "max_new_tokens": 10}) if e == "token"]
    for t in tokens:
        top_id, _, _, q = t["top"][0]
        assert top_id == t["id"] and q == 1.0  # greedy: the argmax, drawn with probability 1


def test_a_stop_string_ends_the_stream_before_it(client, served):
    full = served["lm"].run.generate("<", served["lm"].run.sampling(temperature=0, max_new_tokens=30))
    assert "=" in full
    events = sse(client, "/api/runs/lm/generate", {"prompt": "<", "temperature": 0, "max_new_tokens": 30,
                                                   "stop": ["="]})
    text = "".join(d["text"] for e, d in events if e == "token")
    assert text == full[: full.index("=")] and events[-1][1]["reason"] == "stop"


def test_chat_replies_like_the_runs_session(client, served):
    run = served["chat"].run
    body = {"messages": [{"role": "user", "content": "What is 2 + 2?"}], "temperature": 0}
    events = sse(client, "/api/runs/chat/chat", body)
    reply = "".join(d["text"] for e, d in events if e == "token")
    session = run.chat(run.sampling(temperature=0))
    assert reply == "".join(session.reply("What is 2 + 2?"))
    assert events[-1][0] == "done" and events[-1][1]["reason"] == "end" and events[-1][1]["trimmed"] == 0
    # a follow-up carries the history; a long one drops the oldest exchanges and says so
    history = [{"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "blue"}] * 4
    events = sse(client, "/api/runs/chat/chat", {"messages": history + [body["messages"][0]], "temperature": 0})
    assert events[-1][1]["trimmed"] >= 1


def test_translate_gives_the_n_best_and_the_attention_of_the_best(client, served):
    run = served["translate"].run
    text = "die eins zwei drei ."
    r = client.post("/api/runs/translate/translate", json={"text": text, "beam": 4, "n_best": 3}).json()
    assert 1 <= len(r["nbest"]) <= 3
    assert r["nbest"][0]["text"] == run.translate([text], run.decoding(beam=4))[0][0]
    scores = [h["score"] for h in r["nbest"]]
    assert scores == sorted(scores, reverse=True)
    a = r["attention"]
    w = torch.tensor(a["weights"])  # (L, H, rows, cols)
    assert w.shape == (2, 2, len(a["rows"]), len(a["cols"])) and a["kind"] == "cross-attention"
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:3]), atol=1e-3)
    greedy = client.post("/api/runs/translate/translate", json={"text": text, "beam": 1}).json()
    assert len(greedy["nbest"]) == 1 and greedy["nbest"][0]["score"] is None
    assert greedy["nbest"][0]["text"] == run.translate([text], run.decoding(beam=1))[0][0]


def test_attention_is_every_layer_and_head_of_the_gpt(client, served):
    run = served["lm"].run
    a = client.post("/api/runs/lm/attention", json={"text": "<img src"}).json()
    w = torch.tensor(a["weights"])
    want = gpt_attention(run.model, run.tokenizer, "<img src").weights
    assert w.shape == want.shape == (2, 2, 8, 8)
    assert torch.allclose(w, want, atol=1e-4)
    assert torch.all(w.triu(diagonal=1) == 0)  # causal: nothing above the diagonal


# ------------------------------------------------------------------------------------------------ images
def test_images_and_the_reverse_process(client, served):
    r = client.post("/api/runs/digits/images", json={"label": 3, "n": 2, "steps": 10, "frames": 5, "seed": 1}).json()
    imgs = [png(u) for u in r["images"]]
    assert len(imgs) == 2 and all(im.size == (8, 8) for im in imgs)
    assert [f["t"] for f in r["strip"]][0] == 100 and r["strip"][-1]["t"] == -1 and len(r["strip"]) == 5
    # the strip ends on the first image itself
    assert np.array_equal(np.asarray(png(r["strip"][-1]["image"])), np.asarray(imgs[0]))
    run = served["digits"].run
    want = run.sample(2, label=3, settings=run.image_sampling(steps=10, seed=1))
    got = torch.tensor(np.stack([np.asarray(im) for im in imgs]), dtype=torch.float32).view(2, 1, 8, 8)
    assert torch.allclose(got, ((want.clamp(-1, 1) + 1) * 127.5).round(), atol=1)


def test_the_forward_process_noises_a_real_image(client):
    r = client.post("/api/runs/digits/noise", json={"t": [0, 50, 99], "seed": 3}).json()
    alphas = [f["alpha_bar"] for f in r["frames"]]
    assert [f["t"] for f in r["frames"]] == [0, 50, 99] and alphas == sorted(alphas, reverse=True)
    assert 0.99 < alphas[0] <= 1 and alphas[-1] < 0.1
    again = client.post("/api/runs/digits/noise", json={"t": [0, 50, 99], "seed": 3}).json()
    assert again == r  # one seed, one image, one ε


# ------------------------------------------------------------------------------------------------ bad requests
BAD = [
    ("/api/runs/lm/generate", {"prompt": "<", "max_new_tokens": 5000}, 422, "max_new_tokens: at most 1024"),
    ("/api/runs/lm/generate", {"prompt": "<", "bogus": 1}, 422, "bogus: Extra inputs are not permitted"),
    ("/api/runs/lm/generate", {"prompt": "<" * 100}, 422, "over the model's context of 48"),
    ("/api/runs/lm/generate", {"prompt": ""}, 422, "prompt: String should have at least 1 character"),
    ("/api/runs/lm/generate", {"prompt": "é"}, 422, "not in the"),
    ("/api/runs/lm/generate", {"prompt": "<", "temperature": -1}, 422, "temperature"),
    ("/api/runs/lm/generate", {"prompt": "<", "top_p": 1.5}, 422, "top_p"),
    ("/api/runs/lm/generate", {"prompt": "<", "stop": [""]}, 422, "stop string"),
    ("/api/runs/nope/generate", {"prompt": "x"}, 404, "no run named 'nope'"),
    ("/api/runs/lm/translate", {"text": "x"}, 404, "needs a run that turns a source into text"),
    ("/api/runs/lm/to-text", {"text": "x"}, 404, "(source-to-text); lm is an lm run"),
    ("/api/runs/translate/to-text", {"image": "data:image/png;base64,AAAA"}, 422, "reads sentences; give text"),
    ("/api/runs/translate/to-text", {"text": "x", "image": "data:image/png;base64,AAAA"}, 422, "give one source"),
    ("/api/runs/digits/attention", {"text": "x"}, 404, "(self-attention)"),
    ("/api/runs/translate/translate", {"text": "die " * 60}, 422, "over the model's context of 48"),
    ("/api/runs/translate/translate", {"text": "die", "beam": 0}, 422, "beam"),
    ("/api/runs/chat/chat", {"messages": [{"role": "assistant", "content": "x"}]}, 422, "must alternate"),
    ("/api/runs/chat/chat", {"messages": []}, 422, "messages"),
    ("/api/runs/chat/chat", {"messages": [{"role": "user", "content": "What " * 30}]}, 400, "too long"),
    ("/api/runs/lm/attention", {"text": "<" * 60}, 422, "over the model's context"),
    ("/api/runs/digits/images", {"label": 99}, 422, "label 99 is outside the trained classes"),
    ("/api/runs/digits/images", {"n": 99}, 422, "at most 16 images"),
    ("/api/runs/digits/images", {"prompt": "a red circle"}, 422, "give a label, not a prompt"),
    ("/api/runs/digits/images", {"steps": 1000}, 422, "at most the run's 100 timesteps"),
    ("/api/runs/digits/noise", {"t": [100]}, 422, "timesteps must be in [0, 99]"),
    ("/api/runs/digits/noise", {"index": 10**9}, 422, "out of range"),
]


@pytest.mark.parametrize(("path", "body", "status", "needle"), BAD, ids=[f"{p.split('/')[-1]}-{i}" for i, (p, *_)
                                                                         in enumerate(BAD)])
def test_bad_requests_get_a_json_4xx_line(client, path, body, status, needle):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err and "\n" not in err


def test_malformed_and_oversized_bodies(client):
    r = client.post("/api/runs/lm/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = client.post("/api/runs/lm/generate", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json() == {"error": "the request body is over the 65,536-byte limit"}


def test_a_full_queue_answers_429_with_retry_after(tiny_runs):
    runs = load_runs([tiny_runs["lm"]], queue_size=1)
    client = TestClient(create_app(runs, ServeConfig(queue_size=1)))
    worker, release = runs["lm"].worker, threading.Event()
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        worker.submit(lambda job: release.wait(10), loop)  # running
        while not worker.busy:
            pass
        worker.submit(lambda job: None, loop)  # waiting: the queue (size 1) is full
        r = client.post("/api/runs/lm/attention", json={"text": "<img"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
    finally:
        release.set()
        loop.close()
