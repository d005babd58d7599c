"""Decoding an encoder–decoder: batched greedy search, batched beam search and batched sampling.

All three run the encoder once per row, fill each decoder layer's cross-attention keys/values once
(on the first step, `Seq2SeqCache`), and feed one new target token per step through the decoder's
self-attention KV cache. Sentences that finish are dropped from the batch (their cache rows with them).
Sampling (`sample_decode`, the candidates of minimum risk training) draws n translations per sentence, each
token from softmax(logits / temperature) over the same allowed ids as greedy search.

Scoring (beam search). A hypothesis y of n generated tokens (EOS included when it has one) scores
``log P(y | x) / lp(n)`` with the length penalty

    gnmt:   lp(n) = ((5 + n) / 6)^α        (Wu et al. 2016, eq. 14)
    simple: lp(n) = n^α                    (α = 1: mean log-probability per token)

and α = 0 meaning the raw log-probability. log P uses log-softmax over the vocabulary after removing
the ids that can never be output (padding and BOS), for greedy and beam alike.

Lengths: a sentence of S source tokens (its EOS included) generates at most
``min(floor(a · S + b), max_seq_len)`` target tokens, EOS included; one that reaches the limit without
EOS ends there. Beam search follows fairseq: EOS is accepted only from the top-`beam` candidates of a
step (so beam 1 is exactly greedy), a sentence is done once it has `beam` finished hypotheses or reaches
its length limit (then its live beams count as finished), and the best finished score wins.

Shape legend: B sentences, K beam, n samples, N = rows in the batch (B·K for beams, B·n for samples), S source
length, V vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

LengthNorm = Literal["gnmt", "simple"]


@dataclass
class SequenceDecoding:
    """How an encoder–decoder turns a source into a target: greedy (beam 1) or beam search, the length
    penalty and limit, the batch. The ``[decode]`` section of translation runs and the defaults of
    `qkv translate` / `qkv eval`. (GPT sampling is `qkv.generation.sampling.TokenSampling`.)"""

    beam: int = 4  # beam size; 1 = greedy
    length_penalty: float = 0.6  # α of the length penalty (0 = raw log-probability)
    length_norm: LengthNorm = "gnmt"  # gnmt: ((5 + n) / 6)^α; simple: n^α
    max_len_a: float = 1.5  # target length limit = a · source length + b
    max_len_b: int = 10
    batch_size: int = 64  # sentences decoded together

    def __post_init__(self):
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {self.length_penalty}")
        if self.length_norm not in get_args(LengthNorm):
            raise ValueError(f"unknown length_norm {self.length_norm!r}; choose one of {get_args(LengthNorm)}")
        if self.max_len_a < 0:
            raise ValueError(f"max_len_a must be >= 0, got {self.max_len_a}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, without BOS and without EOS
    logprob: float  # log P(tokens [+ EOS] | source)
    score: float  # logprob / lp(length): what beam search maximises
    finished: bool  # True if it ended with EOS (False: stopped by the length limit)


def length_penalty(n: int, alpha: float, kind: LengthNorm = "gnmt") -> float:
    """lp(n): ((5 + n) / 6)^α (GNMT) or n^α (simple). Example: length_penalty(7, 0.6) = 2^0.6 ≈ 1.516."""
    if kind == "gnmt":
        return ((5.0 + n) / 6.0) ** alpha
    return float(n) ** alpha


def max_lengths(src_mask: Tensor, a: float, b: int, cap: int) -> list[int]:
    """Per-sentence limit on generated tokens (EOS included): min(floor(a · S + b), cap), at least 1."""
    S = src_mask.sum(dim=1).tolist()  # real source tokens per sentence
    return [max(1, min(cap, int(math.floor(a * s + b)))) for s in S]


def _next_logits(model, memory, src_mask, step_input, cache, banned: list[int], vocab_size: int | None) -> Tensor:
    """The decoder's logits for the next token of every row, (N, V), with `banned` ids and every id
    ≥ `vocab_size` (rows the target tokenizer has no token for) at -inf."""
    logits = model.decode(memory, src_mask, step_input, cache, last_only=True)[:, -1]  # (N, V)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if banned:
        logits[:, banned] = float("-inf")
    if vocab_size is not None and vocab_size < logits.size(-1):
        logits[:, vocab_size:] = float("-inf")
    return logits


def _banned(model, bos_id: int) -> list[int]:
    return sorted({model.config.pad_id, bos_id})


@torch.no_grad()
def greedy_decode(model, src: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, max_len_a: float = 1.5,
                  max_len_b: int = 10, use_cache: bool = True, vocab_size: int | None = None) -> list[list[int]]:
    """Batched greedy search. src (B, S), src_mask (B, S) -> B lists of ids (no BOS, no EOS).

    use_cache=False re-runs the decoder over the whole prefix every step (slow; for checking the cache).
    vocab_size: the target tokenizer's size; ids at or above it are never produced.
    """
    limit = max_lengths(src_mask, max_len_a, max_len_b, model.config.max_seq_len)
    return _token_by_token(model, src, src_mask, bos_id, eos_id, limit, lambda logits: logits.argmax(dim=-1),
                           use_cache, vocab_size)


@torch.no_grad()
def sample_decode(model, src: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, n: int, temperature: float = 1.0,
                  max_len_a: float = 1.5, max_len_b: int = 10, generator: torch.Generator | None = None,
                  vocab_size: int | None = None) -> list[list[list[int]]]:
    """Ancestral sampling: `n` independent translations of each sentence, every token drawn from
    softmax(logits / temperature) (the candidates of minimum risk training, Shen et al. 2016).
    src (B, S), src_mask (B, S) -> B lists of n id lists (no BOS, no EOS). A sample of exactly its sentence's
    length limit (`max_lengths`) ended without EOS; a shorter one ended with EOS.

    generator: the random source (None: torch's global generator, which the Trainer seeds and checkpoints).
    """
    if n < 1 or temperature <= 0:
        raise ValueError(f"sampling needs n >= 1 and temperature > 0, got n={n}, temperature={temperature}")
    src, src_mask = src.repeat_interleave(n, dim=0), src_mask.repeat_interleave(n, dim=0)  # (B·n, S): b owns bn…bn+n-1
    limit = max_lengths(src_mask, max_len_a, max_len_b, model.config.max_seq_len)

    def draw(logits: Tensor) -> Tensor:  # (N, V) -> (N,)
        probs = (logits / temperature).softmax(dim=-1)  # (N, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)

    out = _token_by_token(model, src, src_mask, bos_id, eos_id, limit, draw, True, vocab_size)
    return [out[b * n : (b + 1) * n] for b in range(len(out) // n)]


def _token_by_token(model, src: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, limit: list[int],
                    pick: Callable[[Tensor], Tensor], use_cache: bool, vocab_size: int | None) -> list[list[int]]:
    """One token per row per step, `pick`ed from the next-token logits (N, V) -> ids (N,), until EOS or the
    row's `limit`; finished rows leave the batch. -> B lists of ids (no BOS, no EOS)."""
    B = src.size(0)
    L = max(limit)
    banned = _banned(model, bos_id)
    memory = model.encode(src, src_mask)  # (B, S, C)
    cache = model.new_cache(B, L) if use_cache else None
    seqs = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)  # (N, t + 1): BOS + generated
    rows = list(range(B))  # sentence of each batch row
    out: list[list[int]] = [[] for _ in range(B)]
    for t in range(L):
        step_input = seqs[:, -1:] if use_cache else seqs  # (N, 1) or (N, t + 1)
        nxt = pick(_next_logits(model, memory, src_mask, step_input, cache, banned, vocab_size))  # (N,)
        keep = []
        for r, (sent, tok) in enumerate(zip(rows, nxt.tolist(), strict=True)):
            if tok == eos_id:
                continue
            out[sent].append(tok)
            if t + 1 < limit[sent]:
                keep.append(r)
        if not keep:
            break
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)  # (N, t + 2)
        if len(keep) < len(rows):  # drop finished sentences from every batched tensor
            index = torch.tensor(keep, device=src.device)
            seqs, memory, src_mask = seqs[index], memory[index], src_mask[index]
            if cache is not None:
                cache.reorder(index)
            rows = [rows[r] for r in keep]
    return out


