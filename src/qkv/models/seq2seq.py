"""Encoder–decoder transformer for translation (Vaswani et al. 2017, §3), pre-norm (Xiong et al. 2020).

    src ─ src_emb·√C + pos ─ [ TransformerBlock (bidirectional self-attn, MLP) ] × n_encoder_layers ─ enc_norm ─ memory
    tgt ─ tgt_emb·√C + pos ─ [ TransformerBlock (causal self-attn, cross-attn to memory, MLP) ] × n_decoder_layers
        ─ dec_norm ─ lm_head ─ logits

The encoder reads the whole source once (`encode`); the decoder predicts target token t+1 from target
tokens ≤ t and the encoder output (`decode`). With a joint vocabulary (the default) source and target
share one embedding matrix, and ``tie_embeddings`` makes the output projection that same matrix
(Press & Wolf 2017): for 8k BPE and d_model 256 one 2.0M table instead of three.

Masks: ``src_mask`` (B, S) bool, True at real source tokens. The target needs no padding mask: targets
are right-padded and attention is causal, so a real target position never sees a padded one.

Decoding state (`Seq2SeqCache`): a self-attention `KVCache` per decoder layer, grown one token at a
time, plus one cross-attention cache per layer whose keys/values are computed from ``memory`` on the
first `decode` call and reused afterwards (`LayerKVCache.set_static`). Beam search reorders both.

Shape legend: B batch, S source length, T target length, C d_model, V vocab size, H heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.nn.attention import KVCache, LayerKVCache
from qkv.nn.block import TransformerBlock
from qkv.nn.mlp import Activation
from qkv.nn.norm import NormKind, make_norm
from qkv.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

Seq2SeqPosEncoding = Literal["sinusoidal", "learned"]


@dataclass
class Seq2SeqConfig:
    vocab_size: int = 8000  # joint source+target vocabulary (ignored when separate_vocabs)
    max_seq_len: int = 128  # the most tokens of a source sentence, and of a target sentence (with its BOS)
    d_model: int = 256  # width of the residual stream
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    n_heads: int = 4
    d_ff: int | None = None  # MLP hidden width; default 4 · d_model
    dropout: float = 0.1  # on attention weights, residual branches and embeddings
    bias: bool = True  # biases in Linear layers and LayerNorms
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    activation: Activation = "relu"  # Vaswani et al. use ReLU
    pos_encoding: Seq2SeqPosEncoding = "sinusoidal"
    scale_embeddings: bool = True  # multiply token embeddings by √d_model before adding positions (§3.4)
    embed_std: float = 0.02  # init std of token embeddings (GPT-2's); 1/√d_model puts tokens at unit scale
    tie_embeddings: bool = True  # lm_head.weight is the target embedding (the joint embedding by default)
    separate_vocabs: bool = False  # two vocabularies: src_vocab_size for the encoder, tgt_vocab_size for the rest
    src_vocab_size: int | None = None  # only with separate_vocabs
    tgt_vocab_size: int | None = None  # only with separate_vocabs
    pad_id: int = 0  # padding id (qkv's BPE puts <pad> at 0); never a target, never a source key

    def __post_init__(self):
        for name in ("vocab_size", "max_seq_len", "d_model", "n_encoder_layers", "n_decoder_layers", "n_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_ff is not None and self.d_ff <= 0:
            raise ValueError(f"d_ff must be positive, got {self.d_ff}")
        if self.embed_std <= 0:
            raise ValueError(f"embed_std must be positive, got {self.embed_std}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, kind in (("norm", NormKind), ("activation", Activation), ("pos_encoding", Seq2SeqPosEncoding)):
            value, choices = getattr(self, name), get_args(kind)
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.separate_vocabs:
            # left unset in a run config, the translation task sizes them from the two tokenizers
            for name in ("src_vocab_size", "tgt_vocab_size"):
                v = getattr(self, name)
                if v is not None and v <= 0:
                    raise ValueError(f"{name} must be positive, got {v}")
        elif self.src_vocab_size is not None or self.tgt_vocab_size is not None:
            raise ValueError("src_vocab_size/tgt_vocab_size are only used with separate_vocabs = true; "
                             "a joint vocabulary is sized by vocab_size")
        sizes = [v for v in (self.src_vocab_size, self.tgt_vocab_size) if v is not None] if self.separate_vocabs \
            else [self.vocab_size]
        if sizes and not 0 <= self.pad_id < min(sizes):
            raise ValueError(f"pad_id {self.pad_id} is outside the vocabulary")

    @property
    def src_vocab(self) -> int:
        return self._size("src_vocab_size") if self.separate_vocabs else self.vocab_size

    @property
    def tgt_vocab(self) -> int:
        return self._size("tgt_vocab_size") if self.separate_vocabs else self.vocab_size

    def _size(self, name: str) -> int:
        v = getattr(self, name)
        if v is None:
            raise ValueError(f"separate_vocabs needs {name} to build a model (a translation run sets it from "
                             "its tokenizer)")
        return v

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model


class Seq2SeqCache:
    """Decoding state of a `Seq2Seq`: decoder self-attention KV cache + static cross-attention K/V per layer."""

    def __init__(self, self_attn: KVCache, cross: list[LayerKVCache]):
        self.self_attn = self_attn
        self.cross = cross  # filled from `memory` by the first decode call, then reused

    @property
    def length(self) -> int:
        """Target positions decoded so far."""
        return self.self_attn.length

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (B',): beam search picks which hypothesis each row continues."""
        self.self_attn.reorder(index)
        for layer in self.cross:
            if layer.static:
                layer.reorder(index)


