"""Building blocks: attention, positional encodings, norms, MLP, residual blocks."""

from qkv.nn.attention import KVCache, LayerKVCache, MultiHeadAttention, attention_reference
from qkv.nn.block import TransformerBlock
from qkv.nn.masks import causal_mask, padding_mask
from qkv.nn.mlp import MLP
from qkv.nn.norm import LayerNorm, RMSNorm, make_norm
from qkv.nn.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    apply_rope,
    rope_angles,
    sinusoidal_table,
)

__all__ = [
    "KVCache", "LayerKVCache", "MultiHeadAttention", "attention_reference", "TransformerBlock",
    "causal_mask", "padding_mask", "MLP", "LayerNorm", "RMSNorm", "make_norm",
    "LearnedPositionalEmbedding", "SinusoidalPositionalEncoding", "apply_rope", "rope_angles", "sinusoidal_table",
]
