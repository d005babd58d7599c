"""Joint CTC–attention decoding, by rescoring: the attention decoder proposes transcripts, the CTC head of the same
encoder helps choose among them (Watanabe et al. 2017, "Hybrid CTC/attention", §3.3's rescoring).

A transcriber trained jointly (`train.ctc_weight` > 0) has two readings of one recording: the decoder's, which
writes one character at a time and reads the recording through cross-attention, and the CTC head's, one
distribution per 20 ms encoder state. They fail differently. The attention decoder can lose its place in a long
recording: it skips a word, or hears one twice, and nothing in its score forbids that. CTC cannot: every
character must be spent on states in order, so a skipped or repeated word costs the path's probability. CTC alone
spells worse (each state decides on its own); the decoder spells well. Rescoring takes the best of both:

    candidates(x) = the beam's finished hypotheses (the greedy transcript with beam 1) ∪ the CTC greedy transcript
    score(y)      = (1 − λ) · log P_att(y + EOS | x)  +  λ · log P_ctc(y | x)
    ŷ             = argmax over the candidates

(a candidate longer than the decoding's length limit, its EOS included, is not a candidate).
log P_att is the teacher-forced sum of the decoder's log-probabilities (padding and BOS removed, as decoding
does); log P_ctc sums over every alignment of y to the states (`torch.nn.functional.ctc_loss`, the forward
algorithm), -inf where y is longer than the states allow. λ = 0 is the decoder's own choice among the candidates.
ESPnet's one-pass decoding scores CTC prefixes inside the beam search instead; rescoring is its simplest form, and
needs no change to the search.

Shape legend: B recordings, S encoder states, C model width, V vocabulary, N candidates of one recording, T their
longest length + 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.generation.ctc import ctc_greedy
from qkv.generation.seq2seq import SequenceDecoding, beam_search_nbest, greedy_decode, max_lengths


def ctc_log_likelihood(log_probs: Tensor, n_states: int, candidates: list[list[int]], blank: int) -> Tensor:
    """log P_ctc(y | x) of each candidate: log-probabilities (S, V) of one recording, its real states -> (N,)."""
    N = len(candidates)
    targets = torch.tensor([t for c in candidates for t in c], dtype=torch.long)  # (Σ lengths,) concatenated
    lp = log_probs[:n_states, None].expand(-1, N, -1)  # (S', N, V): ctc_loss reads time first
    nll = F.ctc_loss(lp, targets, torch.full((N,), n_states, dtype=torch.long),
                     torch.tensor([len(c) for c in candidates], dtype=torch.long), blank=blank, reduction="none",
                     zero_infinity=False)  # (N,), inf where no alignment fits
    return -nll


def attention_log_likelihood(model, memory: Tensor, src_mask: Tensor, candidates: list[list[int]], bos_id: int,
                             eos_id: int, banned: list[int]) -> Tensor:
    """log P_att(y + EOS | x) of each candidate, teacher-forced: the memory (1, S, C) of one recording -> (N,)."""
    N, T = len(candidates), max(len(c) for c in candidates) + 1
    tgt_in = torch.full((N, T), bos_id, dtype=torch.long, device=memory.device)  # (N, T): BOS + y, padded
    tgt_out = torch.full((N, T), -100, dtype=torch.long, device=memory.device)  # (N, T): y + EOS, -100 after
    for i, c in enumerate(candidates):
        tgt_in[i, 1 : len(c) + 1] = torch.tensor(c, dtype=torch.long)
        tgt_out[i, : len(c) + 1] = torch.tensor([*c, eos_id], dtype=torch.long)
    logits = model.decode(memory.expand(N, -1, -1), src_mask.expand(N, -1), tgt_in).float()  # (N, T, V)
    logits[..., banned] = float("-inf")  # the ids decoding never outputs
    logp = logits.log_softmax(-1).gather(-1, tgt_out.clamp(min=0)[..., None])[..., 0]  # (N, T)
    return torch.where(tgt_out != -100, logp, 0.0).sum(dim=1)  # (N,): padding read a banned id (-inf); not summed


@torch.no_grad()
def joint_nbest(model, mel: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, blank: int, cfg: SequenceDecoding,
                ctc_weight: float, vocab_size: int | None = None) -> list[list[dict]]:
    """Per recording of the batch (mel (B, M, F), memory mask (B, S)): its candidates, best joint score first, each
    ``{"tokens", "score", "logprob", "ctc_logprob"}`` (the joint score, log P_att(y + EOS | x), log P_ctc(y | x)).
    The model is a jointly trained transcriber (`encoder_ctc_logits`)."""
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    memory = model.encode(mel, src_mask)  # (B, S, C)
    log_probs = model.encoder_ctc_logits(memory).float().log_softmax(-1)  # (B, S, V)
    lengths = src_mask.sum(dim=1)  # (B,) real states
    from_ctc = [[t for t in y if t not in (bos_id, eos_id)] for y in ctc_greedy(log_probs, lengths, blank)]
    if cfg.beam == 1:
        proposals = [[y] for y in greedy_decode(model, mel, src_mask, bos_id, eos_id, cfg.max_len_a, cfg.max_len_b,
                                                vocab_size=vocab_size)]
    else:
        proposals = [[h.tokens for h in hyps]
                     for hyps in beam_search_nbest(model, mel, src_mask, bos_id, eos_id, cfg, vocab_size)]
    banned = sorted({model.config.pad_id, bos_id})
    limit = max_lengths(src_mask, cfg.max_len_a, cfg.max_len_b, model.config.max_seq_len)
    out = []
    for b in range(mel.size(0)):
        unique = dict.fromkeys(map(tuple, [*proposals[b], from_ctc[b]]))  # in order, each once
        # a transcript has at most limit[b] tokens with its EOS (the decoding's length limit, within the context)
        candidates = [list(c) for c in unique if len(c) < limit[b]]
        if not candidates:  # every one ran to the limit: the decoder's own first choice stands
            out.append([{"tokens": proposals[b][0], "score": None, "logprob": None, "ctc_logprob": None}])
            continue
        att = attention_log_likelihood(model, memory[b : b + 1], src_mask[b : b + 1], candidates, bos_id, eos_id,
                                       banned)
        ctc = ctc_log_likelihood(log_probs[b], int(lengths[b]), candidates, blank)
        score = (1 - ctc_weight) * att + ctc_weight * ctc if ctc_weight > 0 else att  # λ = 0: no -inf from CTC
        order = sorted(range(len(candidates)), key=lambda i: -float(score[i]))  # stable: ties keep the search's order
        out.append([{"tokens": candidates[i], "score": float(score[i]), "logprob": float(att[i]),
                     "ctc_logprob": float(ctc[i])} for i in order])
    return out


def joint_decode(model, mel: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, blank: int,
                 cfg: SequenceDecoding, ctc_weight: float, vocab_size: int | None = None) -> list[list[int]]:
    """Per recording of the batch: the ids of the candidate with the best joint score (no BOS, no EOS)."""
    return [ranked[0]["tokens"] for ranked in joint_nbest(model, mel, src_mask, bos_id, eos_id, blank, cfg,
                                                          ctc_weight, vocab_size)]
