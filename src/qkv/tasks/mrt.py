"""Minimum risk training (MRT): fine-tune a translation model on a sentence-level metric, BLEU or chrF++.

Shen et al. 2016, "Minimum Risk Training for Neural Machine Translation" (ACL); Edunov et al. 2018, "Classical
Structured Prediction Losses for Sequence to Sequence Learning" (NAACL); Wieting et al. 2019, "Beyond BLEU:
Training Neural Machine Translation with Semantic Similarity" (ACL).

BLEU is not differentiable in the model's weights, but its expectation under the model is. For each source x of
a batch, with its reference y*:

1. **Candidates** U(x) = {u_1, …, u_n}: n translations by the model being trained — in the loop, without
   gradient, in eval mode, through `qkv.generation.seq2seq`'s decoders. ``method = "sample"`` draws them
   token by token from softmax(logits / τ) (Shen et al.'s sampling); ``"beam"`` takes the n-best list of a
   beam of n (Edunov et al., Wieting et al.). Duplicates are removed, so |U(x)| ≤ n.
2. **Cost** Δ(u, y*) = 1 − m(u, y*) / 100, with m sacrebleu's sentence-level metric:
   - ``"bleu"``: ``BLEU(effective_order=True).sentence_score``, exactly `sacrebleu.sentence_bleu`: 13a
     tokens, mixed case, **exp smoothing** (Chen & Cherry 2014, method 3, mteval's: the k-th n-gram order
     without a match counts 1/2^k matches) and effective order (n-gram orders longer than the hypothesis
     are left out);
   - ``"chrf"``: chrF++, ``CHRF(word_order=2).sentence_score``, exactly `sacrebleu.sentence_chrf(...,
     word_order=2)`: character 6-grams and word bigrams, β = 2.
3. **Sequence log-probability**, with gradient: log p(u|x) = Σ_t log p(u_t | u_<t, x), teacher-forced through
   the model in train mode (the full-vocabulary softmax the token loss uses), EOS included when u ended with it.
4. **Renormalised over the candidates** with sharpness α (Shen et al.'s Q; Edunov et al. use α = 1):

       Q(u|x) = p(u|x)^α / Σ_{u' ∈ U(x)} p(u'|x)^α = softmax over U(x) of α · log p(u|x)

5. **Expected risk** R(x) = Σ_{u ∈ U(x)} Q(u|x) · Δ(u, y*), averaged over the batch's sources (Shen et al. sum
   over sentences; the mean keeps the scale of the per-token loss below whatever the batch size).
6. **Mixed with the token-level loss** of the reference (Edunov et al.'s weighted combination; they found
   λ = 0.3 best and risk alone worse):

       L = (1 − λ) · mean_x R(x) + λ · L_tok

   L_tok is the loss objective "xent" optimises: the label-smoothed cross-entropy, mean over the reference's
   target tokens (ε = train.label_smoothing; Edunov et al.'s TokLS; ε = 0 makes it the NLL).

The gradient of step 5, which tests/unit/tasks/test_mrt.py checks by finite differences:
∂R/∂log p(u) = α · Q(u) · (Δ(u) − R): a candidate that costs less than the expected cost is pushed up, one that
costs more is pushed down, and nothing moves when every candidate costs the same.

Shape legend: B sources, M candidates in the batch (≤ B·n), n the most per source, S source length, T target
length (BOS + tokens), V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU, CHRF
from torch import Tensor, nn

from qkv.generation.seq2seq import SequenceDecoding, beam_search_nbest, max_lengths, sample_decode

Method = Literal["sample", "beam"]
Metric = Literal["bleu", "chrf"]
METRIC_LABEL = {"bleu": "bleu", "chrf": "chrf++"}  # the name in logged metrics (cand_bleu, cand_chrf++)


@dataclass
class MRTConfig:
    """The ``[mrt]`` section of a translation run: used when ``train.objective = "mrt"``."""

    candidates: int = 8  # n: translations per source (Edunov et al.: beam 16; Wieting et al.: 8)
    method: Method = "beam"  # how they are made: "beam" (the n-best of a beam of n) or "sample" (ancestral)
    metric: Metric = "bleu"  # the cost 1 - m/100: sentence BLEU (exp smoothing) or "chrf" (sentence chrF++)
    alpha: float = 1.0  # sharpness α of Q ∝ p^α (Shen et al.: 5e-3 with 100 samples; Edunov et al.: 1)
    nll_weight: float = 0.3  # λ: L = (1 - λ)·risk + λ·token loss (Edunov et al.'s 0.3)
    temperature: float = 1.0  # τ of method "sample" (1: the model's own distribution)
    max_len_a: float = 1.5  # a candidate has at most a · source tokens + b tokens (EOS included)
    max_len_b: int = 10

    def __post_init__(self):
        if self.candidates < 2:
            raise ValueError(f"candidates must be >= 2 (the risk compares candidates), got {self.candidates}")
        if self.method not in get_args(Method):
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(get_args(Method))}")
        if self.metric not in get_args(Metric):
            raise ValueError(f"unknown metric {self.metric!r}; valid: {', '.join(get_args(Metric))}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.nll_weight <= 1.0:
            raise ValueError(f"nll_weight must be in [0, 1], got {self.nll_weight}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.max_len_a < 0 or self.max_len_b < 0:
            raise ValueError(f"max_len_a and max_len_b must be >= 0, got {self.max_len_a} and {self.max_len_b}")


class Candidate(NamedTuple):
    tokens: tuple[int, ...]  # generated ids, without BOS and EOS
    finished: bool  # ended with EOS (False: stopped by the length limit)


# ------------------------------------------------------------------------------------------ 1. candidates
@torch.no_grad()
def candidates(model: nn.Module, src: Tensor, src_mask: Tensor, bos_id: int, eos_id: int, cfg: MRTConfig,
               decode: SequenceDecoding, vocab_size: int | None = None) -> list[list[Candidate]]:
    """U(x) of every source: at most `cfg.candidates` distinct translations each, in the order the decoder gave
    them (beam: best first). src (B, S), src_mask (B, S). The model is decoded in eval mode and left as it was.
    `decode` gives beam search its length penalty; the length limit is [mrt]'s."""
    was_training = model.training
    model.eval()
    n = cfg.candidates
    if cfg.method == "beam":
        beam = replace(decode, beam=n, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b)
        found = [[Candidate(tuple(h.tokens), h.finished) for h in hyps]
                 for hyps in beam_search_nbest(model, src, src_mask, bos_id, eos_id, beam, vocab_size)]
    else:
        limit = max_lengths(src_mask, cfg.max_len_a, cfg.max_len_b, model.config.max_seq_len)
        samples = sample_decode(model, src, src_mask, bos_id, eos_id, n, cfg.temperature, cfg.max_len_a,
                                cfg.max_len_b, vocab_size=vocab_size)
        # a sample as long as its limit stopped there; a shorter one ended with EOS
        found = [[Candidate(tuple(ids), len(ids) < lim) for ids in drawn]
                 for drawn, lim in zip(samples, limit, strict=True)]
    model.train(was_training)
    return [list(dict.fromkeys(us))[:n] for us in found]  # dedupe, keeping the first of each


