"""The bigram baseline (`qkv.evaluation.bigram`): a hand-computed case, a loop over the formula, the refusals."""

import math

import numpy as np
import pytest

from qkv.errors import QKVError
from qkv.evaluation.bigram import bigram_loss


def test_hand_computed_case():
    # train pairs (0,1) (1,0) (0,1): c(0,1) = 2, c(1,0) = 1, c(0) = 2, c(1) = 1; val pairs (0,1) and (1,1)
    assert bigram_loss([0, 1, 0, 1], [0, 1, 1], vocab_size=2, alpha=1.0) == pytest.approx(
        -(math.log(3 / 4) + math.log(1 / 3)) / 2)  # = ln 2
    assert bigram_loss([0, 1, 0, 1], [0, 1, 1], vocab_size=2, alpha=0.5) == pytest.approx(
        -(math.log(2.5 / 3) + math.log(0.5 / 2)) / 2)
    # an unseen predecessor is uniform: -ln(1/V)
    assert bigram_loss([0, 0, 0], [2, 1], vocab_size=3, alpha=0.1) == pytest.approx(math.log(3))


def test_matches_the_formula_on_random_ids():
    rng = np.random.default_rng(0)
    V, alpha = 7, 0.3
    train, val = rng.integers(0, V, 500), rng.integers(0, V, 80)
    counts = np.zeros((V, V))
    for a, b in zip(train[:-1], train[1:], strict=True):
        counts[a, b] += 1
    nll = [-math.log((counts[a, b] + alpha) / (counts[a].sum() + alpha * V)) for a, b in zip(val[:-1], val[1:],
                                                                                          strict=True)]
    assert bigram_loss(train, val.astype(np.uint16), V, alpha) == pytest.approx(np.mean(nll), rel=1e-9)


def test_a_bigram_process_scores_near_its_entropy():
    rng = np.random.default_rng(1)
    ids = np.cumsum(rng.integers(1, 3, 20_000)) % 50  # the next id is the previous + 1 or + 2: entropy ln 2
    loss = bigram_loss(ids[:15_000], ids[15_000:], 50)  # 0.7086 (seed 1): the smoothing costs a little
    assert math.log(2) < loss < math.log(2) + 0.03 and loss < math.log(50)


@pytest.mark.parametrize(("args", "message"), [
    (([0, 1], [0, 1], 8193), "vocab_size must be in 1..8192"),
    (([0, 1], [0, 1], 4, 0.0), "alpha must be positive"),
    (([0, 4], [0, 1], 4), r"train ids must be in \[0, 4\)"),
    (([0, 1], [1], 4), "val needs at least 2 tokens"),
])
def test_refusals_are_one_line(args, message):
    with pytest.raises(QKVError, match=message):
        bigram_loss(*args)
