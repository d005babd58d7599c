"""Joint CTC–attention rescoring: the CTC likelihood is the sum over every alignment (checked by enumerating the
paths of a small case), the attention likelihood is the decoder's own (equal to beam search's log-probability of the
same hypothesis), and the rescored choice is the argmax of the mixed score among the beam's hypotheses and the CTC
greedy transcript; λ = 1 picks by CTC alone, λ = 0 by the decoder alone."""

import itertools
import math

import pytest
import torch

from qkv.generation.ctc import ctc_collapse, ctc_greedy
from qkv.generation.joint_ctc import attention_log_likelihood, ctc_log_likelihood, joint_decode, joint_nbest
from qkv.generation.seq2seq import SequenceDecoding, beam_search_nbest
from qkv.models.transcriber import Transcriber, TranscriberConfig

BLANK, BOS, EOS = 0, 1, 2


def small() -> Transcriber:
    torch.manual_seed(0)
    m = Transcriber(TranscriberConfig(vocab_size=8, d_model=32, n_heads=2, n_encoder_layers=2, n_decoder_layers=1,
                                      dropout=0.0, max_frames=200, max_seq_len=12, pad_id=BLANK)).eval()
    with torch.no_grad():  # sharper distributions than the init's: the candidates differ
        for p in m.parameters():
            p.mul_(3.0)
    return m


@pytest.mark.parametrize("target", [[3], [3, 4], [3, 3], [4, 3, 5], []])
def test_ctc_likelihood_is_the_sum_over_every_path_that_collapses_to_the_text(target):
    g = torch.Generator().manual_seed(len(target))
    S, V = 5, 6
    log_probs = torch.randn(S, V, generator=g, dtype=torch.float64).log_softmax(-1)  # (S, V)
    total = 0.0
    for path in itertools.product(range(V), repeat=S):
        if ctc_collapse(list(path), BLANK) == target:
            total += math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
    got = ctc_log_likelihood(log_probs, S, [target], BLANK)
    assert float(got[0]) == pytest.approx(math.log(total), rel=1e-9)


def test_a_text_longer_than_the_states_allow_has_no_ctc_path():
    log_probs = torch.randn(3, 6).log_softmax(-1)
    assert ctc_log_likelihood(log_probs, 3, [[3, 3, 3]], BLANK)[0] == float("-inf")  # needs 5 states (blanks between)
    assert ctc_log_likelihood(log_probs, 2, [[3, 4, 5]], BLANK)[0] == float("-inf")  # only the first 2 states count


def test_the_attention_likelihood_is_beam_searchs_log_probability():
    m = small()
    cfg = SequenceDecoding(beam=6, length_penalty=0.0, max_len_a=0.0, max_len_b=12)
    checked = 0
    for seed in range(6):
        mel = torch.randn(1, 80, 40, generator=torch.Generator().manual_seed(seed))
        mask = m.source_mask(mel)
        hyps = [h for h in beam_search_nbest(m, mel, mask, BOS, EOS, cfg, 8)[0] if h.finished]  # EOS scored too
        if not hyps:
            continue
        with torch.no_grad():
            got = attention_log_likelihood(m, m.encode(mel, mask), mask, [h.tokens for h in hyps], BOS, EOS,
                                           [BLANK, BOS])
        torch.testing.assert_close(got, torch.tensor([h.logprob for h in hyps]), atol=1e-4, rtol=1e-5)
        checked += len(hyps)
    assert checked >= 3


def _by_hand(m, mel, mask, cfg, lam):
    """The rescored choice, recomputed from the parts."""
    with torch.no_grad():
        memory = m.encode(mel, mask)
        log_probs = m.encoder_ctc_logits(memory).log_softmax(-1)
        ctc_best = [t for t in ctc_greedy(log_probs, mask.sum(1), BLANK)[0] if t not in (BOS, EOS)]
        beams = [h.tokens for h in beam_search_nbest(m, mel, mask, BOS, EOS, cfg, 8)[0]]
        cands = [list(c) for c in dict.fromkeys(map(tuple, [*beams, ctc_best])) if len(c) < 12]  # limit 12, EOS too
        att = attention_log_likelihood(m, memory, mask, cands, BOS, EOS, [BLANK, BOS])
        ctc = ctc_log_likelihood(log_probs[0], int(mask.sum()), cands, BLANK)
    return cands, att, ctc


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_the_choice_is_the_argmax_of_the_mixed_score(lam):
    m = small()
    cfg = SequenceDecoding(beam=4, length_penalty=0.6, max_len_a=0.0, max_len_b=12)
    for seed in range(4):
        mel = torch.randn(1, 80, 30 + 10 * seed, generator=torch.Generator().manual_seed(seed))
        mask = m.source_mask(mel)
        cands, att, ctc = _by_hand(m, mel, mask, cfg, lam)
        score = att if lam == 0 else (1 - lam) * att + lam * ctc
        assert joint_decode(m, mel, mask, BOS, EOS, BLANK, cfg, lam, 8) == [cands[int(score.argmax())]]


def test_the_weights_move_the_choice_and_a_batch_decodes_as_its_rows():
    m = small()
    cfg = SequenceDecoding(beam=4, length_penalty=0.6, max_len_a=0.0, max_len_b=12)
    mels = [torch.randn(1, 80, 40, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    by_att = [joint_decode(m, x, m.source_mask(x), BOS, EOS, BLANK, cfg, 0.0, 8)[0] for x in mels]
    by_ctc = [joint_decode(m, x, m.source_mask(x), BOS, EOS, BLANK, cfg, 1.0, 8)[0] for x in mels]
    assert by_att != by_ctc  # a random model's two readings disagree somewhere
    batch = torch.cat(mels[:3])
    assert joint_decode(m, batch, m.source_mask(batch), BOS, EOS, BLANK, cfg, 1.0, 8) == by_ctc[:3]
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        joint_decode(m, batch, m.source_mask(batch), BOS, EOS, BLANK, cfg, 1.5, 8)


def test_the_nbest_is_sorted_by_the_joint_score_and_its_first_is_the_choice():
    m = small()
    cfg = SequenceDecoding(beam=4, length_penalty=0.6, max_len_a=0.0, max_len_b=12)
    batch = torch.randn(3, 80, 40, generator=torch.Generator().manual_seed(9))
    mask = m.source_mask(batch)
    ranked = joint_nbest(m, batch, mask, BOS, EOS, BLANK, cfg, 0.3, 8)
    assert [r[0]["tokens"] for r in ranked] == joint_decode(m, batch, mask, BOS, EOS, BLANK, cfg, 0.3, 8)
    for row in ranked:
        scores = [h["score"] for h in row]
        assert row[0]["score"] is not None and scores == sorted(scores, reverse=True)
        assert all(len(h["tokens"]) < 12 for h in row)
        for h in row:
            assert h["score"] == pytest.approx(0.7 * h["logprob"] + 0.3 * h["ctc_logprob"], rel=1e-6, abs=1e-5)


def test_candidates_past_the_length_limit_are_left_out():
    m = small()
    cfg = SequenceDecoding(beam=4, length_penalty=0.6, max_len_a=0.0, max_len_b=3)  # at most 2 tokens + EOS
    batch = torch.randn(4, 80, 40, generator=torch.Generator().manual_seed(2))
    for row in joint_nbest(m, batch, m.source_mask(batch), BOS, EOS, BLANK, cfg, 0.3, 8):
        assert all(len(h["tokens"]) < 3 for h in row) or (len(row) == 1 and row[0]["score"] is None)
