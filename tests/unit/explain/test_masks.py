"""`qkv explain decoder-only-vs-encoder-decoder`: the masks the modules used, and weights exactly 0 under them."""

import json

import pytest
import torch

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.explain import explain

TOPIC = "decoder-only-vs-encoder-decoder"


def _grids(e):
    return [b for b in e.blocks if b.kind == "table" and "mask" in b.title and b.columns[0] == "query \\ key"]


@pytest.mark.parametrize(("name", "text"), [("lm", "<img src=x>"), ("chat", "What is 2?")])
def test_decoder_only_is_causal(runs, name, text):
    e = explain(TOPIC, runs[name], text=text)
    T = len(e.data["tokens"])
    assert torch.equal(e.data["causal"], torch.ones(T, T, dtype=torch.int).tril())
    (grid,) = _grids(e)
    assert [row[1:] for row in grid.rows] == torch.ones(T, T, dtype=torch.int).tril().tolist()
    assert len(e.checks) == runs[name].model.config.n_layers
    assert all(c.ok and c.max_abs_diff == 0.0 for c in e.checks)


def test_encoder_decoder_padding_causal_and_cross(runs):
    run = runs["translate"]
    e = explain(TOPIC, run, src="die drei eins vier .")
    assert e.data["sources"] == ["die drei eins vier .", "die drei eins"]
    src_mask, b = e.data["src_mask"], e.data["padded_sentence"]
    assert b == 1 and src_mask[0].all() and not src_mask[1].all()  # the shorter sentence is padded
    real = int(src_mask[b].sum())
    enc, dec, cross = e.data["encoder"], e.data["decoder"], e.data["cross"]
    S, T = enc.shape[0], dec.shape[0]
    assert torch.equal(enc, src_mask[b].expand(S, S)) and enc[:, real:].sum() == 0
    assert torch.equal(dec, torch.ones(T, T, dtype=torch.int).tril())
    assert cross.shape == (T, S) and torch.equal(cross, src_mask[b].expand(T, S))
    assert len(_grids(e)) == 3 and len(e.figures[0].data["panels"]) == 3
    assert len(e.checks) == 1 + 2 * run.model.config.n_decoder_layers
    assert all(c.ok and c.max_abs_diff == 0.0 for c in e.checks), e.format_text()


def test_a_one_word_source_is_padded_against_a_longer_one(runs):
    e = explain(TOPIC, runs["translate"], src="drei")
    assert e.data["sources"] == ["drei", "drei drei"] and e.data["padded_sentence"] == 0
    assert all(c.ok for c in e.checks)


def test_the_check_can_fail(runs, monkeypatch):
    import qkv.explain.masks as topic

    real = topic.mask_of
    monkeypatch.setattr(topic, "mask_of", lambda call: None if real(call) is None else ~real(call))  # the wrong half
    e = explain(TOPIC, runs["lm"], text="<img src=x>")
    assert not any(c.ok for c in e.checks)


def test_wrong_run_is_a_one_line_error(runs):
    with pytest.raises(QKVError, match=f"explain {TOPIC} needs") as err:
        explain(TOPIC, runs["digits"])
    assert "\n" not in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", TOPIC, str(tiny_runs["translate"]), "--src", "die drei eins vier ."]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    for c in (b for b in data["blocks"] if b["kind"] == "check"):
        assert c["max_abs_diff"] == 0.0 and f"{c['what']}: max |difference| 0.00e+00" in text
    cross = next(b for b in data["blocks"] if b["kind"] == "table" and b["title"].startswith("cross-attention"))
    assert [row[1:] for row in cross["rows"]] == data["data"]["cross"]
    lines = text.splitlines()
    start = lines.index(cross["title"]) + 2  # the title, the header, then one line per target token
    for line, row in zip(lines[start:], cross["rows"], strict=False):
        assert line.split() == [str(v) for v in row]
    (png,) = data["pngs"]
    assert (tmp_path / f"{TOPIC}-masks.png").stat().st_size > 1000 and png.endswith("masks.png")
