"""Translation metrics equal sacrebleu's own corpus functions, with the signatures that say what was computed."""

import pytest
import sacrebleu

from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import TOK_LC_LABEL, chrf_pp, sacre_bleu, tokenized_lc_bleu

HYPS = ["A man is riding a bike.", "Two dogs play in the snow!", "a girl in a RED dress", "The sun."]
REFS = ["A man rides a bicycle.", "Two dogs are playing in the snow.", "A girl in a red dress.", "Sunset."]


def test_bleu_is_sacrebleu_corpus_bleu():
    s = sacre_bleu(HYPS, REFS)
    assert s.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-12)
    assert "case:mixed" in s.signature and "tok:13a" in s.signature and "nrefs:1" in s.signature
    assert s.score > 0 and s.detail.startswith("BLEU = ")


def test_bleu_of_one_sentence_by_hand():
    """BLEU written out (Papineni et al. 2002) for one pair, so a scoring bug cannot hide behind the library:
    hyp "the cat sat on the mat" (6 tokens) vs ref "the cat is sitting on the mat" (7 tokens).
    Clipped n-gram matches 5/6, 3/5 (the cat, on the, the mat), 1/4 (on the mat), 0/3; sacreBLEU's "exp"
    smoothing counts the first zero as 1/(2·3). Brevity penalty exp(1 − 7/6)."""
    import math

    s = sacre_bleu(["the cat sat on the mat"], ["the cat is sitting on the mat"])
    by_hand = 100 * math.exp(1 - 7 / 6) * math.exp((math.log(5 / 6) + math.log(3 / 5) + math.log(1 / 4)
                                                    + math.log(1 / 6)) / 4)
    assert s.score == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(32.1594, abs=1e-4)
    assert "83.3/60.0/25.0/16.7" in s.detail and "BP = 0.846" in s.detail and "ratio = 0.857" in s.detail


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