@torch.no_grad()
def beam_search(model, src: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, cfg: SequenceDecoding,
                vocab_size: int | None = None) -> list[Hypothesis]:
    """Batched beam search. src (B, S), src_mask (B, S) -> the best `Hypothesis` of each sentence.

    vocab_size: the target tokenizer's size; ids at or above it are never produced."""
    return [hyps[0] for hyps in beam_search_nbest(model, src, src_mask, bos_id, eos_id, cfg, vocab_size)]


@torch.no_grad()
def beam_search_nbest(model, src: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, cfg: SequenceDecoding,
                      vocab_size: int | None = None) -> list[list[Hypothesis]]:
    """Batched beam search -> every finished `Hypothesis` of each sentence, best score first (the n-best
    list; at least one). EOS counts only from the top `beam` candidates of a step (fairseq), and a sentence is
    done once `beam` hypotheses have finished and no live beam scores above the `beam`-th of them at its current
    length (Hugging Face's rule; fairseq stops at `beam` finished, which let a character model's junk beams,
    ending one letter in, beat the word still being spelled)."""
    B, K, device = src.size(0), cfg.beam, src.device
    limit = max_lengths(src_mask, cfg.max_len_a, cfg.max_len_b, model.config.max_seq_len)
    L = max(limit)
    banned = _banned(model, bos_id)
    lp = lambda n: length_penalty(n, cfg.length_penalty, cfg.length_norm)  # noqa: E731

    memory = model.encode(src, src_mask).repeat_interleave(K, dim=0)  # (B·K, S, C): sentence b owns rows bK…bK+K-1
    src_mask = src_mask.repeat_interleave(K, dim=0)  # (B·K, S)
    cache = model.new_cache(B * K, L)
    scores = torch.full((B, K), float("-inf"), device=device, dtype=torch.float64)  # summed in double
    scores[:, 0] = 0.0  # all beams start identical: let only the first one expand on step 1
    seqs = torch.empty((B * K, 0), dtype=torch.long, device=device)  # generated ids so far, (N, t)
    last = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (N, 1)
    active = list(range(B))  # sentence of each block of K rows
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for t in range(L):
        n = len(active)
        logp = _next_logits(model, memory, src_mask, last, cache, banned, vocab_size).log_softmax(dim=-1)  # (n·K, V)
        V = logp.size(-1)
        cand = (scores[:, :, None] + logp.view(n, K, V).double()).view(n, K * V)  # (n, K·V) log-prob of extensions
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=-1)  # (n, 2K)
        top_scores, top_beam, top_tok = top_scores.tolist(), (top_idx // V).tolist(), (top_idx % V).tolist()
        n_gen = t + 1  # tokens generated by every hypothesis after this step
        seq_list = seqs.tolist()

        next_rows, next_tok, next_scores, next_active = [], [], [], []
        for i, sent in enumerate(active):
            chosen = []  # (beam, token, total log-prob) of the live continuations
            for rank, (s, beam, tok) in enumerate(zip(top_scores[i], top_beam[i], top_tok[i], strict=True)):
                if s == float("-inf"):
                    break
                if tok == eos_id:
                    if rank < K:  # EOS only from the top K (fairseq), so beam 1 == greedy
                        finished[sent].append(Hypothesis(seq_list[i * K + beam], s, s / lp(n_gen), True))
                    continue
                chosen.append((beam, tok, s))
                if len(chosen) == K:
                    break
            if n_gen >= limit[sent]:  # length limit: live beams end here, without EOS
                for beam, tok, s in chosen:
                    finished[sent].append(Hypothesis(seq_list[i * K + beam] + [tok], s, s / lp(n_gen), False))
                continue
            if not chosen:
                continue
            if len(finished[sent]) >= K:  # done unless a live beam still scores above the K-th finished one
                kth = sorted((h.score for h in finished[sent]), reverse=True)[K - 1]
                if chosen[0][2] / lp(n_gen) <= kth:  # chosen[0]: the best live beam (scores only fall with α = 0)
                    continue
            chosen += [(0, model.config.pad_id, float("-inf"))] * (K - len(chosen))  # dead slots
            next_active.append(sent)
            for beam, tok, s in chosen:
                next_rows.append(i * K + beam)
                next_tok.append(tok)
                next_scores.append(s)
        if not next_active:
            break
        index = torch.tensor(next_rows, device=device)  # (n'·K,) rows the new beams continue
        cache.reorder(index)
        memory, src_mask = memory[index], src_mask[index]
        last = torch.tensor(next_tok, device=device)[:, None]  # (n'·K, 1)
        seqs = torch.cat([seqs[index], last], dim=1)  # (n'·K, t + 1)
        scores = torch.tensor(next_scores, device=device, dtype=torch.float64).view(len(next_active), K)
        active = next_active
    return [sorted(f, key=lambda h: h.score, reverse=True) for f in finished]  # stable: ties keep their order


def decode_batch(model, src: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, cfg: SequenceDecoding,
                 vocab_size: int | None = None) -> list[list[int]]:
    """Greedy when cfg.beam == 1, else beam search: B lists of ids (no BOS, no EOS)."""
    if cfg.beam == 1:
        return greedy_decode(model, src, src_mask, bos_id, eos_id, cfg.max_len_a, cfg.max_len_b,
                             vocab_size=vocab_size)
    return [h.tokens for h in beam_search(model, src, src_mask, bos_id, eos_id, cfg, vocab_size)]


def translate_ids(model, sources: list[list[int]], bos_id: int, eos_id: int, cfg: SequenceDecoding,
                  vocab_size: int | None = None) -> list[list[int]]:
    """Decode source id lists (each ending with EOS, each ≤ max_seq_len) in length-sorted batches;
    results come back in input order. vocab_size: the target tokenizer's size (see `greedy_decode`)."""
    if not sources:
        return []
    device = model.lm_head.weight.device
    pad = model.config.pad_id
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        S = max(len(sources[i]) for i in idx)
        src = torch.full((len(idx), S), pad, dtype=torch.long)
        for r, i in enumerate(idx):
            src[r, : len(sources[i])] = torch.tensor(sources[i])
        lengths = torch.tensor([len(sources[i]) for i in idx])
        src_mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
        for i, ids in zip(idx, decode_batch(model, src.to(device), src_mask.to(device), bos_id, eos_id, cfg,
                                            vocab_size), strict=True):
            out[i] = ids
    return out


@torch.no_grad()
def translate_lines(model, src_tok, tgt_tok, lines: list[str], cfg: SequenceDecoding) -> tuple[list[str], int]:
    """Translate source sentences -> (detokenized translations in input order, sources cut to the context)."""
    from qkv.data.translation import source_ids, special_ids

    was_training = model.training
    model.eval()
    _, bos, eos = special_ids(tgt_tok)
    srcs, cut = source_ids(src_tok, lines, model.config.max_seq_len)
    out = [tgt_tok.decode(ids) for ids in translate_ids(model, srcs, bos, eos, cfg, tgt_tok.vocab_size)]
    model.train(was_training)
    return out, cut


@torch.no_grad()
def translate_nbest(model, src_tok, tgt_tok, text: str, cfg: SequenceDecoding, n: int) -> list[dict]:
    """The `n` best translations of one sentence (`nbest`). A source longer than the context: QKVError."""
    from qkv.data.translation import source_ids
    from qkv.errors import QKVError

    if not text.strip():
        raise QKVError("the source sentence is empty")
    ctx = model.config.max_seq_len
    (ids,), cut = source_ids(src_tok, [text.strip()], ctx)
    if cut:
        raise QKVError(f"the source is {len(src_tok.encode(text.strip())) + 1} tokens with its EOS; the model's "
                       f"context is {ctx}")
    src = torch.tensor([ids], device=model.lm_head.weight.device)  # (1, S)
    return nbest(model, src, torch.ones_like(src, dtype=torch.bool), tgt_tok, cfg, n)


@torch.no_grad()
def nbest(model, src: Tensor, src_mask: Tensor, tgt_tok, cfg: SequenceDecoding, n: int) -> list[dict]:
    """The `n` best outputs for one source (src (1, S) ids or (1, ...) an image, its memory mask (1, S)) by beam
    search (greedy when cfg.beam == 1: one entry), best first: ``{"text", "tokens", "score", "logprob",
    "finished"}``."""
    from qkv.data.translation import special_ids
    from qkv.errors import QKVError

    if n < 1:
        raise QKVError(f"n must be >= 1, got {n}")
    was_training = model.training
    model.eval()
    _, bos, eos = special_ids(tgt_tok)
    if cfg.beam == 1:  # greedy keeps no scores: one entry, scored as None
        (out,) = greedy_decode(model, src, src_mask, bos, eos, cfg.max_len_a, cfg.max_len_b,
                               vocab_size=tgt_tok.vocab_size)
        limit = max_lengths(src_mask, cfg.max_len_a, cfg.max_len_b, model.config.max_seq_len)[0]
        found = [{"tokens": out, "score": None, "logprob": None, "finished": len(out) < limit}]
    else:
        (hyps,) = beam_search_nbest(model, src, src_mask, bos, eos, cfg, tgt_tok.vocab_size)
        found = [{"tokens": h.tokens, "score": h.score, "logprob": h.logprob, "finished": h.finished} for h in hyps]
    model.train(was_training)
    return [{"text": tgt_tok.decode(h["tokens"]), **h} for h in found[:n]]
