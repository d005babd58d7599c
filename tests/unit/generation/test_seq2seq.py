"""Seq2seq decoding: the KV/cross-attention cache, greedy search, beam search and sampling.

- cached decoding gives the logits of a full forward, step by step (and after beam reordering);
- greedy with and without the cache give the same tokens; beam 1 gives greedy's tokens;
- on a tiny random model (3 output symbols + EOS, at most 4 generated tokens) a beam wide enough to keep
  every candidate finds the best sequence of an exhaustive search under the same scoring function, for
  each length penalty; a narrow beam never beats it;
- sampling draws each token from softmax(logits / temperature) over the allowed ids, is greedy search as the
  temperature goes to 0, and repeats itself with the same generator seed.

Seeds and weight scales of the random models are chosen (and asserted) so the cases are not trivial:
some outputs end with EOS and some at the length limit, the optimum has several lengths, and a 2-beam
misses it at times.
"""

import itertools
import math

import pytest
import torch

from qkv.generation.seq2seq import (
    SequenceDecoding,
    beam_search,
    greedy_decode,
    length_penalty,
    max_lengths,
    sample_decode,
    translate_ids,
)
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig

PAD, BOS, EOS = 0, 1, 2


def random_model(vocab: int = 23, seed: int = 0, head_std: float = 0.5, weight_std: float | None = None,
                 max_seq_len: int = 24, dtype=torch.float32) -> Seq2Seq:
    """A random model; weight_std re-draws every other matrix (larger weights: the source matters more)."""
    torch.manual_seed(seed)
    m = Seq2Seq(Seq2SeqConfig(vocab_size=vocab, max_seq_len=max_seq_len, d_model=32, n_encoder_layers=2,
                              n_decoder_layers=2, n_heads=4, dropout=0.0, tie_embeddings=False))
    with torch.no_grad():
        if weight_std is not None:
            for p in m.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, weight_std)
        m.lm_head.weight.normal_(0.0, head_std)
    return m.to(dtype).eval()


def _src(lengths, vocab=23, seed=0):
    S = max(lengths)
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (len(lengths), S), generator=g)
    mask = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]
    for i, n in enumerate(lengths):
        src[i, n - 1] = EOS
    return src.masked_fill(~mask, PAD), mask


# ------------------------------------------------------------------------------------------------ cache
def test_cached_decoding_equals_full_forward():
    m = random_model()
    src, mask = _src([7, 4, 2])
    tgt = torch.cat([torch.full((3, 1), BOS), torch.randint(3, 23, (3, 8))], dim=1)  # (3, 9)
    with torch.no_grad():
        full = m(src, mask, tgt)[0]  # (3, 9, V)
        memory = m.encode(src, mask)
        cache = m.new_cache(3, 9)
        steps = [m.decode(memory, mask, tgt[:, t : t + 1], cache) for t in range(9)]
    assert cache.length == 9 and all(c.static for c in cache.cross)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cached_decoding_with_a_chunked_prefix_and_reorder():
    """Prefill 4 positions at once, reorder rows (as beam search does), then continue one by one."""
    m = random_model()
    src, mask = _src([6, 3])
    tgt = torch.cat([torch.full((2, 1), BOS), torch.randint(3, 23, (2, 6))], dim=1)  # (2, 7)
    index = torch.tensor([1, 1, 0])  # row 0 <- sentence 1, row 1 <- sentence 1, row 2 <- sentence 0
    with torch.no_grad():
        memory = m.encode(src, mask)
        cache = m.new_cache(2, 7)
        m.decode(memory, mask, tgt[:, :4], cache)
        cache.reorder(index)
        m_mask, m_tgt = mask[index], tgt[index]
        steps = [m.decode(None, m_mask, m_tgt[:, t : t + 1], cache) for t in range(4, 7)]  # memory unused now
        full = m(src[index], m_mask, m_tgt)[0]
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 4:], atol=1e-5, rtol=1e-5)


def test_cache_overflow_is_an_error():
    m = random_model()
    src, mask = _src([3])
    cache = m.new_cache(1, 2)
    memory = m.encode(src, mask)
    m.decode(memory, mask, torch.tensor([[BOS, 5]]), cache)
    with pytest.raises(ValueError, match="cache full"):
        m.decode(memory, mask, torch.tensor([[6]]), cache)


# ------------------------------------------------------------------------------------------------ greedy
def _reference_greedy(m, src_row, mask_row, limit):
    """Greedy by re-running the full model each step, one sentence at a time."""
    S = int(mask_row.sum())
    src, mask = src_row[None, :S], mask_row[None, :S]
    seq = [BOS]
    with torch.no_grad():
        for _ in range(limit):
            logits = m(src, mask, torch.tensor([seq]))[0][0, -1].clone()
            logits[[PAD, BOS]] = float("-inf")
            tok = int(logits.argmax())
            if tok == EOS:
                break
            seq.append(tok)
    return seq[1:]


