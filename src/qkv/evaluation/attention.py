"""Attention maps as pictures: the cross-attention alignment of a translation, the self-attention of a text.

- `seq2seq_attention` / `seq2seq_alignment`: translate a sentence, then re-run the decoder on
  (source, BOS + translation) with the attention weights kept; row i of a decoder layer's cross-attention
  is where the model looked in the source while producing target token i (the last row produces EOS).
- `gpt_attention` / `gpt_self_attention`: the causal self-attention of a GPT over a text (lower-triangular).
- `plot_attention`: a (rows × columns) heatmap with token labels, written as PNG; the map's `boxes` (a reference
  word alignment, `qkv.evaluation.alignment.reference_attention`) are outlined in red over it.

An `AttentionStack` holds every layer and head (what the playground draws); an `AttentionMap` is one
layer's weights, averaged over heads unless a head is chosen (`AttentionStack.pick`, what `qkv attention`
plots). Weights come from the readable `attention_reference` path (the fused kernel doesn't return them),
with the model in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from qkv.errors import QKVError


@dataclass
class AttentionMap:
    weights: Tensor  # (rows, cols), each row sums to 1
    rows: list[str]  # labels of the queries (produced target tokens, or text tokens)
    cols: list[str]  # labels of the keys (source tokens, or text tokens)
    title: str
    text: str = ""  # the translation (seq2seq) or the input text (GPT)
    xlabel: str = "keys"  # what the columns are
    ylabel: str = "queries"  # what the rows are
    note: str = ""  # a line to show with the picture (the translation)
    # cells to outline: (first row, end row, first column, end column), e.g. a reference word alignment's links
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)


def token_label(tok, i: int) -> str:
    """A short printable label: leading spaces as '▁' (SentencePiece's convention), newlines as '⏎', tabs as '⇥',
    carriage returns as '␍', any other control character as \\xNN (a table or a plot stays aligned)."""
    s = tok.id_to_token(i)
    s = s.replace(" ", "▁").replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in s) or "∅"


@dataclass
class AttentionStack:
    """Every layer and head of one attention kind over one input: weights (L, H, rows, cols), rows summing to 1."""

    weights: Tensor  # (L, H, rows, cols)
    rows: list[str]  # query labels
    cols: list[str]  # key labels
    kind: str  # "self-attention" or "cross-attention"
    text: str = ""  # the input text (GPT) or the translation (seq2seq)
    xlabel: str = "keys"
    ylabel: str = "queries"
    note: str = ""
    image: Tensor | None = None  # an image source (C, H, W) or clip (F, C, H, W), in [-1, 1]: the columns are its
    grid: int | None = None  # patches, `grid` per side of each of `frames` frames (None: one pooled vector)
    frames: int = 1
    spectrogram: Tensor | None = None  # an audio source's log-mel (M, F): the columns are its encoder states

    def pick(self, layer: int = -1, head: int | None = None) -> AttentionMap:
        """One layer's map: a head, or the mean over heads."""
        n = self.weights.size(0)
        if not -n <= layer < n:
            raise QKVError(f"layer {layer} is out of range: the model has {n} layers (0..{n - 1}, or -1 for the last)")
        w = self.weights[layer]  # (H, rows, cols)
        if head is None:
            w, heads = w.mean(dim=0), "mean over heads"
        elif 0 <= head < w.size(0):
            w, heads = w[head], f"head {head}"
        else:
            raise QKVError(f"head {head} is out of range: the model has {w.size(0)} heads (0..{w.size(0) - 1})")
        where = "decoder layer" if self.kind == "cross-attention" else "layer"
        return AttentionMap(w, self.rows, self.cols, f"{self.kind}, {where} {layer % n}, {heads}", self.text,
                            self.xlabel, self.ylabel, self.note)


@torch.no_grad()
def seq2seq_attention(model, src_tok, tgt_tok, text: str, decode_cfg) -> AttentionStack:
    """Every decoder layer's cross-attention while translating `text` (produced target tokens × source tokens)."""
    from qkv.data.translation import source_ids

    if not text.strip():
        raise QKVError("the source sentence is empty")
    (src_ids,), _ = source_ids(src_tok, [text.strip()], model.config.max_seq_len)
    src = torch.tensor([src_ids], device=model.lm_head.weight.device)  # (1, S)
    stack = source_attention(model, src, torch.ones_like(src, dtype=torch.bool),
                             [token_label(src_tok, i) for i in src_ids], tgt_tok, decode_cfg)
    stack.xlabel, stack.note = "source tokens", f"translation: {stack.text}"
    return stack


@torch.no_grad()
def source_attention(model, src: Tensor, src_mask: Tensor, src_labels: list[str], tgt_tok, decode_cfg,
                     decoded: list[int] | None = None) -> AttentionStack:
    """Decode one source (src (1, S) ids or (1, ...) an image, its memory mask (1, S)) with `decode_cfg` (or take
    the output ids `decoded` as they are), then re-run the decoder teacher-forced on BOS + the output with every
    layer's cross-attention kept: produced target tokens × source positions, labelled `src_labels`."""
    from qkv.generation.seq2seq import decode_batch, max_lengths

    model.eval()
    bos, eos = tgt_tok.bos_id, tgt_tok.eos_id
    if decoded is None:
        (out_ids,) = decode_batch(model, src, src_mask, bos, eos, decode_cfg, tgt_tok.vocab_size)
    else:
        out_ids = list(decoded)
    out_ids = out_ids[: model.config.max_seq_len - 1]
    tgt_in = torch.tensor([[bos] + out_ids], device=src_mask.device)  # (1, T)
    w = torch.cat(model.cross_attention_maps(src, src_mask, tgt_in))  # L × (1, H, T, S) -> (L, H, T, S)
    rows = [token_label(tgt_tok, i) for i in out_ids]  # row t: the query that produced target token t
    limit = max_lengths(src_mask, decode_cfg.max_len_a, decode_cfg.max_len_b, model.config.max_seq_len)[0]
    if len(out_ids) < limit:  # finished with EOS: the last row is the step that produced it
        rows.append(token_label(tgt_tok, eos))
    else:  # stopped by the length limit: the last row predicted nothing that was kept
        w = w[:, :, :-1]
    text = tgt_tok.decode(out_ids)
    return AttentionStack(w.float().cpu(), rows, src_labels, "cross-attention", text, "source positions",
                          "produced target tokens", f"output: {text}")


def seq2seq_alignment(model, src_tok, tgt_tok, text: str, decode_cfg, layer: int = -1,
                      head: int | None = None) -> AttentionMap:
    """Cross-attention of decoder layer `layer` while translating `text` (source tokens × target tokens)."""
    return seq2seq_attention(model, src_tok, tgt_tok, text, decode_cfg).pick(layer, head)


@torch.no_grad()
def gpt_attention(model, tok, text: str) -> AttentionStack:
    """Every layer's causal self-attention of a GPT over `text` (tokens × tokens, lower-triangular)."""
    if not text:
        raise QKVError("the text is empty")
    model.eval()
    ids = tok.encode(text)
    if len(ids) > model.config.max_seq_len:
        raise QKVError(f"the text has {len(ids)} tokens; the model's context is {model.config.max_seq_len}")
    idx = torch.tensor([ids], device=next(model.parameters()).device)  # (1, T)
    w = torch.cat(model.attention_maps(idx))  # L × (1, H, T, T) -> (L, H, T, T)
    labels = [token_label(tok, i) for i in ids]
    return AttentionStack(w.float().cpu(), labels, labels, "self-attention", text, "attended token (key)",
                          "reading token (query)")


def gpt_self_attention(model, tok, text: str, layer: int = -1, head: int | None = None) -> AttentionMap:
    """Causal self-attention of GPT layer `layer` over `text` (tokens × tokens)."""
    return gpt_attention(model, tok, text).pick(layer, head)


def plot_attention(amap: AttentionMap, out: str | Path, xlabel: str | None = None, ylabel: str | None = None) -> Path:
    """Write the map as a heatmap PNG (darker = more weight); returns the path. Axis labels: the map's own."""
    xlabel, ylabel = xlabel or amap.xlabel, ylabel or amap.ylabel
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_rows, n_cols = amap.weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * n_cols + 2), max(3.0, 0.4 * n_rows + 1.5)), dpi=110)
    im = ax.imshow(amap.weights.float().numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n_cols), amap.cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), amap.rows, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(amap.title, fontsize=9)
    for r0, r1, c0, c1 in amap.boxes:  # outlined cells, drawn over the heatmap; inset so edge boxes clear the frame
        ax.add_patch(Rectangle((c0 - 0.45, r0 - 0.45), c1 - c0 - 0.1, r1 - r0 - 0.1, fill=False,
                               edgecolor="tab:red", linewidth=1.5))
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
