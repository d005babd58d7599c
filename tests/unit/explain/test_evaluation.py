"""`qkv explain evaluation`: per-sentence and corpus CE, perplexity, BLEU and chrF++ on the run's validation pairs."""

import copy
import json
import math
from dataclasses import replace

import pytest
from sacrebleu.metrics import BLEU, CHRF

import qkv.explain.evaluation as topic
from qkv.cli.main import main
from qkv.data.translation import load_split
from qkv.errors import QKVError
from qkv.explain import explain


def test_scores_of_the_validation_pairs(runs):
    run = runs["translate"]
    e = explain("evaluation", run)
    assert len(e.checks) == 3 and all(c.ok for c in e.checks), e.format_text()
    srcs, refs, _ = load_split(run.config.data, "val")
    n = min(5, len(srcs))
    assert e.data["sources"] == srcs[:n] and e.data["references"] == refs[:n]
    hyps = e.data["translations"]
    assert hyps == run.translate(srcs[:n], run.decoding(beam=1))[0]
    assert e.data["corpus_bleu"] == pytest.approx(BLEU().corpus_score(hyps, [refs[:n]]).score)
    assert e.data["corpus_chrf"] == pytest.approx(CHRF(word_order=2).corpus_score(hyps, [refs[:n]]).score)
    assert e.data["chrf"] == pytest.approx([CHRF(word_order=2).corpus_score([h], [[r]]).score
                                            for h, r in zip(hyps, refs[:n], strict=True)])
    ce, tokens = e.data["ce"], e.data["tokens"]
    assert e.data["corpus_ce"] == pytest.approx(sum(c * t for c, t in zip(ce, tokens, strict=True)) / sum(tokens))
    assert e.data["corpus_perplexity"] == pytest.approx(math.exp(e.data["corpus_ce"]))
    assert e.data["perplexity"] == pytest.approx([math.exp(c) for c in ce])
    text = e.format_text()
    assert "corpus BLEU" in text and "mean of the sentence BLEUs" in text


def test_corpus_bleu_is_not_the_mean_of_sentence_bleus(runs, monkeypatch):
    """Pairs the tiny model cannot translate, scored as if it had: one exact, one half right."""
    run = runs["translate"]
    pairs = (["die eins zwei drei vier .", "die fünf sechs ."], ["the one two three four .", "the five six seven ."])
    monkeypatch.setattr(topic, "_pairs", lambda run, opts: (*pairs, "two pairs"))
    fake = copy.copy(run)
    fake.to_text = lambda sources, decoding: ["the one two three four .", "the five six ."]
    e = explain("evaluation", fake)
    assert e.data["corpus_bleu"] != pytest.approx(e.data["mean_sentence_bleu"], abs=0.5)
    assert all(c.ok for c in e.checks)


def test_a_loss_that_differs_is_caught(runs, monkeypatch):
    run = copy.copy(runs["translate"])
    real = run.reference_loss
    run.reference_loss = lambda *a: (real(*a)[0] + 1e-3, real(*a)[1])
    e = explain("evaluation", run)
    assert not e.checks[0].ok and "MISMATCH" in e.format_text()


def test_src_must_be_a_validation_source(runs):
    run = runs["translate"]
    srcs, refs, _ = load_split(run.config.data, "val")
    e = explain("evaluation", run, src=srcs[1])
    assert e.data["sources"] == [srcs[1]] and e.data["references"] == [refs[1]]
    with pytest.raises(QKVError) as err:
        explain("evaluation", run, src="die eins .")
    assert "\n" not in str(err.value) and "has no reference" in str(err.value)


def test_missing_validation_data_and_wrong_kind_are_one_line_errors(runs, tmp_path):
    run = copy.copy(runs["translate"])
    run.config = copy.deepcopy(run.config)
    run.config.data = replace(run.config.data, src=str(tmp_path / "gone.de"), tgt=str(tmp_path / "gone.en"))
    for r, opts, message in ((run, {}, "needs references"),
                             (run, {"src": "die eins ."}, "has no reference"),
                             (runs["chat"], {}, "needs a run that turns a source into text")):
        with pytest.raises(QKVError) as err:
            explain("evaluation", r, **opts)
        assert "\n" not in str(err.value) and message in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", "evaluation", str(tiny_runs["translate"])]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    rows = next(b for b in data["blocks"] if b["kind"] == "table")["rows"]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "reference tokens (+EOS)" in line) + 1
    for row, line in zip(rows, lines[start : start + len(rows)], strict=True):
        assert [float(w.replace(",", "")) for w in line.split()] == pytest.approx(row, rel=1e-3, abs=1e-6)
    for h in data["data"]["translations"]:
        assert f"output:      {h}" in text
    png = tmp_path / "evaluation-scores.png"
    assert data["pngs"] == [str(png)] and png.stat().st_size > 0
