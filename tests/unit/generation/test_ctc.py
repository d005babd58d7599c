"""Greedy CTC decoding against hand examples, and the CTC loss against a brute-force sum over paths."""

import itertools
import math

import torch

from qkv.generation.ctc import ctc_collapse, ctc_greedy
from qkv.training.losses import ctc_loss


def test_collapse_merges_repeats_and_drops_blanks():
    _, s, e, v, n = 0, 5, 6, 7, 8
    path = [0, s, s, 0, e, e, 0, v, 0, e, e, n, 0]  # "_ss_ee_v_een_" -> "seven"
    assert ctc_collapse(path, blank=0) == [s, e, v, e, n]


def test_a_blank_between_equal_symbols_keeps_both():
    assert ctc_collapse([3, 0, 3], 0) == [3, 3]
    assert ctc_collapse([3, 3, 3], 0) == [3]
    assert ctc_collapse([0, 0, 0], 0) == []


def test_greedy_reads_only_the_real_states_of_each_row():
    logits = torch.full((2, 4, 5), -10.0)
    for b, path in enumerate([[1, 1, 0, 2], [3, 0, 4, 4]]):
        for t, sym in enumerate(path):
            logits[b, t, sym] = 0.0
    assert ctc_greedy(logits, torch.tensor([4, 2]), blank=0) == [[1, 2], [3]]


def test_ctc_loss_is_minus_log_of_the_sum_over_paths_per_output_symbol():
    torch.manual_seed(0)
    S, V, blank, eos = 4, 3, 0, 9
    logits = torch.randn(1, S, V)
    target = [1, 2]
    logp = logits.log_softmax(-1)[0]
    total = sum(math.exp(sum(logp[t, s].item() for t, s in enumerate(path)))
                for path in itertools.product(range(V), repeat=S) if ctc_collapse(list(path), blank) == target)
    tgt_out = torch.tensor([[1, 2, eos, -100]])
    loss, n = ctc_loss(logits, torch.tensor([S]), tgt_out, blank, eos)
    assert n == 3  # two characters + EOS: the terms the decoder's cross-entropy averages
    assert abs(loss.item() - (-math.log(total) / 3)) < 1e-5


def test_ctc_loss_of_a_batch_is_its_halves_weighted_by_their_terms():
    """What the trainer does across processes and micro-batches (weights by `loss_terms`) gives the loss of the
    whole batch: the texts' lengths differ, so a mean of per-text means would not."""
    torch.manual_seed(1)
    blank, eos = 0, 9
    logits = torch.randn(2, 8, 5)
    tgt_out = torch.tensor([[1, 2, 3, 4, eos], [2, eos, -100, -100, -100]])
    lengths = torch.tensor([8, 6])
    whole, n = ctc_loss(logits, lengths, tgt_out, blank, eos)
    a, na = ctc_loss(logits[:1], lengths[:1], tgt_out[:1], blank, eos)
    b, nb = ctc_loss(logits[1:], lengths[1:], tgt_out[1:], blank, eos)
    assert (na, nb, n) == (5, 2, 7)
    assert abs(whole.item() - (a.item() * na + b.item() * nb) / n) < 1e-5
