"""int8 weights for faster CPU decoding: PyTorch's dynamic quantization of every Linear layer.

Weights are stored as int8 with a per-tensor scale and activations are quantized on the fly, so a
decoding step streams a quarter of the bytes. Embeddings and norms stay fp32. Inference only.

``torch.ao.quantization.quantize_dynamic`` is deprecated in favour of torchao, but torchao's CPU int8 paths
decode GPT-2 124M 4–10× slower than it on an AVX2 CPU (they convert the int8 weight to fp32 on every call),
so qkv keeps it while torch has it (docs/design.md, "int8 decoding stays on torch.ao"); its deprecation
warnings are silenced here, as that choice is made on purpose. A torch without it is a one-line error.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from qkv.errors import QKVError


def _quantize_dynamic():
    """torch.ao.quantization.quantize_dynamic, or a QKVError saying that this torch no longer has it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as e:
        raise QKVError(f"quantize = 'int8' needs torch.ao.quantization.quantize_dynamic, which torch "
                       f"{torch.__version__} no longer has ({e}); use a torch that still has it (measured on 2.13) "
                       "or decode in fp32 — see docs/design.md, \"int8 decoding stays on torch.ao\"") from None
    return quantize_dynamic


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose nn.Linear layers run with int8 weights (CPU)."""
    quantize_dynamic = _quantize_dynamic()
    q = copy.deepcopy(model).cpu().eval()
    if q.config.tie_embeddings:  # untie: the head gets its own int8 copy, the embedding stays fp32
        q.lm_head.weight = nn.Parameter(q.lm_head.weight.detach().clone())
    with warnings.catch_warnings():  # "torch.ao.quantization is deprecated", "quantize_per_tensor ... deprecated"
        warnings.filterwarnings("ignore", message=".*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated", category=UserWarning)
        return quantize_dynamic(q, {nn.Linear}, dtype=torch.qint8)