class Seq2SeqOutput(NamedTuple):
    """What `Seq2Seq.forward` returns, always the same three fields."""

    logits: Tensor  # (B, T, V)
    loss: Tensor | None  # mean cross-entropy over tgt_out, or None without targets
    cross_attention: Tensor | None  # (B, H, T, S) of the decoder layer asked for, or None


class Seq2Seq(nn.Module):
    """The encoder–decoder. A subclass that reads another kind of source (`qkv.models.captioner`: image
    patches) is built through this constructor and changes only the source side: `_build_source`,
    `embed_source` and `pool`."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = cfg = config
        self.tgt_emb = self._build_source()
        if cfg.pos_encoding == "learned":
            self.pos_emb = LearnedPositionalEmbedding(cfg.max_seq_len, cfg.d_model)
        else:
            self.pos_emb = SinusoidalPositionalEncoding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

        def block(cross: bool) -> TransformerBlock:
            return TransformerBlock(
                cfg.d_model, cfg.n_heads, cfg.ff_dim, dropout=cfg.dropout, bias=cfg.bias, norm=cfg.norm,
                norm_eps=cfg.norm_eps, activation=cfg.activation, cross_attention=cross,
            )

        self.encoder = nn.ModuleList(block(False) for _ in range(cfg.n_encoder_layers))
        self.enc_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.decoder = nn.ModuleList(block(True) for _ in range(cfg.n_decoder_layers))
        self.dec_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.tgt_vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_emb.weight
        self._init_weights()

    def _build_source(self) -> nn.Embedding:
        """The source side's modules (here the source token table), registered first; returns the target table:
        with a joint vocabulary the same table (registered twice, saved once), else its own."""
        cfg = self.config
        self.src_emb = nn.Embedding(cfg.src_vocab, cfg.d_model)
        return nn.Embedding(cfg.tgt_vocab, cfg.d_model) if cfg.separate_vocabs else self.src_emb

    def _init_weights(self) -> None:
        """GPT-2 style: N(0, 0.02) for every matrix, biases 0; the projections that write into the residual
        stream scaled by 1/√(number of residual branches of their stack) (2 per encoder layer, 3 per decoder
        layer). Token embeddings: N(0, ``embed_std``).

        ``embed_std`` decides how a token compares with its position after the ×√C of `_embed`: at 0.02 and
        C = 256 a token enters at scale 0.32, below the sinusoidal signal (≈ 0.7 per feature); at 1/√C =
        0.0625 (Vaswani et al., fairseq) it enters at unit scale. On Multi30k with the preset (C = 256,
        8k BPE, lr 1.5e-3) the latter learned ~3× faster per update (greedy val BLEU 21.9 vs 6.7 after 800
        updates; docs/benchmarks.md), so the preset uses it. It is not the default because it is not
        better everywhere: with a tiny vocabulary and tied embeddings, unit-scale tokens dominate the
        residual stream at init and the model starts by predicting its input token (a 16-token model
        never learned to reverse sequences), and a 128-wide model at lr 3e-3 reached a higher loss."""
        std = 0.02
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
        if self.config.embed_std != std:  # after the Linears: a tied lm_head is the same matrix
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    nn.init.normal_(module.weight, 0.0, self.config.embed_std)
        for layers, branches in ((self.encoder, 2), (self.decoder, 3)):
            if not len(layers):  # a CTC transcriber has no decoder blocks
                continue
            scaled = std / math.sqrt(branches * len(layers))
            for blk in layers:
                projs = [blk.attn.o_proj, blk.mlp.down]
                if hasattr(blk, "cross_attn"):
                    projs.append(blk.cross_attn.o_proj)
                for proj in projs:
                    nn.init.normal_(proj.weight, 0.0, scaled)

    # ------------------------------------------------------------------------------------------ pieces
    def _embed(self, emb: nn.Embedding, idx: Tensor, start: int = 0) -> Tensor:
        T = idx.size(1)
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context ({self.config.max_seq_len})")
        x = emb(idx)  # (B, T, C)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.d_model)
        positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        return self.drop(x + self.pos_emb(positions))  # (B, T, C)

    def source_mask(self, src: Tensor) -> Tensor:
        """(B, S) all True: the memory mask of sources without padding."""
        return torch.ones(src.shape[:2], dtype=torch.bool, device=src.device)

    def embed_source(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """src (B, S) ids -> (the encoder's input (B, S, C), the key mask its self-attention uses)."""
        return self._embed(self.src_emb, src), src_mask  # (B, S, C), (B, S)

    def pool(self, memory: Tensor) -> Tensor:
        """What the decoder attends to, from the encoder's normalised output (B, S, C): all of it."""
        return memory

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """src (B, S) ids, src_mask (B, S) bool (True = real token; None: all real) -> memory (B, S, C)."""
        return self._encoder(src, src_mask if src_mask is not None else self.source_mask(src), need_weights=False)[0]

    def decode(self, memory: Tensor, src_mask: Tensor, tgt: Tensor, cache: Seq2SeqCache | None = None,
               last_only: bool = False) -> Tensor:
        """memory (B, S, C), src_mask (B, S), tgt (B, T) ids -> logits (B, T, V).

        cache: decoding state; `tgt` holds the T new positions after the `cache.length` already decoded,
        and the cross-attention keys/values are taken from the cache once it holds them.
        last_only: logits of the last position only, (B, 1, V).
        """
        return self._decoder(memory, src_mask, tgt, cache, last_only, need_weights=False)[0]

    def attention_maps(self, src: Tensor, src_mask: Tensor | None, tgt_in: Tensor) -> dict[str, list[Tensor]]:
        """Every attention weight of a teacher-forced pass, per layer: {"encoder": [(B, H, S, S)],
        "self": [(B, H, T, T)] (decoder, causal), "cross": [(B, H, T, S)]}; each row sums to 1."""
        if src_mask is None:
            src_mask = self.source_mask(src)
        memory, enc = self._encoder(src, src_mask, need_weights=True)
        _, dec = self._decoder(memory, src_mask, tgt_in, None, False, need_weights=True)
        return {"encoder": enc, **dec}

    def cross_attention_maps(self, src: Tensor, src_mask: Tensor | None, tgt_in: Tensor) -> list[Tensor]:
        """Cross-attention weights of every decoder layer: a list of (B, H, T, S), each row summing to 1."""
        return self.attention_maps(src, src_mask, tgt_in)["cross"]

    def _encoder(self, src: Tensor, src_mask: Tensor, need_weights: bool) -> tuple[Tensor, list[Tensor]]:
        x, key_mask = self.embed_source(src, src_mask)  # (B, S, C)
        maps = []
        for blk in self.encoder:
            x, w = blk(x, causal=False, key_mask=key_mask, need_weights=need_weights)
            maps.append(w["self"])
        return self.pool(self.enc_norm(x)), maps  # (B, S, C)

    def _decoder(self, memory: Tensor, src_mask: Tensor, tgt: Tensor, cache: Seq2SeqCache | None, last_only: bool,
                 need_weights: bool, cross_weights_of: int | None = None) -> tuple[Tensor, dict[str, list[Tensor]]]:
        """need_weights: every layer's maps; cross_weights_of: that layer's cross-attention map alone (the other
        entries None), so only its cross-attention leaves the fused kernel."""
        start = cache.length if cache is not None else 0
        x = self._embed(self.tgt_emb, tgt, start)  # (B, T, C)
        maps: dict[str, list[Tensor]] = {"self": [], "cross": []}
        for i, blk in enumerate(self.decoder):
            x, w = blk(
                x, causal=True, memory=memory, memory_mask=src_mask,
                cache=cache.self_attn.layers[i] if cache is not None else None,
                cross_cache=cache.cross[i] if cache is not None else None, need_weights=need_weights,
                need_cross_weights=need_weights or i == cross_weights_of,
            )
            maps["self"].append(w["self"])
            maps["cross"].append(w["cross"])
        x = self.dec_norm(x)  # (B, T, C)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        return self.lm_head(x), maps  # (B, T, V)

    def forward(self, src: Tensor, src_mask: Tensor | None, tgt_in: Tensor, tgt_out: Tensor | None = None, *,
                cross_attention_layer: int | None = None) -> Seq2SeqOutput:
        """Teacher forcing: src (B, S), src_mask (B, S) (None: every source position is real), tgt_in (B, T) =
        BOS + target, tgt_out (B, T) = target + EOS -> `Seq2SeqOutput`: logits (B, T, V), the mean
        cross-entropy over tgt_out (None without it), and the cross-attention weights asked for (or None).

        Positions where tgt_out is -100 (padding) are ignored. This loss is the plain NLL; label smoothing
        belongs to the training recipe.

        cross_attention_layer=L (0-based decoder layer) also returns that layer's cross-attention weights,
        with gradients: (B, H, T, S), row t the query that predicts tgt_out[t], each row summing to 1 over the
        real source tokens (before attention dropout; guided alignment trains them). Only layer L's
        cross-attention takes the readable path (`attention_reference`); every other attention stays fused,
        and without the argument nothing changes. A keyword of `forward`, so DDP and torch.compile wrappers
        pass it through.
        """
        if src_mask is None:
            src_mask = self.source_mask(src)
        memory = self.encode(src, src_mask)  # (B, S, C)
        if cross_attention_layer is None:
            logits, weights = self.decode(memory, src_mask, tgt_in), None  # (B, T, V)
        else:
            L = self.config.n_decoder_layers
            if not 0 <= cross_attention_layer < L:
                raise ValueError(f"cross_attention_layer {cross_attention_layer} is outside the decoder's layers "
                                 f"0..{L - 1}")
            logits, maps = self._decoder(memory, src_mask, tgt_in, None, False, need_weights=False,
                                         cross_weights_of=cross_attention_layer)  # (B, T, V)
            weights = maps["cross"][cross_attention_layer]  # (B, H, T, S)
        loss = None
        if tgt_out is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=-100)
        return Seq2SeqOutput(logits, loss, weights)

    # ------------------------------------------------------------------------------------------ decoding
    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> Seq2SeqCache:
        """Empty decoding state for `batch` rows and up to `max_len` target positions (default: context)."""
        cfg = self.config
        device = device or self.lm_head.weight.device
        dtype = dtype or self.lm_head.weight.dtype
        self_attn = KVCache.empty(cfg.n_decoder_layers, batch, cfg.n_heads, max_len or cfg.max_seq_len,
                                  cfg.head_dim, device, dtype)
        empty = torch.empty(0, device=device, dtype=dtype)
        cross = [LayerKVCache(empty, empty) for _ in range(cfg.n_decoder_layers)]
        return Seq2SeqCache(self_attn, cross)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # shared (tied) tensors are counted once
        if non_embedding:
            n -= sum(p.numel() for p in {id(e.weight): e.weight for e in (self.src_emb, self.tgt_emb)}.values())
            if self.config.pos_encoding == "learned":
                n -= self.pos_emb.weight.numel()
        return n
