"""The one-token decode step through ``torch.compile``, with the eager model as the fallback.

A KV-cached decode step runs, per layer, some twenty small ops on one position: two norms, the fused QKV
product and its split, the cache write, attention over the cache, the output projection, the MLP, two residual
adds. At small model sizes each op's launch and Python dispatch cost more than its arithmetic. torch.compile
(TorchInductor) traces the step once and fuses the elementwise ops into a few generated C++ kernels.

The step's shapes change every token — the cache grows by one position — so it is compiled with
``dynamic=True``: one graph for every cache length (and batch size), instead of a recompile per token. Only
the one-token step is compiled; the prompt's prefill, uncached calls and full forwards stay eager.

Opt-in (``qkv generate --compile``, ``qkv chat --compile``): compiling costs half a minute before the first
token and pays back only on small models and long generations. Measured with `bench/decode_compile.py`
(preliminary: AMD EPYC, AVX2, 1 thread, another job on the 2 cores; docs/benchmarks.md): a 4-layer d=128
char model 1.77× the eager tokens/s after 25 s of compiling, a 6-layer d=384 one 1.12× after 25 s, GPT-2 124M
1.05× after 42 s (its step is bound by streaming the weights, which compiling does not change).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class CompiledDecodeStep(nn.Module):
    """`model` (a `qkv.generation.protocols.DecoderModel`) whose one-token KV-cached steps, idx (B, 1) with a
    cache, run through ``torch.compile(model.forward, dynamic=True)``; every other call runs `model` eagerly.

    Two steps stay eager too, as each would compile a graph of its own: a one-token prompt (an empty cache,
    so queries and keys are the same positions) and the step that fills the cache's last position (its keys
    are then the whole buffer, a contiguous tensor where every other step's are a slice of it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config
        self.step = torch.compile(model.forward, dynamic=True)  # a function: `model` stays the only submodule

    def new_cache(self, batch: int, max_len: int | None = None, **kwargs):
        return self.model.new_cache(batch, max_len, **kwargs)

    def forward(self, idx: Tensor, targets: Tensor | None = None, *, cache=None,
                last_only: bool = False) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> (logits (B, T or 1, V), loss or None), as `model`; compiled when T == 1 with a cache."""
        if cache is not None and targets is None and idx.size(1) == 1 and 0 < cache.length < cache.capacity - 1:
            return self.step(idx, cache=cache, last_only=last_only)
        return self.model(idx, targets, cache=cache, last_only=last_only)


def compile_decode_step(model: nn.Module, log: Callable[[str], None] = _stderr) -> nn.Module:
    """`CompiledDecodeStep(model)`, compiled now on a scratch cache of the context's size (a one-token prompt,
    then two steps, in inference mode as decoding runs); `model` itself, after one line to `log`, if compiling
    fails.

    Compile errors surface on the first call, so the trial makes them surface here, before any real decoding
    (and pays the compile time up front)."""
    try:
        compiled = CompiledDecodeStep(model)
        device = next(model.parameters()).device
        with torch.inference_mode():  # decoding's mode: tensors made outside it would compile another graph
            idx = torch.zeros((1, 1), dtype=torch.long, device=device)  # (1, 1) token id 0
            cache = model.new_cache(1)  # the size decoding uses (the context): another size, another graph
            for _ in range(min(3, cache.capacity - 1)):  # the prompt (eager), then steps at cache lengths 1 and 2
                compiled(idx, cache=cache, last_only=True)
        return compiled
    except Exception as e:  # noqa: BLE001 - any backend failure means: decode eager
        first = str(e).splitlines()[0][:120] if str(e) else ""
        log(f"torch.compile failed ({type(e).__name__}: {first}); decoding eager")
        return model
