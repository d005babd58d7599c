"""The losses the encoder–decoder tasks train with (translation, captioning, and the source -> text tasks after them).

`smoothed_loss` is label-smoothed cross-entropy (Szegedy et al. 2016, Vaswani et al. 2017 §5.4), returned with the
plain NLL beside it: the NLL is what the Trainer logs and what the held-out losses report.
"""

from __future__ import annotations

import torch


def smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Label-smoothed cross-entropy and the plain NLL, both means over targets != -100, and their count.

    loss = (1 - ε)·NLL + ε·mean_v(−log p_v)  (the same as ``F.cross_entropy(label_smoothing=ε)``).
    """
    logp = logits.float().log_softmax(dim=-1).flatten(0, 1)  # (B·T, V)
    t = targets.flatten()  # (B·T,)
    real = t != -100
    n = int(real.sum())
    logp, t = logp[real], t[real]  # (n, V), (n,)
    nll = -logp.gather(1, t[:, None]).squeeze(1).mean()
    if eps == 0.0:
        return nll, nll, n
    return (1.0 - eps) * nll + eps * (-logp.mean(dim=-1).mean()), nll, n


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, tgt_out: torch.Tensor, blank: int, eos: int
             ) -> tuple[torch.Tensor, int]:
    """Connectionist temporal classification (Graves et al. 2006) of per-state logits (B, S, V) against the texts
    of a batch: (Σ over the batch of −log P(text | recording), divided by the batch's output symbols, the count of
    `tgt_out` that is not -100; that count). `lengths` (B,) are the real states of each row; the texts are read
    from `tgt_out` (text + EOS, -100 at padding), EOS and padding dropped. P sums over every path of S symbols that
    collapses to the text when repeats are merged and blanks removed (`torch.nn.functional.ctc_loss`).

    The denominator is what the decoder's cross-entropy averages over (characters + EOS): the trainer weights
    each process's and micro-batch's loss by that count (`loss_terms`), so a sum divided by it is what one
    process computes on the whole batch (2 processes == 1), and a joint loss mixes two means of one unit."""
    import torch.nn.functional as F

    keep = (tgt_out != -100) & (tgt_out != eos)  # (B, T): the characters
    targets = tgt_out[keep]  # (ΣT,) concatenated
    target_lengths = keep.sum(1)  # (B,)
    terms = int((tgt_out != -100).sum())  # characters + EOS: the cross-entropy's terms
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (S, B, V), as ctc_loss takes it
    nll = F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=blank, reduction="sum", zero_infinity=True)
    return nll / max(terms, 1), terms
