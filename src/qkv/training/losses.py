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