# ------------------------------------------------------------------------------------------ 2. costs
def sentence_metric(name: Metric) -> Callable[[str, str], float]:
    """(hypothesis, reference) -> sacrebleu's sentence score, 0–100 (see the module docstring)."""
    metric = BLEU(effective_order=True) if name == "bleu" else CHRF(word_order=2)
    return lambda hyp, ref: metric.sentence_score(hyp, [ref]).score


def score(hyps: list[str], refs: list[str], name: Metric) -> tuple[list[float], list[float]]:
    """(m(u, y*), Δ(u, y*) = 1 − m(u, y*) / 100) of each hypothesis against its reference."""
    metric = sentence_metric(name)
    scores = [metric(h, r) for h, r in zip(hyps, refs, strict=True)]
    return scores, [1.0 - s / 100.0 for s in scores]


# ------------------------------------------------------------------------------------------ 3. log p(u|x)
def sequence_logprob(logits: Tensor, targets: Tensor) -> Tensor:
    """log p(u|x) = Σ_t log softmax(logits_t)[u_t] over the targets that are not -100.
    logits (M, T, V), targets (M, T) -> (M,)."""
    M, T = targets.shape
    if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: sum the log-probabilities in fp32
        logits = logits.float()
    token_nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100,
                                reduction="none")  # (M·T,), 0 where the target is -100
    return -token_nll.view(M, T).sum(dim=1)  # (M,)


# ------------------------------------------------------------------------------------------ 4.–5. the risk
def expected_risk(logp: Tensor, cost: Tensor, owner: Tensor, n_sources: int, alpha: float) -> Tensor:
    """R(x) = Σ_u Q(u|x) Δ(u), Q = softmax over x's candidates of α · log p(u|x), for every source.

    logp (M,) with gradient, cost (M,), owner (M,) the source of each candidate, grouped (0, 0, 1, 1, 1, ...)
    -> (B,). Example: logp [0, log 3], cost [1, 0], α = 1 (one source): Q = [1/4, 3/4], R = 0.25."""
    M = logp.size(0)
    starts = torch.searchsorted(owner, torch.arange(n_sources, device=owner.device))  # (B,) first row of each
    slot = torch.arange(M, device=owner.device) - starts[owner]  # (M,) position among its source's candidates
    n = int(slot.max()) + 1
    # a source with fewer than n candidates fills its other slots with score -inf (weight 0) and cost 0
    scores = logp.new_full((n_sources, n), float("-inf")).index_put((owner, slot), alpha * logp)  # (B, n)
    costs = cost.new_zeros((n_sources, n)).index_put((owner, slot), cost)  # (B, n)
    q = scores.softmax(dim=-1)  # (B, n) Q(u|x)
    return (q * costs).sum(dim=-1)  # (B,)


