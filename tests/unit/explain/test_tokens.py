"""`qkv explain tokens`: the table is the run tokenizer's own encoding, and unknown characters are explained."""

import json

import pytest

from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.explain import TOPICS, applies, explain


def test_topics_are_listed_in_lesson_order_one_line_each(capsys):
    assert main(["explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[: len(TOPICS)]] == list(TOPICS)
    # a recording comes in beside the token input, before attention
    assert list(TOPICS)[:5] == ["tokens", "embeddings", "positions", "audio", "qkv"]


@pytest.mark.parametrize("name", ["lm", "chat", "translate"])
def test_tokens_are_the_tokenizers_ids(runs, name):
    run = runs[name]
    text = {"lm": "<img sr", "chat": "What is 2?", "translate": "drei eins"}[name]
    e = explain("tokens", run, text=text, src=text)
    tok = run.src_tokenizer if name == "translate" else run.tokenizer
    assert e.data["ids"] == tok.encode(text)
    table = next(b for b in e.blocks if b.kind == "table")
    assert [row[2] for row in table.rows] == tok.encode(text)
    assert e.data["vocab_size"] == tok.vocab_size


def test_an_unknown_character_is_explained_not_crashed(runs):
    e = explain("tokens", runs["lm"], text="<img")
    unknown = e.data["unknown"]
    assert unknown["char"] == "€"
    assert (unknown["error"] is None) != (unknown["ids"] is None)


def test_long_input_is_cut_and_says_so(runs):
    e = explain("tokens", runs["lm"], text="<img src=x>" * 10)
    assert len(next(b for b in e.blocks if b.kind == "table").rows) == 32
    assert "cut to the first 32" in e.format_text()
    assert len(e.data["ids"]) == 110


def test_text_the_tokenizer_cannot_encode_is_one_line(runs):
    with pytest.raises(QKVError) as err:
        explain("tokens", runs["lm"], text="Zebra€")
    assert "\n" not in str(err.value)


def test_json_and_text_agree(runs, tiny_runs, capsys):
    assert main(["explain", "tokens", str(tiny_runs["lm"]), "--text", "<img", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(["explain", "tokens", str(tiny_runs["lm"]), "--text", "<img"]) == 0
    text = capsys.readouterr().out
    rows = next(b for b in data["blocks"] if b["kind"] == "table")["rows"]
    for _, label, i, _ in rows:
        assert f"{label}" in text and f"{i}" in text
    assert data["data"]["ids"] == [r[2] for r in rows]


def test_unknown_topic_and_missing_run_are_one_line_errors(tiny_runs, capsys):
    assert main(["explain", "nonsense", str(tiny_runs["lm"])]) != 0
    assert main(["explain", "tokens"]) != 0
    err = capsys.readouterr().err
    assert "unknown topic 'nonsense'" in err and "needs a run directory" in err


@pytest.mark.parametrize("name", ["lm", "translate", "digits"])
def test_the_registry_lists_exactly_the_topics_a_run_can_take(runs, name):
    """The playground lists a run's topics with `applies` (TOPICS' needs); explain refuses the others with a one-line
    error. The two must agree (self-vs-cross and output take GPT runs too, and the page used to hide them)."""
    run = runs[name]
    for topic in TOPICS:
        try:
            explain(topic, run, text="<img src" if name == "lm" else None, prompt="3" if name == "digits" else None)
            refused = False
        except QKVError as err:
            refused = "needs" in str(err) and "\n" not in str(err)
        assert refused == (not applies(topic, run)), (topic, name)
