"""The one batch type: a dict of tensors, with these keys (every task's batch source and loss agree on them).

    key         shape          dtype   meaning                                                      tasks
    idx         (B, T)         long    input token ids                                              lm, chat
    targets     (B, T)         long    next-token ids; -100 where no loss is taken                  lm, chat
    mask        (B, T)         bool    True at real (unpadded) input positions                      chat
    src         (B, S)         long    source token ids (ending with EOS), padded with pad_id       translate
    src_mask    (B, S)         bool    True at real source tokens                                   translate
    tgt_in      (B, T)         long    BOS + target ids, padded with pad_id (decoder input)         translate, cap, sp
    tgt_out     (B, T)         long    target ids + EOS, -100 at padding (decoder targets)          translate, cap, sp
    images      (B, C, H, W)   float   images (or latents) in the model's range                     diffusion, ae,
                                       (B, F, C, H, W) for clips                                    cap
    labels      (B,)           long    class ids (class-conditional diffusion)                      diffusion
    text        (B, L)         long    caption ids, <bos> first, padded (text-conditional)          diffusion
    text_mask   (B, L)         bool    True at real caption tokens                                  diffusion
    t           (B,)           long    diffusion timesteps drawn for these images                   diffusion
    noise       (B, C, H, W)   float   the ε drawn for these images                                 diffusion
    cond_drop   (B,)           bool    images whose condition is dropped (classifier-free guidance) diffusion
    mel         (B, M, F)      float   log-mel frames (10 ms each), zero-padded to an even F        sp
    frames      (B,)           long    real frames of each row                                      sp

(ae: the autoencoder task; cap: captioning, whose images are in [-1, 1]; sp: speech recognition.) A batch source
draws the *global* batch of a step (every process draws the same one) and keeps its own rows, so a run on N
processes sees the batches of a run on one. What a batch holds beyond that is the task's business; `to_device`
moves every tensor in it.
"""

from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor]

# the keys a DiT takes as its condition, in the order of its forward's keyword arguments
CONDITION_KEYS = ("labels", "text", "text_mask")


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of `batch` on `device` (non-blocking where the copy allows it)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def condition_of(batch: Batch) -> Batch:
    """The condition tensors a denoiser takes (labels, or text and its mask; none for unconditional data)."""
    return {k: batch[k] for k in CONDITION_KEYS if k in batch}