# ------------------------------------------------------------------------------------------ 6. the loss
def unwrap(model: nn.Module) -> nn.Module:
    """The Seq2Seq inside DDP (``.module``) and torch.compile (``._orig_mod``) wrappers: what decoding calls."""
    while True:
        inner = getattr(model, "module", None)
        inner = getattr(model, "_orig_mod", None) if inner is None else inner
        if inner is None:
            return model
        model = inner


def mrt_loss(model: nn.Module, batch: dict, cfg: MRTConfig, tgt_tok, decode: SequenceDecoding,
             token_loss: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, int]]) -> tuple[Tensor, dict]:
    """L = (1 − λ)·mean_x R(x) + λ·L_tok for a training batch (`qkv.data.translation.collate`), and the
    Trainer's info: the reference's token count and NLL, the expected risk, the mean candidate metric and how
    many distinct candidates each source had, as (total, count) running means.

    token_loss(logits, targets) -> (L_tok, NLL, target tokens): the xent objective's loss.
    One teacher-forced forward through `model` (DDP-safe) holds the references and every candidate."""
    src, src_mask, tgt_out = batch["src"], batch["src_mask"], batch["tgt_out"]  # (B, S), (B, S), (B, T_ref)
    B, device = src.size(0), src.device
    pad, bos, eos = tgt_tok.pad_id, tgt_tok.bos_id, tgt_tok.eos_id

    # 1.–2. candidates, decoded and scored against the references (token ids back to text)
    found = candidates(unwrap(model), src, src_mask, bos, eos, cfg, decode, tgt_tok.vocab_size)
    refs = [tgt_tok.decode([t for t in row if t not in (-100, eos)]) for row in tgt_out.tolist()]
    flat = [u for us in found for u in us]
    owner_list = [b for b, us in enumerate(found) for _ in us]
    scores, cost = score([tgt_tok.decode(list(u.tokens)) for u in flat], [refs[b] for b in owner_list], cfg.metric)
    owner = torch.tensor(owner_list, device=device)  # (M,)

    # 3. one forward: the B references, then the M candidates, each after its own source
    full = [[bos, *u.tokens, *([eos] if u.finished else [])] for u in flat]  # BOS + tokens (+ EOS)
    T = max(tgt_out.size(1), max(len(f) - 1 for f in full))
    tgt_in = torch.full((B + len(flat), T), pad, dtype=torch.long, device=device)  # (B + M, T)
    targets = torch.full((B + len(flat), T), -100, dtype=torch.long, device=device)  # (B + M, T)
    tgt_in[:B, : batch["tgt_in"].size(1)] = batch["tgt_in"]
    targets[:B, : tgt_out.size(1)] = tgt_out
    for r, f in enumerate(full, start=B):
        tgt_in[r, : len(f) - 1] = torch.tensor(f[:-1])
        targets[r, : len(f) - 1] = torch.tensor(f[1:])
    rows = torch.cat([torch.arange(B, device=device), owner])  # (B + M,) the source of each row
    logits = model(src[rows], src_mask[rows], tgt_in).logits  # (B + M, T, V)

    # 4.–6. risk of the candidates, token loss of the references, mixed
    tok, nll, n_tok = token_loss(logits[:B], targets[:B])
    logp = sequence_logprob(logits[B:], targets[B:])  # (M,)
    risk = expected_risk(logp, torch.tensor(cost, dtype=logp.dtype, device=device), owner, B, cfg.alpha)  # (B,)
    lam = cfg.nll_weight
    loss = (1.0 - lam) * risk.mean() + lam * tok
    return loss, {"tokens": int(src_mask.sum()) + n_tok, "nll": (nll.item() * n_tok, n_tok),
                  "risk": (risk.sum().item(), B), f"cand_{METRIC_LABEL[cfg.metric]}": (sum(scores), len(scores)),
                  "candidates": (len(flat), B)}


LOGGED = ("risk", "cand_bleu", "cand_chrf++", "candidates")  # info means that evaluations log as train_<name>
