"""What the `Trainer` calls, written down: the duck-typed contracts between the loop and a task.

A task hands the Trainer a model, and these four callables/objects; the Trainer knows nothing else about it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

Batch = dict[str, torch.Tensor]  # keys documented in `qkv.data.batch`


@runtime_checkable
class BatchSource(Protocol):
    """Endless training batches, exactly resumable: its state dict is the data position (tensors only)."""

    def next_batch(self) -> Batch: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


# loss_fn(model, batch) -> (mean loss over the batch's terms, info). info["tokens"]: throughput count;
# info[name] = (total, count): a running mean the Trainer keeps and hands to `evaluate`. No other side effects.
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict]]

# loss_terms(batch) -> how many terms (target tokens, images) the mean loss of `batch` averages
LossTerms = Callable[[Batch], int]

# evaluate(model, full, train_means) -> metrics; full: also the slow figures (BLEU, exact match, samples)
Evaluate = Callable[[nn.Module, bool, dict[str, float]], dict]

# save_model(model, step): weights, config (and the task's extra files), each written atomically
SaveModel = Callable[[nn.Module, int], None]

# on_step(model, step): after every optimizer step (diffusion updates its weight average)
OnStep = Callable[[nn.Module, int], None]
