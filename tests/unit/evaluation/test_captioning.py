"""Caption metrics: CIDEr-D on a hand-worked example equals pycocoevalcap's value, BLEU-4 takes every reference,
exact match ignores case and spacing, and per-attribute accuracy reads captions with the grammar."""

import math

import pytest
import sacrebleu

from qkv.evaluation.captioning import attribute_accuracy, bleu4, caption_scores, cider_d, coco_tokenize
from qkv.evaluation.matching import exact_match


def test_cider_d_on_a_hand_worked_example():
    """Two images, one reference each. N = 2 images, so an n-gram in one image's references weighs
    log 2 − log 1 (and one in no reference log 2 − log max(1, 0): the same).
    Image 1, "a c" vs "a b": unigrams share "a": cos = (log 2)² / (√2 log 2)² = 1/2; no shared bigram; no 3- or
    4-grams (0). Equal lengths: no penalty. CIDEr-D = 10 · (1/2 + 0 + 0 + 0) / 4 = 1.25.
    Image 2, "d e" vs "d e": cos 1 for unigrams and bigrams: 10 · (1 + 1) / 4 = 5.
    Mean: 3.125."""
    assert cider_d(["a c", "d e"], [["a b"], ["d e"]]) == pytest.approx(3.125)
    from pycocoevalcap.cider.cider import Cider

    direct, per_image = Cider().compute_score({0: ["a b"], 1: ["d e"]}, {0: ["a c"], 1: ["d e"]})
    assert direct == pytest.approx(3.125) and list(per_image) == pytest.approx([1.25, 5.0])


def test_cider_d_length_penalty_and_clipping():
    """A caption that repeats a reference word is clipped to the reference's count, and a length difference δ
    costs exp(−δ² / 2σ²), σ = 6: "a a" vs "a b" with the other image identical gives
    10 · (cos1 · e^(−0)) / 4 where cos1 = min(2, 1)·1 / (√4 · √2) (in units of (log 2)²) = 1/(2√2)."""
    got = cider_d(["a a", "d e"], [["a b"], ["d e"]])
    assert got == pytest.approx((10 * (1 / (2 * math.sqrt(2))) / 4 + 5) / 2)
    longer = cider_d(["a b x y", "d e"], [["a b"], ["d e"]])  # δ = 2 on image 1
    assert longer < 5 + 1e-9


def test_coco_tokenize_and_exact_match():
    assert coco_tokenize("A dog, running.  Fast!") == "a dog running fast"
    assert exact_match(["A red  circle", "x"], [["a red circle"], ["y", "z"]]) == 0.5
    assert exact_match(["z"], [["y", "z"]]) == 1.0


def test_bleu4_takes_every_reference_even_a_varying_number():
    hyps = ["a small red circle at the top", "a large blue square"]
    refs = [["a small red circle at the top", "a red circle"], ["a large blue square in the centre"]]
    got = bleu4(hyps, refs)
    want = sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs], ["a red circle", None]])
    assert got["score"] == pytest.approx(want.score) and got["signature"].startswith("nrefs:var")


def test_attribute_accuracy_reads_the_grammar():
    ref = "a small red circle at the top left and a large blue square on the right"
    hyps = [
        ref,  # all right
        "a small red square at the top left and a large blue square on the right",  # one shape wrong
        "a small red circle at the top left",  # one object missing: count wrong, its four attributes lost
        "a dog",  # outside the grammar
        "a small red circle at the bottom and a large blue square on the right",  # one object misplaced
    ]
    acc = attribute_accuracy(hyps, [ref] * 5)
    assert acc["count"] == pytest.approx(3 / 5)
    assert acc["position"] == pytest.approx(6 / 10)  # the misplaced circle is not where the scene has it
    assert acc["shape"] == pytest.approx(6 / 10)  # ... but its shape, colour and size are right
    assert acc["colour"] == pytest.approx(7 / 10) and acc["size"] == pytest.approx(7 / 10)
    assert acc["unparsed"] == 1


def test_caption_scores_bundle():
    r = caption_scores(["a small red circle in the centre"], [["a small red circle in the centre"]], grammar=True)
    assert r["exact_match"] == 1.0 and r["attributes"]["shape"] == 1.0 and r["bleu4"]["score"] == pytest.approx(100)
    assert "attributes" not in caption_scores(["x y"], [["x y"]], grammar=False)