def test_greedy_matches_per_sentence_reference_and_no_cache():
    m = random_model(seed=2)  # a seed where one sentence ends with EOS and the others hit the limit
    src, mask = _src([7, 4, 2, 5])
    out = greedy_decode(m, src, mask, BOS, EOS, max_len_a=1.0, max_len_b=3)
    assert out == greedy_decode(m, src, mask, BOS, EOS, max_len_a=1.0, max_len_b=3, use_cache=False)
    limits = max_lengths(mask, 1.0, 3, m.config.max_seq_len)
    assert limits == [10, 7, 5, 8]
    for i in range(4):
        assert out[i] == _reference_greedy(m, src[i], mask[i], limits[i])
    # the setup exercises both endings: some sentences stop with EOS, some at the length limit
    assert any(len(o) < lim for o, lim in zip(out, limits, strict=True))
    assert any(len(o) == lim for o, lim in zip(out, limits, strict=True))
    assert all(PAD not in o and BOS not in o and EOS not in o for o in out)


@pytest.mark.parametrize("vocab,seed", [(23, 0), (23, 2), (8, 0), (8, 2), (6, 1)])
def test_beam_one_is_greedy(vocab, seed):
    m = random_model(vocab=vocab, seed=seed, weight_std=0.2)
    src, mask = _src([7, 4, 2, 5, 6], vocab=vocab, seed=seed)
    cfg = SequenceDecoding(beam=1, max_len_a=1.0, max_len_b=3, length_penalty=1.0)
    greedy = greedy_decode(m, src, mask, BOS, EOS, cfg.max_len_a, cfg.max_len_b)
    assert [h.tokens for h in beam_search(m, src, mask, BOS, EOS, cfg)] == greedy


# ------------------------------------------------------------------------------------------------ beam
def test_length_penalty_values():
    assert length_penalty(7, 0.6, "gnmt") == pytest.approx(2**0.6)
    assert length_penalty(1, 1.0, "gnmt") == pytest.approx(1.0)
    assert length_penalty(4, 1.0, "simple") == 4.0
    assert length_penalty(9, 0.0, "simple") == 1.0


def _score(m, src, mask, tokens, finished, cfg) -> tuple[float, float]:
    """(log P, normalized score) of one candidate, from one full forward (independent of the decoders)."""
    seq = [BOS] + tokens
    targets = tokens + ([EOS] if finished else [])
    with torch.no_grad():
        logits = m(src, mask, torch.tensor([seq]))[0][0, : len(targets)].clone()  # (n, V)
    logits[:, [PAD, BOS]] = float("-inf")
    logp = logits.log_softmax(-1)[torch.arange(len(targets)), torch.tensor(targets)].sum().item()
    n = len(targets)
    lp = ((5 + n) / 6) ** cfg.length_penalty if cfg.length_norm == "gnmt" else n**cfg.length_penalty
    return logp, logp / lp


def _exhaustive(m, src, mask, symbols, max_len, cfg):
    """Every output: k < max_len symbols then EOS, or max_len symbols cut by the limit. Returns the best."""
    best = None
    for k in range(max_len + 1):
        for toks in itertools.product(symbols, repeat=k):
            finished = k < max_len
            logp, score = _score(m, src, mask, list(toks), finished, cfg)
            if best is None or score > best[2]:
                best = (list(toks), logp, score)
    return best


def test_wide_beam_finds_the_exhaustive_optimum():
    V, symbols, max_len = 6, [3, 4, 5], 4  # outputs: 3 symbols + EOS; 1 + 3 + 9 + 27 + 81 = 121 candidates
    m = random_model(vocab=V, seed=1, head_std=0.3, weight_std=0.2, dtype=torch.float64)
    src, mask = _src([5, 3, 4, 2], vocab=V, seed=7)
    lengths_seen, narrow_misses = set(), 0
    for norm, alpha in [("gnmt", 0.6), ("simple", 1.0), ("simple", 0.0), ("gnmt", 2.0)]:
        # 128 ≥ 27 live prefixes × 4 continuations: nothing is ever pruned, EOS always ranks in the top `beam`
        cfg = SequenceDecoding(beam=128, length_penalty=alpha, length_norm=norm, max_len_a=0.0, max_len_b=max_len)
        narrow = SequenceDecoding(beam=2, length_penalty=alpha, length_norm=norm, max_len_a=0.0, max_len_b=max_len)
        wide, small = beam_search(m, src, mask, BOS, EOS, cfg), beam_search(m, src, mask, BOS, EOS, narrow)
        greedy = greedy_decode(m, src, mask, BOS, EOS, 0.0, max_len)
        for i in range(4):
            S = int(mask[i].sum())
            s_i, m_i = src[i : i + 1, :S], mask[i : i + 1, :S]
            tokens, logp, score = _exhaustive(m, s_i, m_i, symbols, max_len, cfg)
            assert wide[i].tokens == tokens, (norm, alpha, i)
            assert wide[i].finished == (len(tokens) < max_len)
            assert wide[i].logprob == pytest.approx(logp, abs=1e-9)
            assert wide[i].score == pytest.approx(score, abs=1e-9)
            # a narrow beam never beats the optimum, and its reported score is the true score of its output
            assert small[i].score <= score + 1e-9
            assert small[i].score == pytest.approx(_score(m, s_i, m_i, small[i].tokens, small[i].finished, narrow)[1])
            assert _score(m, s_i, m_i, greedy[i], len(greedy[i]) < max_len, cfg)[1] <= score + 1e-9
            lengths_seen.add(len(tokens))
            narrow_misses += small[i].tokens != tokens
    # the case is not trivial: optima of several lengths, and a 2-beam misses some of them
    assert len(lengths_seen) > 1 and narrow_misses > 0


