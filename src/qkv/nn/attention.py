"""Scaled dot-product attention and multi-head attention (Vaswani et al. 2017, §3.2).

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V                                         (eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, …, head_h) W_O,  head_i = Attention(Q W_Qi, K W_Ki, V W_Vi)

`attention_reference` is the formula written out and returns the attention weights, for reading,
plots and tests. `MultiHeadAttention` uses the fused ``F.scaled_dot_product_attention`` (same maths,
tested equal) unless the weights are asked for.

Two options from the GPT speedruns: `qk_norm` RMS-normalises each head's queries and keys before the dot
product (Henry et al. 2020; Dehghani et al. 2023), which bounds the logits and lets a higher learning rate
train stably; `forward(..., value_extra=)` adds a per-token vector to the values (value embeddings,
modded-nanogpt), which the GPT model feeds from an embedding of the input tokens.

At decode time the three input projections can be one: [Q | K | V] = X [W_Q; W_K; W_V]ᵀ, a single matmul
whose output is split (`MultiHeadAttention.qkv_weight`; `qkv.generation.inference.for_decoding` sets
`qkv_proj` on its inference copy). Same function; one weight stream and one call instead of three.

Shape legend: B batch, H heads, Tq query length, Tk key length, D head dim, C model width.
Masks are bool with True = may attend (see `qkv.nn.masks`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.nn.masks import causal_mask, combine, key_padding_to_attn
from qkv.nn.positional import apply_rope


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / √d_k) V, step by step.

    q: (B, H, Tq, D), k and v: (B, H, Tk, D), mask: bool broadcastable to (B, H, Tq, Tk).
    Returns (out (B, H, Tq, D), weights (B, H, Tq, Tk)). Every query must be allowed at least one key.
    The weights are the softmax, each row summing to 1, also in training: dropout (as SDPA's) is applied to
    the copy that mixes the values, not to the weights returned (what guided alignment trains toward).
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # (B, H, Tq, Tk), each row sums to 1
    mixing = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 and training else weights  # (B, H, Tq, Tk)
    return mixing @ v, weights  # (B, H, Tq, D)


class LayerKVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    Preallocated to `max_len` so decoding one token writes in place instead of concatenating.
    For cross-attention the keys/values of the encoder output are stored once (`set_static`).
    """

    def __init__(self, k: Tensor, v: Tensor):
        self.k = k  # (B, H, T_max, D)
        self.v = v  # (B, H, T_max, D)
        self.length = 0
        self.static = False

    @classmethod
    def empty(cls, batch, n_heads, max_len, head_dim, device=None, dtype=None) -> LayerKVCache:
        shape = (batch, n_heads, max_len, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def append(self, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Write (B, H, T, D) new keys/values after the cached ones; return all of them."""
        end = self.length + k_new.size(2)
        if end > self.k.size(2):
            raise ValueError(f"KV cache full: {end} positions > capacity {self.k.size(2)}")
        self.k[:, :, self.length : end] = k_new
        self.v[:, :, self.length : end] = v_new
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, H, T_cached, D)

    def set_static(self, k: Tensor, v: Tensor) -> None:
        self.k, self.v, self.length, self.static = k, v, k.size(2), True

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (beam search)."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)


class KVCache:
    """One `LayerKVCache` per layer: the explicit decoding state passed into a model's forward."""

    def __init__(self, layers: list[LayerKVCache]):
        self.layers = layers

    @classmethod
    def empty(cls, n_layers, batch, n_heads, max_len, head_dim, device=None, dtype=None) -> KVCache:
        return cls([LayerKVCache.empty(batch, n_heads, max_len, head_dim, device, dtype) for _ in range(n_layers)])

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        return self.layers[0].k.size(2)

    def reorder(self, index: Tensor) -> None:
        for layer in self.layers:
            layer.reorder(index)

    def nbytes(self) -> int:
        return sum(layer.k.numel() * layer.k.element_size() * 2 for layer in self.layers)


class MultiHeadAttention(nn.Module):
    """Multi-head attention for self-attention (context=None) and cross-attention (context given).

    Per-head projections are stored as one (H·D, C) matrix each for Q, K and V (head h owns rows
    h·D … (h+1)·D); the heads are concatenated and mixed by `o_proj`. An inference copy may also set
    `qkv_proj`, one projection of x to [q | k | v] (B, T, 3·H·D) built from `qkv_weight`: self-attention
    calls (no context) then use it instead of the three.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        d_context: int | None = None,
        qk_norm: bool = False,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.qk_norm = qk_norm
        self.d_head = d_head or d_model // n_heads
        inner = self.n_heads * self.d_head
        d_context = d_context or d_model
        self.q_proj = nn.Linear(d_model, inner, bias=bias)
        self.k_proj = nn.Linear(d_context, inner, bias=bias)
        self.v_proj = nn.Linear(d_context, inner, bias=bias)
        self.o_proj = nn.Linear(inner, d_model, bias=bias)
        self.qkv_proj: nn.Module | None = None  # decode copies only: x -> [q | k | v], see `qkv_weight`
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def qkv_weight(self) -> tuple[Tensor, Tensor | None]:
        """[W_Q; W_K; W_V]: the three projections stacked, (3·H·D, C), and their biases, (3·H·D,) or None —
        the one matrix of a fused self-attention (`forward` splits its output in this order). Self-attention
        only: it needs the keys' and values' input width to be the queries'."""
        projs = (self.q_proj, self.k_proj, self.v_proj)
        if self.k_proj.in_features != self.q_proj.in_features:
            raise ValueError(f"cannot fuse Q, K, V: the context width {self.k_proj.in_features} is not the "
                             f"model width {self.q_proj.in_features} (cross-attention)")
        weight = torch.cat([p.weight.detach() for p in projs])  # (3·H·D, C)
        bias = None if self.q_proj.bias is None else torch.cat([p.bias.detach() for p in projs])  # (3·H·D,)
        return weight, bias

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, D)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        causal: bool = False,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: LayerKVCache | None = None,
        need_weights: bool = False,
        value_extra: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, Tq, C) queries; context: (B, Tk, C_ctx) for cross-attention, else x itself.

        causal: query i sees keys ≤ i (offset by what `cache` already holds).
        key_mask: (B, Tk) bool, False at padded keys. attn_mask: extra bool mask broadcastable to
        (B, H, Tq, Tk). rope: (cos, sin) for the new positions, rotates q and k.
        cache: decoding state; self-attention appends to it, cross-attention fills it once.
        value_extra: (B, Tk, H·D) added to the new positions' values before they are cached (value embeddings).
        Returns (out (B, Tq, C), weights (B, H, Tq, Tk) if need_weights else None).
        """
        B, Tq, _ = x.shape
        fused = self.qkv_proj is not None and context is None
        if fused:  # one matmul for the three projections (decode copies)
            q, k, v = self.qkv_proj(x).split(self.n_heads * self.d_head, dim=-1)  # 3 × (B, Tq, H·D)
        else:
            q = self.q_proj(x)  # (B, Tq, H·D)
        q = self._heads(q)  # (B, H, Tq, D)
        if self.qk_norm:
            q = F.rms_norm(q, (self.d_head,))  # each head's query scaled to unit RMS
        if cache is not None and cache.static:
            k, v = cache.k, cache.v  # cross-attention keys/values computed on the first step
        else:
            if not fused:
                src = x if context is None else context
                k, v = self.k_proj(src), self.v_proj(src)  # 2 × (B, Tk, H·D)
            if value_extra is not None:
                v = v + value_extra
            k, v = self._heads(k), self._heads(v)  # 2 × (B, H, Tk, D)
            if self.qk_norm:
                k = F.rms_norm(k, (self.d_head,))
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            if cache is not None:
                if context is None:
                    k, v = cache.append(k, v)  # (B, H, T_cached, D)
                else:
                    cache.set_static(k, v)
        Tk = k.size(2)
        p = self.dropout if self.training else 0.0
        plain_causal = causal and Tq == Tk and key_mask is None and attn_mask is None
        if plain_causal and not need_weights:
            # the common training case: let SDPA build the triangle itself
            y, weights = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=Tq > 1), None
        else:
            mask = combine(
                causal_mask(Tq, Tk, x.device) if causal and Tq > 1 else None,
                key_padding_to_attn(key_mask) if key_mask is not None else None,
                attn_mask,
            )
            if need_weights:
                y, weights = attention_reference(q, k, v, mask, p, self.training)
            else:
                y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        y = y.transpose(1, 2).reshape(B, Tq, self.n_heads * self.d_head)  # (B, Tq, H·D) heads concatenated
        return self.resid_dropout(self.o_proj(y)), weights
