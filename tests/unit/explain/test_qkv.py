"""`qkv explain qkv`: one head step by step, recomputed from the printed parts to the module's output (≤ 1e-5)."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.explain import explain
from qkv.models.gpt import GPT

TEXT = {"lm": "<img src=x>", "chat": "What is 2?", "translate": "die drei eins vier ."}


def _explain(run, name, **opts):
    return explain("qkv", run, text=TEXT[name], src=TEXT[name], **opts)


@pytest.mark.parametrize("name", ["lm", "chat", "translate"])
def test_the_head_recomputes_the_module(runs, name):
    e = _explain(runs[name], name)
    assert len(e.checks) == 3 and all(c.ok for c in e.checks), e.format_text()
    assert e.data["layer"] == 0 and e.data["head"] == 0
    assert e.data["causal"] == (name != "translate")
    weights = next(b for b in e.blocks if b.kind == "tensor" and b.name.startswith("weights"))
    assert torch.allclose(weights.value.sum(dim=-1), torch.ones(len(e.data["tokens"])), atol=1e-6)
    if name != "translate":  # the causal mask: nothing above the diagonal
        assert weights.value.triu(diagonal=1).abs().max() == 0


def test_the_weights_are_the_models_own_attention_map(runs):
    from qkv.evaluation.attention import gpt_attention

    run = runs["lm"]
    e = _explain(run, "lm", layer=1, head=1)
    stack = gpt_attention(run.model, run.tokenizer, TEXT["lm"])
    weights = next(b for b in e.blocks if b.kind == "tensor" and b.name.startswith("weights")).value
    assert (weights - stack.weights[1, 1]).abs().max() <= 1e-6
    assert e.data["layer"] == 1 and e.data["head"] == 1
    assert _explain(run, "lm", layer=-1, head=-1).data["head"] == 1


def _rope_run(run):
    rope = copy.copy(run)
    rope.model = GPT(replace(run.model.config, pos_encoding="rope")).eval()
    return rope


def test_rope_rotates_q_and_k_with_the_real_functions(runs):
    e = _explain(_rope_run(runs["lm"]), "lm", layer=1)
    assert e.data["rope"] and "uses RoPE" in e.format_text()
    assert all(c.ok for c in e.checks), e.format_text()
    names = [b.name for b in e.blocks if b.kind == "tensor"]
    assert "Q rotated" in names and "K rotated" in names
    assert not _explain(runs["lm"], "lm").data["rope"]


def test_the_checks_can_fail(runs, monkeypatch):
    import qkv.explain.qkv as topic

    monkeypatch.setattr(topic, "apply_rope", lambda x, cos, sin: x)  # forget the rotation
    e = _explain(_rope_run(runs["lm"]), "lm")
    assert not e.checks[1].ok and not e.checks[2].ok and "MISMATCH" in e.format_text()
    monkeypatch.undo()
    monkeypatch.setattr(topic, "causal_mask", lambda tq, tk, device=None: torch.ones(tq, tk, dtype=torch.bool))
    e = _explain(runs["lm"], "lm")  # no mask: the future leaks in
    assert e.checks[0].ok and not e.checks[1].ok and not e.checks[2].ok


def test_wrong_run_and_out_of_range_are_one_line_errors(runs):
    for kwargs, words in (({"layer": 2}, "layer 2 is out of range"), ({"head": 2}, "head 2 is out of range"),
                          ({"layer": -3}, "layer -3 is out of range")):
        with pytest.raises(QKVError, match=words) as err:
            _explain(runs["lm"], "lm", **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(QKVError, match="explain qkv needs") as err:
        explain("qkv", runs["digits"])
    assert "\n" not in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", "qkv", str(tiny_runs["lm"]), "--text", TEXT["lm"], "--layer", "1", "--head", "1"]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    checks = [b for b in data["blocks"] if b["kind"] == "check"]
    assert len(checks) == 3 and all(c["ok"] for c in checks)
    for c in checks:
        assert f"{c['what']}: max |difference| {c['max_abs_diff']:.2e}" in text
    for b in data["blocks"]:
        if b["kind"] == "tensor":
            assert f"{b['name']}: shape ({' × '.join(map(str, b['shape']))})" in text
    q = next(b for b in data["blocks"] if b["kind"] == "tensor" and b["name"].startswith("Q ="))
    assert f"{q['values'][0][0]:+.4f}" in text
    assert data["figures"][0]["data"]["tokens"] == data["data"]["tokens"]
    (png,) = data["pngs"]
    assert png.endswith("qkv-head.png") and (tmp_path / "qkv-head.png").stat().st_size > 1000
