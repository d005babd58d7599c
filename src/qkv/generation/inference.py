"""The inference copy that decoding runs on: the same model, laid out for one token at a time.

Decoding one token multiplies a (1, C_in) row by each weight matrix: a matrix-vector product that must
stream the whole matrix from memory. ``nn.Linear`` keeps W as (C_out, C_in) and computes x Wᵀ; on this
kind of CPU, reading W stored as (C_in, C_out) — the layout GPT-2's original Conv1D used — streams
measurably faster (see docs/benchmarks.md). `for_decoding` makes an inference copy in that layout, with each
self-attention's Q, K and V projections fused into one (C, 3·H·D) matrix (one product and one call per layer
instead of three); the training model and its checkpoints are untouched. The outputs are the same function,
up to float summation order.

`prepare_for_decoding` picks the copy a decoding command asked for (``--quantize``):

    (none)  fp32, the layout above
    int8    int8 Linear weights (`qkv.generation.quantize`)
    bf16    the layout above with every weight, activation and cached key/value in bf16 — half the bytes per
            token — only where the hardware multiplies bf16 natively (a CPU with AMX-BF16 or AVX512-BF16, see
            `qkv.training.precision`; a CUDA GPU with bf16); elsewhere bf16 is emulated and slower than fp32,
            so it is refused
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from qkv.errors import QKVError
from qkv.nn.attention import MultiHeadAttention


class TransposedLinear(nn.Module):
    """y = x @ W_t + b with W_t = Wᵀ stored as (C_in, C_out). Inference only."""

    def __init__(self, weight_t: Tensor, bias: Tensor | None = None):
        super().__init__()
        self.weight_t = nn.Parameter(weight_t, requires_grad=False)  # (C_in, C_out)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)  # (C_out,)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> TransposedLinear:
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(linear.weight.detach().t().contiguous(), bias)  # (C_in, C_out)

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return x @ self.weight_t  # (..., C_out)
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight_t).view(*x.shape[:-1], -1)


def fuse_qkv(attn: MultiHeadAttention) -> None:
    """Give `attn` one (C, 3·H·D) transposed weight for Q, K and V (`qkv_proj`): self-attention then makes
    q, k, v with one matmul. q_proj, k_proj and v_proj become views of its column blocks, so a call with a
    context (cross-attention) still works and each weight is stored once."""
    weight, bias = attn.qkv_weight()  # (3·H·D, C), (3·H·D,)
    fused = TransposedLinear(weight.t().contiguous(), bias)  # (C, 3·H·D)
    inner = attn.n_heads * attn.d_head
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        cols = slice(i * inner, (i + 1) * inner)
        setattr(attn, name, TransposedLinear(fused.weight_t[:, cols], None if bias is None else fused.bias[cols]))
    attn.qkv_proj = fused


def for_decoding(model: nn.Module, dtype: torch.dtype | None = None, fuse: bool = True) -> nn.Module:
    """An eval-mode copy of `model` for decoding: its nn.Linear layers as `TransposedLinear` (a tied LM head
    gets its own copy), each self-attention's Q, K, V fused into one matmul (`fuse_qkv`; `fuse=False` keeps
    three), and, with `dtype`, every parameter and buffer in that dtype (bf16 weights)."""
    fast = copy.deepcopy(model).eval()
    if dtype is not None:
        fast.to(dtype)  # before fusing: converting afterwards would copy the shared views apart
    for module in list(fast.modules()):
        if fuse and isinstance(module, MultiHeadAttention) and module.k_proj.in_features == module.q_proj.in_features:
            fuse_qkv(module)
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, TransposedLinear.from_linear(child))
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


QUANTIZE = ("int8", "bf16")  # the weight formats of `prepare_for_decoding` (and `--quantize`)


def require_bf16(device: torch.device) -> None:
    """QKVError unless `device` multiplies bf16 natively: bf16 weights would be emulated and slower than fp32."""
    from qkv import hardware

    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise QKVError(f"quantize = 'bf16' needs bf16 support; this GPU ({torch.cuda.get_device_name(device)}) "
                       "lacks it; use quantize = 'int8', or fp32 weights (the default)")
    if device.type == "cpu" and not hardware.cpu_bf16_units():
        raise QKVError(f"quantize = 'bf16' needs a CPU with bf16 units (AMX-BF16 or AVX512-BF16); this one "
                       f"({hardware.cpu_model()}) has none, so bf16 would be emulated and slower than fp32; "
                       "use quantize = 'int8', or fp32 weights (the default)")


def prepare_for_decoding(model: nn.Module, quantize: str | None = None, compile: bool = False) -> nn.Module:
    """The copy of `model` that decoding commands run: fp32 in the decode layout (`for_decoding`), or with
    int8 or bf16 weights (`quantize`, see the module docstring). `compile`: its one-token decode step through
    torch.compile (`qkv.generation.compiled`; eager, with a one-line note, where compiling fails)."""
    if quantize not in (None, *QUANTIZE):
        raise QKVError(f"unknown quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if quantize == "int8":
        from qkv.generation.quantize import quantize_int8

        decoder = quantize_int8(model)
    elif quantize == "bf16":
        require_bf16(next(model.parameters()).device)
        decoder = for_decoding(model, dtype=torch.bfloat16)
    else:
        decoder = for_decoding(model)
    if compile:
        from qkv.generation.compiled import compile_decode_step

        decoder = compile_decode_step(decoder)
    return decoder
