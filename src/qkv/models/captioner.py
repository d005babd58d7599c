"""Image (and clip) captioning: a ViT encoder reads the patches, the translation decoder writes the caption.

    image (B, C, H, W) ─ patchify + linear ─ + 2-D sin-cos positions ─┐
    clip  (B, F, C, H, W): the same for every frame, + the frame's 1-D sin-cos position ┘
        ─ [ TransformerBlock (bidirectional self-attention over the patches, MLP) ] × n_encoder_layers ─ enc_norm
        ─ memory (B, P, C)                                    (memory = "pooled": its mean, (B, 1, C))
    caption ─ tgt_emb·√C + pos ─ [ TransformerBlock (causal self-attn, cross-attn to memory, MLP) ] × n_decoder_layers
        ─ dec_norm ─ lm_head ─ logits

A captioner *is* the encoder–decoder of translation (`qkv.models.seq2seq.Seq2Seq`, built through its
constructor) with one change: the encoder reads image patches (Dosovitskiy et al. 2021, "An image is worth 16x16 words")
instead of source-token embeddings. Everything on the decoder's side is inherited unchanged — the decoder
blocks, the cross-attention module, the KV cache with its static cross-attention keys and values, `decode`,
`attention_maps` — and so greedy search, beam search and the attention plots of translation work on it as
they are. Each caption word's cross-attention weights over the P patches show where the model looked.

A patch is p × p pixels of every channel, flattened and mapped to d_model by one linear layer (written as a
stride-p convolution, the same map). Its position is fixed: the 2-D sin-cos table of MAE and DiT (half the
features encode the patch's row, half its column); a clip's patches also get their frame's 1-D sinusoidal
position, so "left to right" and "right to left" (the same frames in reverse order) differ.

``memory = "pooled"`` is the baseline that the attention is measured against: the decoder is conditioned on
one vector, the mean of the encoder's outputs, so every cross-attention has one key and nothing to choose.

The memory mask of `encode`/`decode` (the ``src_mask`` of translation) is all True: every patch is real.
It is (B, P), or (B, 1) when pooled: `memory_length` says which. ``model(images, None, tgt_in)`` trains like
``model(src, src_mask, tgt_in)`` (None: every patch is real).

Shape legend: B batch, F frames, C channels (or d_model in the stream), H × W image, p patch side,
P patches (F · (H/p) · (W/p)), T caption length, V vocab size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from qkv.models.seq2seq import Seq2Seq, Seq2SeqPosEncoding
from qkv.nn.mlp import Activation
from qkv.nn.norm import NormKind
from qkv.nn.positional import sincos_2d, sinusoidal_table

Memory = Literal["patches", "pooled"]


@dataclass
class CaptionerConfig:
    image_size: int = 64  # H = W of the images the encoder reads
    channels: int = 3
    frames: int = 1  # > 1: the encoder reads clips of this many frames
    patch_size: int = 8  # p: each patch is p × p pixels; image_size must be a multiple
    memory: Memory = "patches"  # what the decoder attends to: every patch, or one pooled vector (the baseline)
    vocab_size: int = 400  # caption vocabulary (set from the tokenizer by the caption task)
    max_seq_len: int = 64  # the most caption tokens, its BOS (input) or EOS (target) included
    d_model: int = 192
    n_encoder_layers: int = 4
    n_decoder_layers: int = 3
    n_heads: int = 4
    d_ff: int | None = None  # MLP hidden width; default 4 · d_model
    dropout: float = 0.0
    bias: bool = True
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    activation: Activation = "gelu"
    pos_encoding: Seq2SeqPosEncoding = "sinusoidal"  # the caption's positions
    scale_embeddings: bool = True  # caption embeddings × √d_model before adding positions (as translation)
    embed_std: float = 0.02
    tie_embeddings: bool = True  # lm_head.weight is the caption embedding
    pad_id: int = 0

    def __post_init__(self):
        for name in ("image_size", "channels", "frames", "patch_size", "vocab_size", "max_seq_len", "d_model",
                     "n_encoder_layers", "n_decoder_layers", "n_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) is not a multiple of patch_size ({self.patch_size})")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_model % 4:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by 4 (2-D sin-cos positions)")
        if self.d_ff is not None and self.d_ff <= 0:
            raise ValueError(f"d_ff must be positive, got {self.d_ff}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.embed_std <= 0:
            raise ValueError(f"embed_std must be positive, got {self.embed_std}")
        for name, kind in (("memory", Memory), ("norm", NormKind), ("activation", Activation),
                           ("pos_encoding", Seq2SeqPosEncoding)):
            if getattr(self, name) not in get_args(kind):
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(get_args(kind))}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id {self.pad_id} is outside the vocabulary")

    @property
    def grid(self) -> int:
        """Patches per side of a frame."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        """P: patches of one input, every frame's."""
        return self.frames * self.grid**2

    @property
    def memory_length(self) -> int:
        """Keys the decoder's cross-attention sees: P, or 1 when pooled."""
        return 1 if self.memory == "pooled" else self.n_patches

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def tgt_vocab(self) -> int:
        return self.vocab_size


