"""GPT: a decoder-only transformer language model (Radford et al. 2018, 2019; Brown et al. 2020).

    idx ─ tok_emb (+ pos_emb) ─ [ TransformerBlock (causal self-attention, MLP) ] × n_layers ─ norm_f ─ lm_head ─ logits

Trained to predict token t+1 from tokens ≤ t. With ``tie_embeddings`` the output projection reuses the
token-embedding matrix (Press & Wolf 2017), which for GPT-2 saves 38.6M of its 124M parameters.

Options from the GPT speedruns (modded-nanogpt, nanochat), each off by default so that GPT-2 and
nanoGPT's recipes are exactly themselves (docs/benchmarks.md measures each one on tinyshakespeare):

    activation = "relu2"     MLP nonlinearity max(0, h)² (So et al. 2021)
    qk_norm                  RMS-normalise each head's queries and keys before the dot product
    zero_init_proj           attention and MLP output projections start at 0: every block starts as the identity
    tie_embeddings = false   the head gets its own (V, C) matrix instead of reusing the token embedding
    value_embeddings         each layer adds ve_l(idx), a (V, H·D) embedding of the input tokens, to its values
    x0_shortcut              block l reads λ_l·x + μ_l·x0 (x0 the embedded input; λ_l from 1, μ_l from 0.1, learned)
    logit_softcap = c        logits = c·tanh(logits / c): bounded in (−c, c), smooth near 0

(and, in training, optimizer = "muon": see qkv.training.optim).

Shape legend: B batch, T sequence length, C d_model, V vocab size, H heads, D head dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.nn.attention import KVCache
from qkv.nn.block import TransformerBlock
from qkv.nn.mlp import Activation
from qkv.nn.norm import NormKind, make_norm
from qkv.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, rope_angles

PosEncoding = Literal["learned", "sinusoidal", "rope", "none"]


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2's byte-level BPE vocabulary
    max_seq_len: int = 1024  # context length: the most tokens the model sees at once
    d_model: int = 768  # width of the residual stream
    n_layers: int = 12
    n_heads: int = 12
    d_head: int | None = None  # per-head width; default d_model // n_heads (GPT-3 13B has 40×128 ≠ 5140)
    d_ff: int | None = None  # MLP hidden width; default 4 · d_model
    dropout: float = 0.0  # on attention weights, residual branches and embeddings
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: yes; nanoGPT's recipes: no)
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    activation: Activation = "gelu"  # GPT-2 uses "gelu_tanh"
    pos_encoding: PosEncoding = "learned"
    rope_base: float = 10000.0
    tie_embeddings: bool = True  # lm_head.weight is tok_emb.weight
    # the speedrun options (module docstring); all off by default
    qk_norm: bool = False  # RMS-normalise queries and keys per head
    zero_init_proj: bool = False  # attention o_proj and MLP down start at zero
    value_embeddings: bool = False  # a per-layer (V, H·D) token embedding added to the values
    x0_shortcut: bool = False  # learned per-layer residual scalars λ_l, μ_l: block input λ_l·x + μ_l·x0
    logit_softcap: float | None = None  # c in c·tanh(logits / c); None: raw logits

    def __post_init__(self):
        for name in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_head is None and self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_head is not None and self.d_head <= 0:
            raise ValueError(f"d_head must be positive, got {self.d_head}")
        if self.d_ff is not None and self.d_ff <= 0:
            raise ValueError(f"d_ff must be positive, got {self.d_ff}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, kind in (("norm", NormKind), ("activation", Activation), ("pos_encoding", PosEncoding)):
            value, choices = getattr(self, name), get_args(kind)
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.logit_softcap is not None and self.logit_softcap <= 0:
            raise ValueError(f"logit_softcap must be positive, got {self.logit_softcap}")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = cfg = config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.pos_encoding == "learned":
            self.pos_emb = LearnedPositionalEmbedding(cfg.max_seq_len, cfg.d_model)
        elif cfg.pos_encoding == "sinusoidal":
            self.pos_emb = SinusoidalPositionalEncoding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                cfg.d_model, cfg.n_heads, cfg.ff_dim, d_head=cfg.d_head, dropout=cfg.dropout, bias=cfg.bias,
                norm=cfg.norm, norm_eps=cfg.norm_eps, activation=cfg.activation, qk_norm=cfg.qk_norm,
            )
            for _ in range(cfg.n_layers)
        )
        if cfg.value_embeddings:
            self.value_embs = nn.ModuleList(
                nn.Embedding(cfg.vocab_size, cfg.n_heads * cfg.head_dim) for _ in range(cfg.n_layers)
            )
        if cfg.x0_shortcut:
            self.resid_scales = nn.Parameter(torch.ones(cfg.n_layers))  # λ_l
            self.x0_scales = nn.Parameter(torch.full((cfg.n_layers,), 0.1))  # μ_l
        self.norm_f = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, residual projections scaled by 1/√(2·n_layers), biases 0."""
        std = 0.02
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
        for block in self.blocks:
            for proj in (block.attn.o_proj, block.mlp.down):
                if self.config.zero_init_proj:
                    nn.init.zeros_(proj.weight)
                else:
                    nn.init.normal_(proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layers))

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        """An empty KV cache for decoding up to `max_len` (default: the context length) positions."""
        cfg = self.config
        device = device or self.tok_emb.weight.device
        dtype = dtype or self.tok_emb.weight.dtype
        return KVCache.empty(cfg.n_layers, batch, cfg.n_heads, max_len or cfg.max_seq_len, cfg.head_dim, device, dtype)

    def hidden_states(
        self, idx: Tensor, cache: KVCache | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """idx (B, T) token ids -> (final hidden states (B, T, C), per-layer attention maps if asked)."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.max_seq_len and self.config.pos_encoding != "none":
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the context ({self.config.max_seq_len})"
            )
        positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.tok_emb(idx)  # (B, T, C)
        rope = None
        if self.config.pos_encoding in ("learned", "sinusoidal"):
            x = x + self.pos_emb(positions)  # (B, T, C)
        elif self.config.pos_encoding == "rope":
            rope = rope_angles(positions, self.config.head_dim, self.config.rope_base)  # 2 × (T, D)
        x = self.drop(x)
        x0 = x  # (B, T, C) the embedded input, for the x0 shortcut
        maps = []
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            if self.config.x0_shortcut:
                x = self.resid_scales[i] * x + self.x0_scales[i] * x0  # (B, T, C)
            ve = self.value_embs[i](idx) if self.config.value_embeddings else None  # (B, T, H·D)
            x, w = block(x, causal=True, rope=rope, cache=layer_cache, need_weights=need_weights, value_extra=ve)
            if need_weights:
                maps.append(w["self"])  # (B, H, T, T_cached)
        return self.norm_f(x), maps  # (B, T, C)

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, *, cache: KVCache | None = None, last_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> (logits (B, T, V), mean cross-entropy against targets (B, T) or None).

        Targets equal to -100 are ignored (padding, or prompt tokens in chat fine-tuning).
        cache: decoding state, extended in place by T positions. last_only: logits of the last position
        only, (B, 1, V) — what decoding needs, without the V × T matmul for the rest.
        """
        x, _ = self.hidden_states(idx, cache)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        logits = self.lm_head(x)  # (B, T, V)
        if self.config.logit_softcap is not None:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)  # (B, T, V), each in (−cap, cap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return logits, loss

    def attention_maps(self, idx: Tensor) -> list[Tensor]:
        """Self-attention weights of every layer for idx (B, T): a list of (B, H, T, T)."""
        return self.hidden_states(idx, need_weights=True)[1]

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # shared (tied) tensors are counted once
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.config.value_embeddings:
                n -= sum(e.weight.numel() for e in self.value_embs)
            if self.config.pos_encoding == "learned":
                n -= self.pos_emb.weight.numel()
        return n
