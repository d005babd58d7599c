"""Translation metrics equal sacrebleu's own corpus functions, with the signatures that say what was computed."""

import pytest
import sacrebleu

from qkv.evaluation.translation import TOK_LC_LABEL, chrf_pp, perplexity, sacre_bleu, tokenized_lc_bleu

HYPS = ["A man is riding a bike.", "Two dogs play in the snow!", "a girl in a RED dress", "The sun."]
REFS = ["A man rides a bicycle.", "Two dogs are playing in the snow.", "A girl in a red dress.", "Sunset."]


def test_bleu_is_sacrebleu_corpus_bleu():
    s = sacre_bleu(HYPS, REFS)
    assert s.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-12)
    assert "case:mixed" in s.signature and "tok:13a" in s.signature and "nrefs:1" in s.signature
    assert s.score > 0 and s.detail.startswith("BLEU = ")


def test_chrf_pp_is_sacrebleu_chrf_word_order_2():
    s = chrf_pp(HYPS, REFS)
    assert s.score == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score, abs=1e-12)
    assert s.score != pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)  # chrF++, not chrF
    assert "nw:2" in s.signature and "nc:6" in s.signature


def test_tokenized_lowercased_bleu():
    s = tokenized_lc_bleu(HYPS, REFS)
    assert s.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True, tokenize="13a").score)
    assert "case:lc" in s.signature
    assert s.score > sacre_bleu(HYPS, REFS).score  # "RED" matches "red" only when lower-cased
    assert "older papers" in TOK_LC_LABEL


def test_perfect_and_mismatched():
    assert sacre_bleu(REFS, REFS).score == pytest.approx(100.0)
    with pytest.raises(ValueError, match="4 hypotheses but 3 references"):
        sacre_bleu(HYPS, REFS[:3])
    assert perplexity(0.0) == 1.0 and perplexity(1e9) < float("inf")
