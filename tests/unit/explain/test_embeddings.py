"""`qkv explain embeddings`: the looked-up rows are the table's own rows, the neighbours the nearest by cosine."""

import json

import pytest
import torch
import torch.nn.functional as F

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.explain import explain

TEXT = {"lm": "<img src=x>", "chat": "What is 2?", "translate": "drei eins"}


def table_of(run):
    return (run.src_tokenizer, run.model.src_emb) if run.task == "translate" else (run.tokenizer, run.model.tok_emb)


@pytest.mark.parametrize("name", ["lm", "chat", "translate"])
def test_lookup_is_the_tables_rows_and_neighbours_are_nearest(runs, name):
    run = runs[name]
    e = explain("embeddings", run, text=TEXT[name], src=TEXT[name])
    tok, emb = table_of(run)
    ids = tok.encode(TEXT[name])
    assert e.data["ids"] == ids and e.data["vocab_size"] == emb.num_embeddings
    rows = next(b for b in e.blocks if b.kind == "tensor" and b.name.endswith(".weight[ids]"))
    assert torch.equal(rows.value, emb(torch.tensor(ids)))
    assert [c.ok for c in e.checks] == [True]
    n = sum(p.numel() for p in run.model.parameters())
    assert e.data["table_params"] == emb.weight.numel()
    assert e.data["table_share"] == pytest.approx(emb.weight.numel() / n)

    w = emb.weight  # brute force: every other row's cosine with the first token's row
    sims = sorted(((F.cosine_similarity(w[ids[0]], w[j], dim=0).item(), j) for j in range(len(w)) if j != ids[0]),
                  reverse=True)[:5]
    got = e.data["neighbours"][e.data["tokens"][0]]
    assert [j for _, j, _ in got] == [j for _, j in sims]
    assert [c for _, _, c in got] == pytest.approx([s for s, _ in sims], abs=1e-6)


def test_a_translation_run_says_its_table_is_shared_and_scaled(runs):
    text = explain("embeddings", runs["translate"], src="drei eins").format_text()
    assert "tgt_emb is this same table" in text and "√d = 5.657" in text and "lm_head.weight is the target" in text


def test_the_check_compares_with_the_modules_output(runs, monkeypatch):
    emb = runs["lm"].model.tok_emb
    monkeypatch.setattr(emb, "forward", lambda idx: F.embedding(idx, emb.weight) + 1e-3)
    (check,) = explain("embeddings", runs["lm"], text="<img").checks
    assert not check.ok and check.max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_a_diffusion_run_is_a_one_line_error(runs):
    with pytest.raises(QKVError) as err:
        explain("embeddings", runs["digits"])
    assert "needs" in str(err.value) and "diffusion run" in str(err.value) and "\n" not in str(err.value)


def test_json_and_text_agree_and_pictures_are_written(tiny_runs, tmp_path, capsys):
    args = ["explain", "embeddings", str(tiny_runs["lm"]), "--text", "<img"]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"{data['data']['table_share']:.1%} of this model's {data['data']['model_params']:,}" in text
    lines = text[text.index("nearest neighbours"):].splitlines()[2:]
    near = next(b for b in data["blocks"] if b["kind"] == "table" and b["columns"][-1] == "cosine")["rows"]
    assert len(near) == 3 * 5  # the first three distinct tokens, five neighbours each
    for line, (token, rank, neighbour, i, cos) in zip(lines, near, strict=False):
        assert line.split()[:4] == [token, str(rank), neighbour, str(i)]
        assert float(line.split()[4]) == pytest.approx(cos, abs=1e-3)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["embeddings-lookup.png", "embeddings-neighbours.png"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in pngs) and len(data["pngs"]) == 2