def patch_positions(cfg: CaptionerConfig) -> Tensor:
    """(P, C) fixed positions of every patch: 2-D sin-cos of its row and column, + its frame's sinusoid for clips.

    Patch k of frame f is row P_f + k of the table (frames first, then rows, then columns: `Captioner.patchify`).
    """
    space = sincos_2d(cfg.d_model, cfg.grid)  # (grid², C)
    if cfg.frames == 1:
        return space
    time = sinusoidal_table(cfg.frames, cfg.d_model)  # (F, C)
    return (time[:, None, :] + space[None, :, :]).reshape(cfg.n_patches, cfg.d_model)  # (F·grid², C)


class Captioner(Seq2Seq):
    """`Seq2Seq` built through its own constructor, with the source side replaced: patches in, not token ids."""

    def __init__(self, config: CaptionerConfig):
        super().__init__(config)
        # the patch embedding is a linear map of flattened patches: initialise it like one (ViT, DiT)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.size(0), -1))
        nn.init.zeros_(self.patch_embed.bias)

    def _build_source(self) -> nn.Embedding:
        """The encoder's input: patches, not token ids; the caption tokens have their own table."""
        cfg = self.config
        self.patch_embed = nn.Conv2d(cfg.channels, cfg.d_model, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.register_buffer("patch_pos", patch_positions(cfg), persistent=False)  # (P, C)
        return nn.Embedding(cfg.vocab_size, cfg.d_model)

    # ------------------------------------------------------------------------------------------ the encoder
    def patchify(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) or clips (B, F, C, H, W) -> patch embeddings with positions (B, P, C)."""
        cfg = self.config
        if images.dim() == 4:
            images = images[:, None]  # (B, 1, C, H, W)
        B, F, Ch, H, W = images.shape
        if (F, Ch, H, W) != (cfg.frames, cfg.channels, cfg.image_size, cfg.image_size):
            raise ValueError(f"the captioner reads {cfg.frames} frame(s) of {cfg.channels} × {cfg.image_size} × "
                             f"{cfg.image_size}, got {F} frame(s) of {Ch} × {H} × {W}")
        x = self.patch_embed(images.flatten(0, 1))  # (B·F, C, H/p, W/p): one linear map per p × p patch
        x = x.flatten(2).transpose(1, 2)  # (B·F, grid², C), patches in reading order
        x = x.reshape(B, F * x.size(1), x.size(2))  # (B, P, C), frame after frame
        return self.drop(x + self.patch_pos)  # (B, P, C)

    def embed_source(self, images: Tensor, mask: Tensor | None) -> tuple[Tensor, None]:
        """images (B, C, H, W) or clips (B, F, C, H, W) -> (patch embeddings (B, P, C), no key mask: every
        patch is real)."""
        return self.patchify(images), None

    def pool(self, memory: Tensor) -> Tensor:
        """(B, P, C), or its mean (B, 1, C) when ``memory = "pooled"``: one vector for the whole image."""
        return memory.mean(dim=1, keepdim=True) if self.config.memory == "pooled" else memory

    def source_mask(self, images: Tensor) -> Tensor:
        """The (B, memory_length) all-True mask that `decode` and the decoding loops take with the memory."""
        return self.memory_mask(images.size(0), images.device)

    def memory_mask(self, batch: int, device=None) -> Tensor:
        """The (B, memory_length) all-True memory mask: P keys, or 1 when pooled."""
        return torch.ones(batch, self.config.memory_length, dtype=torch.bool, device=device)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # the tied lm_head is counted once
        if non_embedding:
            n -= self.tgt_emb.weight.numel()
            if self.config.pos_encoding == "learned":
                n -= self.pos_emb.weight.numel()
        return n

    @property
    def patch_dim(self) -> int:
        """Numbers in one patch (p · p · channels): the linear patch embedding's input width."""
        return self.config.patch_size**2 * self.config.channels
