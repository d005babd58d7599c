"""`qkv explain heads`: every head of a layer, concatenated through W_O and as per-head contributions (≤ 1e-5)."""

import json
import shutil

import pytest
import torch

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.explain import explain
from qkv.tasks import load_run

TEXT = {"lm": "<img src=x>", "chat": "What is 2?", "translate": "die drei eins vier ."}


def _explain(run, name, **opts):
    return explain("heads", run, text=TEXT[name], src=TEXT[name], **opts)


@pytest.mark.parametrize("name", ["lm", "chat", "translate"])
def test_heads_recompose_the_layer(runs, name):
    run = runs[name]
    e = _explain(run, name)
    assert [c.ok for c in e.checks] == [True, True, True], e.format_text()
    layers = run.model.encoder if name == "translate" else run.model.blocks
    assert e.data["layer"] == len(layers) - 1  # the last layer by default
    H, T = layers[-1].attn.n_heads, len(e.data["tokens"])
    weights = next(b for b in e.blocks if b.kind == "tensor" and b.name == "weights of every head").value
    assert weights.shape == (H, T, T)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(H, T), atol=1e-6)
    tables = [b for b in e.blocks if b.kind == "table"]
    assert [len(t.rows) for t in tables] == [H, H]
    assert e.figures[0].name == f"layer{e.data['layer']}" and e.figures[0].data["weights"].shape == (H, T, T)


def test_one_head_alone_is_its_slice_of_w_o(runs):
    run = runs["chat"]
    e = _explain(run, "chat", layer=0, head=2)
    alone = next(b for b in e.blocks if b.kind == "tensor" and b.name == "head 2 alone").value  # (T, C)
    attn = run.model.blocks[0].attn
    with torch.no_grad():  # zero every other head's columns of W_O: the module then gives head 2 alone
        keep = attn.o_proj.weight.clone()
        attn.o_proj.weight[:, :32] = 0
        attn.o_proj.weight[:, 48:] = 0
        try:
            ids = run.tokenizer.encode(TEXT["chat"])
            x = run.model.tok_emb(torch.tensor([ids])) + run.model.pos_emb(torch.arange(len(ids)))  # (1, T, C)
            only, _ = attn(run.model.blocks[0].norm1(x), causal=True)
        finally:
            attn.o_proj.weight.copy_(keep)
    assert (alone - only[0]).abs().max() <= 1e-5


def test_the_checks_can_fail(runs, monkeypatch):
    import qkv.explain.qkv as shared

    monkeypatch.setattr(shared, "mask_of", lambda call: None)  # forget the causal mask
    e = _explain(runs["lm"], "lm")
    assert not any(c.ok for c in e.checks)


@pytest.fixture(scope="module")
def one_head_lm(tiny_runs, tmp_path_factory):
    """A copy of the lm run that says n_heads = 1 (the same weights fit: one head of 48 instead of two of 24)."""
    folder = tmp_path_factory.mktemp("compare") / "lm-1head"
    shutil.copytree(tiny_runs["lm"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["n_heads"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    metrics = folder / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + json.dumps({"step": 160, "val_loss": 1.25}) + "\n")
    return folder


def test_compare_a_run_that_differs_only_in_n_heads(runs, one_head_lm):
    e = _explain(runs["lm"], "lm", compare=load_run(one_head_lm))
    compare = e.data["compare"]
    assert compare["only_n_heads"] and compare["differences"] == [["model.n_heads", "2", "1"]]
    assert compare["val_loss"][1] == 1.25 and compare["val_loss"][0] == pytest.approx(0.0965, abs=0.05)
    assert "differ only in n_heads (2 vs 1)" in e.format_text()
    e = _explain(runs["lm"], "lm", compare=runs["chat"])
    assert not e.data["compare"]["only_n_heads"]
    assert "model.d_model" in [row[0] for row in e.data["compare"]["differences"]]
    assert "not clean" in e.format_text()


def test_wrong_run_and_out_of_range_are_one_line_errors(runs):
    for kwargs, words in (({"layer": 2}, "layer 2 is out of range"), ({"head": 5}, "head 5 is out of range")):
        with pytest.raises(QKVError, match=words) as err:
            _explain(runs["lm"], "lm", **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(QKVError, match="explain heads needs") as err:
        explain("heads", runs["digits"])
    assert "\n" not in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, one_head_lm, capsys, tmp_path):
    args = ["explain", "heads", str(tiny_runs["lm"]), "--text", TEXT["lm"], "--compare", str(one_head_lm)]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    for c in (b for b in data["blocks"] if b["kind"] == "check"):
        assert c["ok"] and f"{c['what']}: max |difference| {c['max_abs_diff']:.2e}" in text
    losses = next(b for b in data["blocks"] if b["kind"] == "table" and "validation loss" in b["title"])
    assert [row[4] for row in losses["rows"]][1] == "1.2500"
    for row in losses["rows"]:
        assert row[0] in text and row[4] in text
    (png,) = data["pngs"]
    assert png.endswith("heads-layer1.png") and (tmp_path / "heads-layer1.png").stat().st_size > 1000