def test_beam_improves_on_greedy_somewhere():
    """Over a batch of random sentences, beam 8 finds a strictly better raw log-probability than greedy at
    least once (and never a worse one: with α = 0 the greedy path is among what beam search could keep)."""
    m = random_model(vocab=12, seed=5, head_std=0.2, dtype=torch.float64)
    src, mask = _src([6, 5, 4, 3, 6, 5, 4, 3], vocab=12, seed=11)
    cfg = SequenceDecoding(beam=8, length_penalty=0.0, max_len_a=0.0, max_len_b=5)
    beams = beam_search(m, src, mask, BOS, EOS, cfg)
    greedy = greedy_decode(m, src, mask, BOS, EOS, 0.0, 5)
    better = 0
    for i, (b, g) in enumerate(zip(beams, greedy, strict=True)):
        S = int(mask[i].sum())
        g_logp = _score(m, src[i : i + 1, :S], mask[i : i + 1, :S], g, len(g) < 5, cfg)[0]
        assert b.logprob >= g_logp - 1e-9
        better += b.logprob > g_logp + 1e-6
    assert better >= 1


class Scripted:
    """A stand-in decoder whose next-token distribution is a function of the prefix (`probs`): what beam search
    sees of a model, written out by hand. Its cache holds each row's prefix."""

    class Cache:
        def __init__(self, n):
            self.rows = [[] for _ in range(n)]

        def reorder(self, index):
            self.rows = [list(self.rows[i]) for i in index.tolist()]

    def __init__(self, probs, vocab=7):
        from types import SimpleNamespace

        self.probs, self.vocab = probs, vocab
        self.config = SimpleNamespace(pad_id=PAD, max_seq_len=16)

    def encode(self, src, src_mask):
        return torch.zeros(src.size(0), src.size(1), 1)  # (B, S, 1): the source plays no part

    def new_cache(self, n, length):
        return Scripted.Cache(n)

    def decode(self, memory, src_mask, step_input, cache, last_only=True):
        out = torch.full((step_input.size(0), 1, self.vocab), -1e9)  # (N, 1, V)
        for r, tok in enumerate(step_input[:, -1].tolist()):
            if tok != BOS:
                cache.rows[r].append(tok)
            for t, p in self.probs(cache.rows[r]).items():
                out[r, 0, t] = math.log(p)
        return out


def test_beam_search_does_not_stop_while_a_live_beam_beats_what_has_finished():
    """A character model's case (a speech run: "seven" under greedy, "five" under beam 4): the junk beams of one
    unlikely first letter each end at once (EOS ranks in the top K), so K hypotheses finish at log P ≈ -3.4 while
    the likely word ("a a a", log P ≈ -0.3) is still being spelled. Stopping at K finished returned junk, worse
    than greedy; the search goes on while the best live beam scores above the K-th finished one."""
    A, B_, C, D = 3, 4, 5, 6

    def probs(prefix):
        if not prefix or (all(t == A for t in prefix) and len(prefix) < 3):
            return {A: 0.91, B_: 0.03, C: 0.03, D: 0.02, EOS: 0.01}
        return {EOS: 0.97, A: 0.01, B_: 0.01, C: 0.01}  # "a a a" is complete; any other letter ends the word

    m = Scripted(probs)
    src, mask = torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool)
    greedy = greedy_decode(m, src, mask, BOS, EOS, 0.0, 8)
    assert greedy == [[A, A, A]]
    for beam in (2, 4, 6):
        for alpha in (0.0, 0.6):
            cfg = SequenceDecoding(beam=beam, length_penalty=alpha, max_len_a=0.0, max_len_b=8)
            best = beam_search(m, src, mask, BOS, EOS, cfg)[0]
            assert best.tokens == [A, A, A], (beam, alpha, best)
            assert best.logprob == pytest.approx(3 * math.log(0.91) + math.log(0.97), abs=1e-5)  # fp32 logits


