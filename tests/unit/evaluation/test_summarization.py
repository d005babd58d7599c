"""Judging summaries: ROUGE as rouge-score computes it (pinned on a hand case worked out from the definitions),
bootstrap intervals that bracket the mean, sacreBLEU and chrF++ beside them, and the three baselines."""

import numpy as np
import pytest

from qkv.evaluation.summarization import (
    bootstrap_ci,
    lead,
    name_words,
    nearest_summaries,
    rouge_rows,
    summary_scores,
)


def test_rouge_matches_the_definitions_on_a_hand_case():
    """ref "the cat sat on the mat", hyp "the cat on the mat": unigrams 5 of 5 / 5 of 6 -> F 10/11; bigrams the cat,
    on the, the mat: 3 of 4 / 3 of 5 -> F 2/3; the longest common subsequence is the whole hypothesis -> F 10/11."""
    (r1, r2, rl), = rouge_rows(["the cat on the mat"], ["the cat sat on the mat"])
    assert r1 == pytest.approx(100 * 10 / 11) and r2 == pytest.approx(100 * 2 / 3)
    assert rl == pytest.approx(100 * 10 / 11)
    (same,) = rouge_rows(["Return the list."], ["return the list"])  # case and punctuation do not count
    assert list(same) == [100.0, 100.0, 100.0]
    (stemmed,) = rouge_rows(["returns lists"], ["return list"])  # Porter stemming, as the papers score
    assert stemmed[0] == 100.0
    with pytest.raises(ValueError):
        rouge_rows(["a"], ["a", "b"])


def test_bootstrap_intervals_bracket_the_mean_and_narrow_with_more_summaries():
    rng = np.random.default_rng(0)
    small, large = rng.uniform(0, 100, (20, 1)), rng.uniform(0, 100, (2000, 1))
    (lo, hi), = bootstrap_ci(small)
    assert lo < small.mean() < hi
    (lo2, hi2), = bootstrap_ci(large)
    assert hi2 - lo2 < (hi - lo) / 5  # ~ 1/√N: 10× narrower for 100× the summaries
    assert bootstrap_ci(small).tolist() == bootstrap_ci(small).tolist()  # a fixed seed


def test_summary_scores_hold_rouge_with_intervals_bleu_and_chrf():
    s = summary_scores(["Return the list.", "Split a path."], ["Return the list.", "Join two paths."])
    assert s["n"] == 2 and s["rouge1"]["ci95"][0] <= s["rouge1"]["score"] <= s["rouge1"]["ci95"][1]
    assert 0 < s["bleu"] < 100 and 0 < s["chrf++"] < 100
    perfect = summary_scores(["Return the list."], ["Return the list."])
    assert perfect["rougeL"]["score"] == 100.0 and perfect["bleu"] == pytest.approx(100.0)


def test_the_baselines():
    assert name_words("shutil.get_terminal_size") == "get terminal size"
    assert name_words("textwrap.TextWrapper.fill") == "fill" and name_words("m.splitExt") == "split ext"
    assert lead("Return it.  Then more. And more.", "text") == "Return it."
    code = "def f(x):\n    y = x + 1\n    # add one to x\n    return y"
    assert lead(code, "code") == "add one to x"
    assert lead("def g():\n    return 2", "code") == "def g():"
    train = ["def add(a, b):\n    return a + b", "def read(path):\n    return open(path).read()"]
    assert nearest_summaries(train, ["Add two numbers.", "Read a file."], ["def load(path):\n    return open(path)"]) \
        == ["Read a file."]
