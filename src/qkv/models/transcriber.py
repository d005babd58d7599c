"""Speech recognition: a convolutional stem and the translation encoder hear log-mel frames; the decoder writes text.

    log-mel (B, M, F) ─ Conv1d(M→C, k 3) ─ GELU ─ Conv1d(C→C, k 3, stride 2) ─ GELU ─ + sinusoidal positions
        ─ [ TransformerBlock (bidirectional self-attention over the frames, MLP) ] × n_encoder_layers ─ enc_norm
        ─ memory (B, S, C), S = ⌈F / 2⌉: one encoder state per 20 ms of audio
    head = "attention": text ─ tgt_emb·√C + pos ─ [ TransformerBlock (causal self-attn, cross-attn to memory,
        MLP) ] × n_decoder_layers ─ dec_norm ─ lm_head ─ logits (B, T, V)
    head = "ctc": memory ─ dec_norm ─ lm_head ─ logits (B, S, V), one distribution per encoder state (Graves et
        al. 2006)

The front end is Whisper's (Radford et al. 2022, §2.2; `qkv.data.audio.log_mel`): 16 kHz audio, a 25 ms window
every 10 ms, 80 mel bins. The stem is Whisper's too: two convolutions of width 3 over time, the second with
stride 2, so the encoder reads 50 states per second instead of 100 frames. From there a transcriber *is* the
encoder–decoder of translation (`qkv.models.seq2seq.Seq2Seq`, built through its constructor) with the source
side replaced, as the captioner replaces it with image patches: the decoder, its cross-attention, the KV cache,
greedy and beam search and the attention plots work unchanged. Each character's cross-attention over the
encoder states shows where in the recording the model listened: the alignment picture of speech.

``head = "ctc"`` is the baseline the notes ask for ("encoder alone or encoder plus decoder"): the same stem and
encoder, no decoder blocks, and the decoder's last two pieces (its norm and the output layer) applied to every
encoder state: a distribution over the characters and a blank per 20 ms. Connectionist temporal classification
sums over every way of spreading the text over the states (`qkv.training.losses.ctc_loss`); greedy decoding takes
each state's best symbol, merges repeats and drops the blanks (`qkv.generation.ctc`). The blank is the padding
id, which is never a character of a text.

Masks: recordings of one batch differ in length, so ``src_mask`` (B, S) is True at encoder states that come
from real frames (`memory_mask`); padded frames are zeros. ``model(mel, src_mask, tgt_in)`` trains like
translation's ``model(src, src_mask, tgt_in)``.

Shape legend: B batch, M mel bins, F frames (10 ms each), S encoder states (⌈F/2⌉), C d_model, T text length,
V vocabulary (characters and <pad>/<bos>/<eos>).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.models.seq2seq import Seq2Seq, Seq2SeqOutput, Seq2SeqPosEncoding
from qkv.nn.mlp import Activation
from qkv.nn.norm import NormKind
from qkv.nn.positional import sinusoidal_table

Head = Literal["attention", "ctc"]


@dataclass
class TranscriberConfig:
    n_mels: int = 80  # M: mel bins of each frame (`qkv.data.audio.N_MELS`)
    max_frames: int = 1500  # the longest input in 10 ms frames (15 s); longer recordings are cut or windowed
    head: Head = "attention"  # the decoder over the encoder states, or the CTC baseline (a linear layer)
    vocab_size: int = 40  # characters + specials (set from the tokenizer by the speech task)
    max_seq_len: int = 96  # the most text tokens, its BOS (input) or EOS (target) included
    d_model: int = 192
    n_encoder_layers: int = 4
    n_decoder_layers: int = 2  # 0 with head = "ctc"
    n_heads: int = 4
    d_ff: int | None = None  # MLP hidden width; default 4 · d_model
    dropout: float = 0.1
    bias: bool = True
    norm: NormKind = "layernorm"
    norm_eps: float = 1e-5
    activation: Activation = "gelu"
    pos_encoding: Seq2SeqPosEncoding = "sinusoidal"  # the text's positions
    scale_embeddings: bool = True  # text embeddings × √d_model before adding positions (as translation)
    embed_std: float = 0.02
    tie_embeddings: bool = True  # lm_head.weight is the text embedding
    pad_id: int = 0  # padding; the CTC blank

    def __post_init__(self):
        for name in ("n_mels", "max_frames", "vocab_size", "max_seq_len", "d_model", "n_encoder_layers", "n_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.head not in get_args(Head):
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(get_args(Head))}")
        if self.head == "attention" and self.n_decoder_layers <= 0:
            raise ValueError(f"n_decoder_layers must be positive with head = \"attention\", got "
                             f"{self.n_decoder_layers}")
        if self.head == "ctc" and self.n_decoder_layers != 0:
            raise ValueError(f"head = \"ctc\" has no decoder: set n_decoder_layers = 0 (got {self.n_decoder_layers})")
        if self.head == "ctc" and (not self.tie_embeddings or self.pos_encoding != "sinusoidal"):
            raise ValueError("head = \"ctc\" reads no text: it needs tie_embeddings = true and sinusoidal positions "
                             "(an untied table or learned positions would never be trained)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_ff is not None and self.d_ff <= 0:
            raise ValueError(f"d_ff must be positive, got {self.d_ff}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.embed_std <= 0:
            raise ValueError(f"embed_std must be positive, got {self.embed_std}")
        for name, kind in (("norm", NormKind), ("activation", Activation), ("pos_encoding", Seq2SeqPosEncoding)):
            if getattr(self, name) not in get_args(kind):
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(get_args(kind))}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id {self.pad_id} is outside the vocabulary")

    @property
    def max_states(self) -> int:
        """S of the longest input: encoder states after the stride-2 convolution."""
        return states_of(self.max_frames)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def tgt_vocab(self) -> int:
        return self.vocab_size


def states_of(frames: int) -> int:
    """Encoder states of `frames` log-mel frames: the stride-2 convolution (kernel 3, padding 1) gives ⌈F / 2⌉."""
    return (frames + 1) // 2


class JointOutput(NamedTuple):
    """What joint CTC–attention training reads from one forward pass."""

    logits: Tensor  # (B, T, V): the decoder's, teacher-forced
    ctc_logits: Tensor  # (B, S, V): each encoder state's, for the CTC term


class Transcriber(Seq2Seq):
    """`Seq2Seq` built through its own constructor, with the source side replaced: log-mel frames in, not ids."""

    def _build_source(self) -> nn.Embedding:
        """The encoder's input: the convolutional stem over mel frames; the text tokens have their own table."""
        cfg = self.config
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.register_buffer("frame_pos", sinusoidal_table(cfg.max_states, cfg.d_model), persistent=False)  # (S, C)
        return nn.Embedding(cfg.vocab_size, cfg.d_model)

    def _init_weights(self) -> None:
        """`Seq2Seq`'s initialisation, then He's for the stem's convolutions (normal, fan-in, ReLU gain; zero
        biases). PyTorch's default (uniform, gain 1/√3) lets a log-mel (std ~0.5) enter the encoder at ~0.05 per
        feature, varying by ~0.02 over time, under the sinusoidal positions' 0.71: the encoder starts out reading
        almost nothing but positions, and a 1.8M-parameter model of the fsdd-digits preset was still at the
        language-model plateau (val loss 0.49, 94% WER) after 820 updates. With He's, the stem's output is ~0.37
        per feature and varies ~7× more (measured on an FSDD clip)."""
        super()._init_weights()
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    # ------------------------------------------------------------------------------------------ the encoder
    def stem(self, mel: Tensor, mask: Tensor | None = None) -> Tensor:
        """log-mel (B, M, F) -> encoder input (B, S, C): two convolutions over time (the second halves the frame
        rate), GELU after each, then each state's fixed sinusoidal position. With the memory mask (B, S) of a padded
        batch, the first convolution's outputs at padded frames are zeroed, so the second reads what it reads at the
        end of an unpadded recording (its own zero padding): a recording gives the same states alone or in a batch
        (batches hold an even number of frames, `qkv.data.transcribing.collate`)."""
        cfg = self.config
        B, M, Fr = mel.shape
        if M != cfg.n_mels:
            raise ValueError(f"the transcriber reads {cfg.n_mels} mel bins, got {M}")
        if Fr > cfg.max_frames:
            raise ValueError(f"{Fr} frames is longer than the model's {cfg.max_frames}")
        x = F.gelu(self.conv1(mel))  # (B, C, F)
        if mask is not None:
            x = x * mask.repeat_interleave(2, dim=1)[:, None, :Fr].to(x.dtype)  # (B, 1, F): 0 at padded frames
        x = F.gelu(self.conv2(x))  # (B, C, S), S = ⌈F / 2⌉
        x = x.transpose(1, 2)  # (B, S, C): one state per 20 ms
        return self.drop(x + self.frame_pos[: x.size(1)])  # (B, S, C)

    def embed_source(self, mel: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """log-mel (B, M, F), memory mask (B, S) -> (the encoder's input (B, S, C), the same mask for its keys)."""
        return self.stem(mel, mask), mask

    def source_mask(self, mel: Tensor) -> Tensor:
        """(B, S) all True: the memory mask of recordings without padding."""
        return torch.ones(mel.size(0), states_of(mel.size(-1)), dtype=torch.bool, device=mel.device)

    @staticmethod
    def memory_mask(frames: Tensor, total: int) -> Tensor:
        """Real frames per recording (B,) in a batch padded to `total` frames -> (B, ⌈total/2⌉) bool: True at states
        whose centre frame (2s) is real."""
        centres = torch.arange(0, total, 2, device=frames.device)  # (S,): state s is centred on frame 2s
        return centres[None, :] < frames[:, None]  # (B, S)

    # ------------------------------------------------------------------------------------------ the CTC head
    def ctc_logits(self, mel: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """The CTC baseline: log-mel (B, M, F) -> logits (B, S, V) of every encoder state (blank = pad_id): the
        decoder's norm and output layer over the encoder's states."""
        if self.config.head != "ctc":
            raise ValueError("ctc_logits needs head = \"ctc\"")
        return self.encoder_ctc_logits(self.encode(mel, src_mask))  # (B, S, V)

    def encoder_ctc_logits(self, memory: Tensor) -> Tensor:
        """Encoder states (B, S, C) -> CTC logits (B, S, V): the decoder's norm and output layer on every state (the
        CTC head, and the joint model's CTC term; `qkv.generation.joint_ctc` rescores with it)."""
        return self.lm_head(self.dec_norm(memory))  # (B, S, V)

    def forward(self, src: Tensor, src_mask: Tensor | None, tgt_in: Tensor | None = None,
                tgt_out: Tensor | None = None, *, encoder_ctc: bool = False, **kwargs):
        """Attention head: `Seq2Seq.forward` (teacher forcing). CTC head: the per-state logits (B, S, V) in the
        output's `logits` (the text is not read; the CTC loss is the task's).

        encoder_ctc=True (attention head, joint CTC–attention training): a `JointOutput`, the decoder's logits
        (B, T, V) and the encoder states' CTC logits (B, S, V) through the same norm and output layer, from one
        pass of the encoder."""
        if self.config.head == "ctc":
            return Seq2SeqOutput(self.ctc_logits(src, src_mask), None, None)
        if not encoder_ctc:
            return super().forward(src, src_mask, tgt_in, tgt_out, **kwargs)
        if src_mask is None:
            src_mask = self.source_mask(src)
        memory = self.encode(src, src_mask)  # (B, S, C)
        return JointOutput(self.decode(memory, src_mask, tgt_in), self.encoder_ctc_logits(memory))

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # the tied lm_head is counted once
        if non_embedding:
            n -= self.tgt_emb.weight.numel()
            if self.config.pos_encoding == "learned":
                n -= self.pos_emb.weight.numel()
        return n
