"""`qkv explain alignment`: cross-attention merged from subword tokens to words; every row still sums to 1."""

import json

import pytest
import torch

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.evaluation.attention import seq2seq_attention
from qkv.explain import explain
from qkv.explain.alignment import _words

SRC = "die drei eins vier ."


def _tensor(e, name):
    return next(b for b in e.blocks if b.kind == "tensor" and b.name == name).value


def test_pieces_merge_into_words():
    labels = ["die", "▁", "dr", "ei", "▁eins", "▁.", "<eos>"]
    assert _words(labels, {"<eos>"}) == [("die", [0]), ("drei", [1, 2, 3]), ("eins", [4]), (".", [5]),
                                         ("<eos>", [6])]
    assert _words(["<bos>", "A", "▁man"], {"<bos>"}) == [("<bos>", [0]), ("A", [1]), ("man", [2])]


def test_word_alignment_of_a_translation(runs):
    run = runs["translate"]
    e = explain("alignment", run, src=SRC)
    assert len(e.checks) == 2 and all(c.ok for c in e.checks), e.format_text()
    assert e.data["source_words"] == ["die", "drei", "eins", "vier", ".", "<eos>"]
    assert e.data["layer"] == run.model.config.n_decoder_layers - 1 and e.data["head"] is None
    stack = seq2seq_attention(run.model, run.src_tokenizer, run.tgt_tokenizer, SRC, run.decoding())
    tokens = _tensor(e, "cross-attention weights")
    assert torch.allclose(tokens, stack.weights[-1].mean(dim=0))  # the run's own cross-attention, mean of heads
    words = _tensor(e, "word-level weights")
    assert words.shape == (len(e.data["target_words"]), 6)
    assert torch.allclose(words.sum(dim=-1), torch.ones(words.size(0)), atol=1e-5)
    table = next(b for b in e.blocks if b.kind == "table")
    assert [row[:2] for row in table.rows] == e.data["alignment"]
    assert [row[2] for row in table.rows] == pytest.approx(words.max(dim=-1).values.tolist())


def test_source_words_sum_and_target_words_average_their_pieces(runs):
    e = explain("alignment", runs["translate"], src=SRC, layer=0, head=1)
    assert e.data["layer"] == 0 and e.data["head"] == 1
    tokens, words = _tensor(e, "cross-attention weights"), _tensor(e, "word-level weights")
    rows = next(b for b in e.blocks if b.kind == "tensor").row_labels  # the produced tokens
    first_word = _words(rows, {"<eos>"})[0][1]  # the pieces of the first produced word
    expected = tokens[first_word][:, 1:4].sum(dim=-1).mean()  # "drei" = '▁' + 'dr' + 'ei', averaged over pieces
    assert words[0, 1].item() == pytest.approx(expected.item(), abs=1e-6)


def test_the_check_can_fail(runs, monkeypatch):
    import qkv.explain.alignment as topic

    real = topic._membership

    def lose_a_piece(words, n):
        m = real(words, n)
        m[1] = 0.0  # the second source piece belongs to no word: its attention mass is lost
        return m

    monkeypatch.setattr(topic, "_membership", lose_a_piece)
    e = explain("alignment", runs["translate"], src=SRC)
    assert e.checks[0].ok and not e.checks[1].ok


def test_wrong_run_and_out_of_range_are_one_line_errors(runs):
    for kwargs, words in (({"layer": 2}, "layer 2 is out of range"), ({"head": 2}, "head 2 is out of range")):
        with pytest.raises(QKVError, match=words) as err:
            explain("alignment", runs["translate"], src=SRC, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(QKVError, match="explain alignment needs a run that reads its source as text") as err:
        explain("alignment", runs["lm"], text="<img")
    assert "\n" not in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", "alignment", str(tiny_runs["translate"]), "--src", SRC]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    for c in (b for b in data["blocks"] if b["kind"] == "check"):
        assert c["ok"] and f"{c['what']}: max |difference| {c['max_abs_diff']:.2e}" in text
    for produced, source in data["data"]["alignment"]:
        assert any(line.split()[:2] == [produced, source] for line in text.splitlines())
    assert data["figures"][0]["data"]["cols"] == data["data"]["source_words"]
    (png,) = data["pngs"]
    assert (tmp_path / "alignment-words.png").stat().st_size > 1000 and png.endswith("alignment-words.png")
