"""`qkv serve` on a chat pipeline's folder (tests/serve_fixtures.py `make_pipeline`): its stages load in stage order,
the tokenizer folder and a stage still training are left out quietly, each run knows its stage, and ``/chat`` opens
the pipeline's final run."""

import json

import pytest

from qkv.errors import QKVError
from qkv.server import ServeConfig, create_app, load_runs
from qkv.server.served import default_chat_run, find_runs, find_stages
from serve_fixtures import make_pipeline

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def pipelines(tiny_runs, tmp_path_factory):
    """Two pipeline folders: every stage finished; and one whose rl stage is still training."""
    root = tmp_path_factory.mktemp("pipelines")
    lm, chat = tiny_runs["lm"], tiny_runs["chat"]
    return {"done": make_pipeline(root / "done", {"base": lm, "sft": chat, "rl": chat}),
            "training": make_pipeline(root / "training", {"base": lm, "sft": chat, "rl": None})}


def test_the_stages_are_found_in_stage_order_without_the_tokenizer(pipelines):
    out = pipelines["done"]
    assert find_runs([out]) == [out / "base", out / "sft", out / "rl"]  # stage order, not sorted (rl < sft)
    stages = {p.name: s for p, s in find_stages([out])}
    assert {n: (s.name, s.final, s.is_final) for n, s in stages.items()} == {
        "base": ("base", "rl", False), "sft": ("sft", "rl", False), "rl": ("rl", "rl", True)}


def test_a_stage_still_training_is_left_out_quietly(pipelines):
    out = pipelines["training"]
    assert (out / "rl" / "config.json").is_file() and (out / "tokenizer" / "tokenizer.json").is_file()
    assert find_runs([out]) == [out / "base", out / "sft"]


def test_a_pipeline_with_no_finished_stage_is_one_line(tmp_path, tiny_runs):
    out = make_pipeline(tmp_path / "new", {"base": tiny_runs["lm"]}, final=None)
    (out / "base" / "model.safetensors").unlink()  # the base stage has only begun
    with pytest.raises(QKVError, match="a pipeline with no finished stage yet") as e:
        find_runs([out])
    assert "\n" not in str(e.value)


def test_an_unreadable_pipeline_json_leaves_a_folder_of_runs(tmp_path, pipelines):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(pipelines["done"], out)
    (out / "pipeline.json").write_text("{not json", encoding="utf-8")
    assert find_runs([out]) == [out / "base", out / "rl", out / "sft"]  # sorted, as any folder of runs
    assert all(s is None for _, s in find_stages([out]))


def test_the_chat_page_opens_the_final_run_and_each_run_knows_its_pipeline(pipelines):
    served = load_runs([pipelines["done"]])
    assert list(served) == ["base", "sft", "rl"] and default_chat_run(served) == "rl"
    client = TestClient(create_app(served, ServeConfig()))
    r = client.get("/chat", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/runs/rl/chat"
    assert client.get("/chat").status_code == 200  # the page itself
    described = {d["name"]: d for d in client.get("/api/runs").json()}
    assert described["base"]["pipeline"] == {"folder": str(pipelines["done"]), "stage": "base", "final": "rl",
                                             "runs": ["base", "sft", "rl"]}
    assert "chat" not in described["base"]["capabilities"] and "chat" in described["rl"]["capabilities"]


def test_without_its_final_run_the_chat_page_opens_the_first_that_chats(pipelines, tiny_runs):
    served = load_runs([pipelines["training"]])
    assert default_chat_run(served) == "sft"
    client = TestClient(create_app(served, ServeConfig()))
    assert client.get("/api/runs/sft").json()["pipeline"]["final"] is None
    assert client.get("/chat", follow_redirects=False).headers["location"] == "/runs/sft/chat"
    # runs outside any pipeline: as before, no pipeline; /chat opens the first run that chats, or is a JSON 404
    plain = load_runs([tiny_runs["lm"], tiny_runs["chat"]])
    assert default_chat_run(plain) == "chat" and all(s.stage is None for s in plain.values())
    lm_only = TestClient(create_app(load_runs([tiny_runs["lm"]]), ServeConfig()))
    r = lm_only.get("/chat")
    assert r.status_code == 404 and r.json() == {"error": "no run on this server can chat"}
    assert lm_only.get("/api/runs/lm").json()["pipeline"] is None


def test_the_final_stage_is_read_from_pipeline_json(tmp_path, tiny_runs):
    out = make_pipeline(tmp_path / "p", {"base": tiny_runs["lm"], "sft": tiny_runs["chat"]}, final="sft")
    meta = json.loads((out / "pipeline.json").read_text())
    assert [s["name"] for s in meta["stages"]] == ["tokenizer", "base", "sft"]
    assert default_chat_run(load_runs([out])) == "sft"
