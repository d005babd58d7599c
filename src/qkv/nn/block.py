"""Pre-norm residual blocks (GPT-2 / Xiong et al. 2020): x + f(norm(x)) around each sub-layer.

`TransformerBlock` is self-attention + MLP (a GPT block, or an encoder layer with causal=False);
with `cross_attention=True` it gains a cross-attention sub-layer between them (a decoder layer).
"""

from __future__ import annotations

from torch import Tensor, nn

from qkv.nn.attention import LayerKVCache, MultiHeadAttention
from qkv.nn.mlp import MLP, Activation
from qkv.nn.norm import NormKind, make_norm


class TransformerBlock(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        d_head: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        norm: NormKind = "layernorm",
        norm_eps: float = 1e-5,
        activation: Activation = "gelu",
        cross_attention: bool = False,
        qk_norm: bool = False,
    ):
        super().__init__()
        self.norm1 = make_norm(norm, d_model, norm_eps, bias)
        self.attn = MultiHeadAttention(d_model, n_heads, d_head, bias, dropout, qk_norm=qk_norm)
        if cross_attention:
            self.norm_cross = make_norm(norm, d_model, norm_eps, bias)
            self.cross_attn = MultiHeadAttention(d_model, n_heads, d_head, bias, dropout)
        self.norm2 = make_norm(norm, d_model, norm_eps, bias)
        self.mlp = MLP(d_model, d_ff, activation, bias, dropout)

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = True,
        key_mask: Tensor | None = None,
        rope=None,
        cache: LayerKVCache | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cross_cache: LayerKVCache | None = None,
        need_weights: bool = False,
        need_cross_weights: bool | None = None,
        value_extra: Tensor | None = None,
    ) -> tuple[Tensor, dict]:
        """x: (B, T, C). memory: (B, S, C) encoder output for cross-attention, memory_mask (B, S).

        Returns (x, weights) where weights holds "self" and "cross" attention maps when asked for:
        need_weights asks for both, need_cross_weights (None: as need_weights) for the cross-attention's alone.
        value_extra: (B, T, H·D) added to the self-attention's values (value embeddings).
        """
        weights = {}
        a, weights["self"] = self.attn(
            self.norm1(x), causal=causal, key_mask=key_mask, rope=rope, cache=cache, need_weights=need_weights,
            value_extra=value_extra,
        )
        x = x + a  # (B, T, C)
        if memory is not None or cross_cache is not None:
            c, weights["cross"] = self.cross_attn(
                self.norm_cross(x), memory, key_mask=memory_mask, cache=cross_cache,
                need_weights=need_weights if need_cross_weights is None else need_cross_weights,
            )
            x = x + c  # (B, T, C)
        x = x + self.mlp(self.norm2(x))  # (B, T, C)
        return x, weights