def test_translate_ids_keeps_input_order_across_batches():
    m = random_model()
    src, mask = _src([7, 2, 5, 3, 6])
    sources = [src[i, : int(mask[i].sum())].tolist() for i in range(5)]
    for beam in (1, 3):
        cfg = SequenceDecoding(beam=beam, max_len_a=1.0, max_len_b=2, batch_size=2)
        batched = translate_ids(m, sources, BOS, EOS, cfg)
        one_by_one = [translate_ids(m, [s], BOS, EOS, cfg)[0] for s in sources]
        assert batched == one_by_one
    assert translate_ids(m, [], BOS, EOS, SequenceDecoding()) == []


def test_decode_config_validation():
    for kw in (dict(beam=0), dict(length_penalty=-1.0), dict(length_norm="avg"), dict(batch_size=0),
               dict(max_len_a=-1.0)):
        with pytest.raises(ValueError):
            SequenceDecoding(**kw)


def test_max_lengths_cap_at_context():
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 3:] = False
    assert max_lengths(mask, 2.0, 5, cap=12) == [12, 11]
    assert max_lengths(mask, 0.0, 0, cap=12) == [1, 1]
    assert math.floor(1.5 * 3 + 1) == max_lengths(mask, 1.5, 1, cap=100)[1]


def test_the_n_best_list_is_every_finished_hypothesis_best_first():
    """beam_search_nbest: sorted by score, its head is beam_search's answer, each entry scores what `_score` says."""
    from qkv.generation.seq2seq import beam_search_nbest

    m = random_model(vocab=12, seed=5, head_std=0.2, dtype=torch.float64)
    src, mask = _src([6, 5, 4], vocab=12, seed=11)
    cfg = SequenceDecoding(beam=4, length_penalty=0.6, max_len_a=0.0, max_len_b=5)
    nbest = beam_search_nbest(m, src, mask, BOS, EOS, cfg)
    best = beam_search(m, src, mask, BOS, EOS, cfg)
    assert len(nbest) == 3 and any(len(h) > 1 for h in nbest)
    for i, hyps in enumerate(nbest):
        assert hyps[0] == best[i]
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)  # no hypothesis twice
        S = int(mask[i].sum())
        for h in hyps:
            logp, score = _score(m, src[i : i + 1, :S], mask[i : i + 1, :S], h.tokens, h.finished, cfg)
            assert math.isclose(h.logprob, logp, abs_tol=1e-9) and math.isclose(h.score, score, abs_tol=1e-9)


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_draws_the_first_token_from_the_tempered_softmax(temperature):
    """One generated token per sample (limit 1): 4,000 draws match softmax(logits / T) without PAD and BOS
    (EOS gives an empty sample) within 0.03 per token; the model is random with 8 ids, so the mass is spread."""
    m = random_model(vocab=8, seed=1, head_std=0.2)
    src, mask = _src([5], vocab=8)
    n = 4000
    (samples,) = sample_decode(m, src, mask, BOS, EOS, n, temperature, max_len_a=0.0, max_len_b=1,
                               generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = m(src, mask, torch.tensor([[BOS]]))[0][0, -1]
    logits[[PAD, BOS]] = float("-inf")
    expected = (logits / temperature).softmax(-1)
    counts = torch.zeros(8)
    for ids in samples:
        counts[ids[0] if ids else EOS] += 1
    assert all(len(ids) <= 1 for ids in samples)
    assert counts[PAD] == counts[BOS] == 0
    assert expected.max() < 0.6 and (expected > 0.05).sum() >= 4  # not a near-greedy case
    torch.testing.assert_close(counts / n, expected, rtol=0, atol=0.03)


def test_sampling_at_a_tiny_temperature_is_greedy_and_a_seed_repeats_itself():
    m = random_model(seed=2)
    src, mask = _src([7, 4, 2, 5])
    greedy = greedy_decode(m, src, mask, BOS, EOS, max_len_a=1.0, max_len_b=3)
    cold = sample_decode(m, src, mask, BOS, EOS, 3, 1e-4, 1.0, 3, generator=torch.Generator().manual_seed(0))
    assert cold == [[g] * 3 for g in greedy]
    draw = lambda seed: sample_decode(m, src, mask, BOS, EOS, 3, 1.0, 1.0, 3,  # noqa: E731
                                      generator=torch.Generator().manual_seed(seed))
    first = draw(0)
    assert first == draw(0) and first != draw(1)
    limits = max_lengths(mask, 1.0, 3, m.config.max_seq_len)
    assert [len(s) for s in first] == [3] * 4
    assert all(len(ids) <= lim and EOS not in ids and PAD not in ids and BOS not in ids
               for samples, lim in zip(first, limits, strict=True) for ids in samples)
