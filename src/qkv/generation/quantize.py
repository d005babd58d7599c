"""int8 weights for faster CPU decoding: PyTorch's dynamic quantization of every Linear layer.

Weights are stored as int8 with a per-tensor scale and activations are quantized on the fly, so a
decoding step streams a quarter of the bytes. Embeddings and norms stay fp32. Inference only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose nn.Linear layers run with int8 weights (CPU)."""
    from torch.ao.quantization import quantize_dynamic

    q = copy.deepcopy(model).cpu().eval()
    if q.config.tie_embeddings:  # untie: the head gets its own int8 copy, the embedding stays fp32
        q.lm_head.weight = nn.Parameter(q.lm_head.weight.detach().clone())
    return quantize_dynamic(q, {nn.Linear}, dtype=torch.qint8)
