"""`qkv eval RUN --alignment` and `qkv attention` with reference alignments, on the tiny translation run of
tests/serve_fixtures.py (German number words -> English ones: word j of the source translates word j)."""

import importlib.util
import json

import pytest

import qkv.data.alignment as alignment
from helpers import assert_picture, assert_user_error, qkv
from qkv.data.alignment import align_parts, training_description
from qkv.errors import QKVError
from qkv.tasks import load_run
from serve_fixtures import number_pairs

needs_eflomal = pytest.mark.skipif(importlib.util.find_spec("eflomal") is None,
                                   reason="eflomal is not installed (pip install 'qkv[align]')")


@pytest.fixture
def eval_pairs(tmp_path):
    """12 number pairs ("die eins null null ." -> "the one zero zero .") and their gold links 0-0 ... 4-4."""
    src, tgt = number_pairs(tmp_path, n=12)
    gold = tmp_path / "gold.txt"
    gold.write_text("0-0 1-1 2-2 3-3 4-4\n" * 12, encoding="utf-8")
    return src, tgt, gold


def test_eval_alignment_prints_every_layer_and_head_and_the_best(tiny_runs, eval_pairs, capsys):
    src, tgt, gold = eval_pairs
    args = ("eval", tiny_runs["translate"], "--src", src, "--ref", tgt, "--beam", "1", "--alignment",
            "--ref-alignment", gold)
    rc, out, _ = qkv(capsys, *args)
    assert rc == 0
    assert "sacreBLEU" in out  # the usual evaluation is still there
    head = next(i for i, line in enumerate(out.splitlines()) if line.startswith("word alignment vs "))
    lines = out.splitlines()[head:]
    assert "12 sentence pairs, 60 sure links (S = P: one link kind)" in lines[0] and "gold.txt" in lines[0]
    assert lines[2].split() == ["decoder", "layer", "head", "AER", "precision", "recall"]
    table = [line.split() for line in lines[3:9]]
    assert [row[:2] for row in table] == [[str(lay), h] for lay in ("0", "1") for h in ("0", "1", "mean")]
    assert lines[9].split()[:5] == ["diagonal", "-", "0.00", "100.00", "100.00"]  # word j <-> word j: the gold
    assert lines[10].startswith("best: decoder layer ")

    rc, js, _ = qkv(capsys, *args, "--json")
    r = json.loads(js)["alignment"]
    for row, printed in zip(r["scores"], table, strict=True):  # --json and the table agree
        assert [f"{100 * row[k]:.2f}" for k in ("aer", "precision", "recall")] == printed[2:]
        assert row["precision"] == pytest.approx(row["recall"])  # one link per target word, 5 per pair: |A| = |S|
    best = min(r["scores"], key=lambda row: row["aer"])
    assert r["best"]["aer"] == best["aer"] and f"AER {100 * best['aer']:.2f}" in lines[10]
    api = load_run(tiny_runs["translate"]).alignment_scores(src=str(src), ref=str(tgt), ref_alignment=str(gold))
    assert api["scores"] == r["scores"]  # the Python API gives the same numbers


def test_bad_reference_file_and_wrong_run_are_one_line_errors(tiny_runs, eval_pairs, capsys, tmp_path):
    src, tgt, gold = eval_pairs
    gold.write_text("0-0 1-1 2-2 3-3 4-4\n" * 11, encoding="utf-8")
    rc, _, err = qkv(capsys, "eval", tiny_runs["translate"], "--src", src, "--ref", tgt, "--alignment",
                     "--ref-alignment", gold)
    assert_user_error(rc, err, "has 11 alignment lines but the data has 12 sentence pairs")
    rc, _, err = qkv(capsys, "eval", tiny_runs["lm"], "--alignment")
    assert_user_error(rc, err, "--alignment does not apply to an lm run")
    with pytest.raises(QKVError, match=r"alignment_scores\(\) needs a run that reads its source as text") as e:
        load_run(tiny_runs["lm"]).alignment_scores()
    assert "\n" not in str(e.value)


def test_attention_draws_a_cached_reference_alignment(tiny_runs, capsys, tmp_path, monkeypatch):
    """A cached alignment of the run's training data that holds the sentence is drawn as boxes over the reference
    translation; a sentence in no cached alignment gets one line saying so and the model's own translation."""
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    run = load_run(tiny_runs["translate"])
    src, tgt, _ = alignment.training_pairs(run.config.data)

    def diagonal(src_words, tgt_words, settings, started=None):  # an aligner that links word j to word j
        links = [{(j, j) for j in range(len(s.split()))} for s in src_words]
        return links, links

    rc, out, _ = qkv(capsys, "attention", tiny_runs["translate"], "--src", src[3], "--out", tmp_path / "none.png")
    assert rc == 0 and out.splitlines()[0].startswith("no reference alignment: the sentence is in no cached")
    assert out.splitlines()[1].startswith("translation: ")

    monkeypatch.setattr(alignment, "run_eflomal", diagonal)
    align_parts({"train": (src, tgt)}, describe={"train": training_description(run.config.data)})
    rc, out, _ = qkv(capsys, "attention", tiny_runs["translate"], "--src", src[3], "--layer", "0", "--out",
                     tmp_path / "ref.png")
    assert rc == 0 and out.startswith("reference alignment: 5 word links from ")
    assert f"reference: {tgt[3]}" in out and "red boxes: reference word links" in out
    assert_picture(tmp_path / "ref.png")
    rc, out, _ = qkv(capsys, "attention", tiny_runs["translate"], "--src", src[3], "--no-reference", "--out",
                     tmp_path / "own.png")
    assert rc == 0 and "reference" not in out and "translation: " in out


def test_reference_boxes_cover_the_linked_words_tokens(tiny_runs):
    from qkv.evaluation.alignment import reference_attention, token_words

    run = load_run(tiny_runs["translate"])
    s, t = "die drei eins vier .", "the three one four ."
    amap = reference_attention(run.model, run.src_tokenizer, run.tgt_tokenizer, s, t, {(1, 1), (4, 4)}, layer=0)
    src_words = token_words(run.src_tokenizer, run.src_tokenizer.encode(s), False)
    tgt_words = token_words(run.tgt_tokenizer, run.tgt_tokenizer.encode(t), False)
    expected = [(min(tgt_words[j][1]), max(tgt_words[j][1]) + 1, min(src_words[i][1]), max(src_words[i][1]) + 1)
                for i, j in ((1, 1), (4, 4))]
    assert amap.boxes == expected
    assert amap.weights.shape == (len(run.tgt_tokenizer.encode(t)) + 1, len(run.src_tokenizer.encode(s)) + 1)


@needs_eflomal
def test_eval_alignment_with_eflomal_aligns_once_then_reads_the_cache(tiny_runs, eval_pairs, capsys, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    src, tgt, _ = eval_pairs
    args = ("eval", tiny_runs["translate"], "--src", src, "--ref", tgt, "--beam", "1", "--alignment")
    rc, out, _ = qkv(capsys, *args)
    assert rc == 0 and out.startswith("aligning 92 sentence pairs with eflomal")  # 80 training + 12 evaluated
    assert "12 sentence pairs, " in out and "eflomal" in out and "grow-diag-final-and" in out
    assert "best: decoder layer " in out
    rc, again, _ = qkv(capsys, *args)
    assert rc == 0 and "aligning" not in again
    assert again.split("word alignment vs ")[1] == out.split("word alignment vs ")[1]  # the cached reference
