"""Reading comprehension: the translation encoder–decoder with a span head on its encoder, so one encoder answers
both ways.

    question ; passage (ids) ─ src_emb·√C + pos ─ [ TransformerBlock ] × n_encoder_layers ─ enc_norm ─ memory (B, S, C)
        ├─ span_head: Linear(C, 2) ─ start logits (B, S), end logits (B, S)        extractive (BiDAF, BERT)
        └─ [ TransformerBlock (causal self-attn, cross-attn to memory) ] × n_decoder_layers ─ dec_norm ─ lm_head
           ─ answer logits (B, T, V)                                                generative (T5)

The notes put question answering among the encoder–decoder's uses: "the encoder represents the context, and the
decoder generates the answer". That is the generative head: it writes the answer a token at a time and sees the
passage only through cross-attention, so it can also write words the passage does not hold. The extractive head
can only point: every encoder state gets a score for "the answer starts here" and one for "it ends here", and the
answer is the best span (`qkv.generation.spans.best_spans`). Both read the same memory, so a table can put them
side by side on one encoder (and the share of generative answers that are spans of the passage at all).

``model(src, src_mask, tgt_in)`` trains the generative head like translation; ``model(src, src_mask, tgt_in,
spans=True)`` returns both heads' logits from one pass of the encoder (`ReaderOutput`), for a loss that trains both.
Masks: ``src_mask`` (B, S) is True at real tokens; the span logits at padding are meaningless and the search never
picks them (the task also keeps it off the question).

Shape legend: B batch, S source positions (question, separator, passage), C d_model, T answer length, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor, nn

from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig


@dataclass
class ReaderConfig(Seq2SeqConfig):
    """`Seq2SeqConfig` (one joint vocabulary for question, passage and answer); the span head has no settings."""


class ReaderOutput(NamedTuple):
    """Both heads' logits from one encoder pass."""

    logits: Tensor  # (B, T, V): the decoder's, teacher-forced
    start_logits: Tensor  # (B, S)
    end_logits: Tensor  # (B, S)


class Reader(Seq2Seq):
    """`Seq2Seq` plus a span head over its encoder's states."""

    def __init__(self, config: ReaderConfig):
        super().__init__(config)
        self.span_head = nn.Linear(config.d_model, 2)
        nn.init.normal_(self.span_head.weight, 0.0, 0.02)
        nn.init.zeros_(self.span_head.bias)

    def span_logits(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's states (B, S, C) -> start and end logits, each (B, S)."""
        both = self.span_head(memory)  # (B, S, 2)
        return both[..., 0], both[..., 1]  # (B, S), (B, S)

    def forward(self, src: Tensor, src_mask: Tensor | None, tgt_in: Tensor, tgt_out: Tensor | None = None, *,
                spans: bool = False, **kwargs):
        """`Seq2Seq.forward` (the generative head, teacher-forced); spans=True: a `ReaderOutput` with both heads'
        logits, the encoder run once."""
        if not spans:
            return super().forward(src, src_mask, tgt_in, tgt_out, **kwargs)
        if src_mask is None:
            src_mask = self.source_mask(src)
        memory = self.encode(src, src_mask)  # (B, S, C)
        start, end = self.span_logits(memory)  # (B, S), (B, S)
        return ReaderOutput(self.decode(memory, src_mask, tgt_in), start, end)
