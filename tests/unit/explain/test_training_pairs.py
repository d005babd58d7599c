"""`qkv explain training-pairs`: the example is built by the task's own functions, and its loss is the task's."""

import json

import pytest

import qkv.tasks.chat as chat_task
import qkv.tasks.text_to_text as translate_task
from qkv.cli.main import main
from qkv.data.chat_template import IGNORE, render
from qkv.data.conversations import conversation
from qkv.errors import QKVError
from qkv.explain import explain

CONV = "<|user|>What is 2 + 2?<|end|><|assistant|>4<|end|>"


def _table(e):
    return next(b for b in e.blocks if b.kind == "table" and b.columns[0] == "position" and len(b.columns) == 5)


@pytest.mark.parametrize("name", ["lm", "chat", "translate"])
def test_the_runs_own_example_and_its_loss(runs, name):
    e = explain("training-pairs", runs[name])
    assert all(c.ok for c in e.checks) and e.checks, e.format_text()
    x, y = e.data["inputs"], e.data["targets"]
    assert len(x) == len(y) == e.data["positions"]
    assert e.data["loss_task"] == pytest.approx(e.data["loss_ours"], abs=1e-5)
    if name == "lm":
        assert x[1:] == y[:-1] and e.data["counted"] == len(y) == 32  # shifted by one, every position counts
        assert "data/train.bin" in e.format_text()
    if name == "chat":
        counted = [t for t in y if t != IGNORE]
        assert 0 < len(counted) < len(y)  # answer-only
        assert counted[-1] == runs["chat"].tokenizer.token_to_id("<|end|>")
        assert "Paris" in e.data["rendered"]  # the first training pair of the tiny run's pairs.csv
    if name == "translate":
        tok = runs["translate"].tgt_tokenizer
        assert x[0] == tok.bos_id and y[-1] == tok.eos_id and x[1:] == y[:-1]
        assert e.data["source"] == "die null null null ." and e.data["target"] == "the zero zero zero ."
        assert len(e.checks) == 2  # the NLL and the label-smoothed loss
    rows = _table(e).rows
    assert [r[3] for r in rows] == ["yes" if t != IGNORE else "no" for t in y][rows[0][0]: rows[0][0] + len(rows)]


def test_a_chat_conversation_from_text_is_masked_answer_only(runs):
    run = runs["chat"]
    e = explain("training-pairs", run, text=CONV)
    ids, mask = render(conversation([{"role": "user", "content": "What is 2 + 2?"},
                                     {"role": "assistant", "content": "4"}], "t").messages, run.tokenizer)
    assert e.data["inputs"] == ids[:-1]
    assert e.data["targets"] == [t if m else IGNORE for t, m in zip(ids[1:], mask[1:], strict=True)]
    assert e.data["counted"] == 2  # "4" and <|end|>
    assert [r[3] for r in _table(e).rows] == ["no"] * 16 + ["yes"] * 2
    assert all(c.ok for c in e.checks)


def test_lm_text_and_translation_pair_from_the_command_line(runs):
    e = explain("training-pairs", runs["lm"], text="<img src=x>")
    assert e.data["inputs"] == runs["lm"].tokenizer.encode("<img src=x>")[:-1]
    e = explain("training-pairs", runs["translate"], src="die drei eins .", text="the three one .")
    assert e.data["source"] == "die drei eins ." and all(c.ok for c in e.checks)
    assert e.data["smoothed_loss"] > 0 and e.data["label_smoothing"] == runs["translate"].config.train.label_smoothing


@pytest.mark.parametrize("name, target", [("chat", chat_task), ("translate", translate_task)])
def test_a_loss_that_differs_is_caught(runs, monkeypatch, name, target):
    if name == "chat":
        real = target.chat_loss
        monkeypatch.setattr(target, "chat_loss", lambda m, b: (real(m, b)[0] + 1e-3, real(m, b)[1]))
    else:
        real = target.smoothed_loss
        monkeypatch.setattr(target, "smoothed_loss", lambda z, t, eps: tuple(v * 1.001 if i < 2 else v for i, v in
                                                                         enumerate(real(z, t, eps))))
    e = explain("training-pairs", runs[name])
    assert not e.checks[0].ok and "MISMATCH" in e.format_text()


@pytest.mark.parametrize("name, opts, message", [
    ("digits", {}, "needs a run that shows a training example"),
    ("translate", {"src": "die eins ."}, "needs both sides"),
    ("chat", {"text": "What is 2 + 2?"}, "template's form"),
    ("lm", {"text": "<"}, "at least 2 tokens"),
])
def test_errors_are_one_line(runs, name, opts, message):
    with pytest.raises(QKVError) as err:
        explain("training-pairs", runs[name], **opts)
    assert "\n" not in str(err.value) and message in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", "training-pairs", str(tiny_runs["chat"]), "--text", CONV]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    table = next(b for b in data["blocks"] if b["kind"] == "table")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "counts in loss" in line) + 1
    words = [line.split() for line in lines[start : start + len(table["rows"])]]
    assert [(r[0], r[3]) for r in table["rows"]] == [(int(w[0]), w[-1] if w[-1] in ("yes", "no") else w[-2])
                                                     for w in words]
    assert f"{data['data']['loss_ours']:.4f} nats" in text
    png = tmp_path / "training-pairs-loss-mask.png"
    assert data["pngs"] == [str(png)] and png.stat().st_size > 0
