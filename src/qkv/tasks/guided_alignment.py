"""Guided alignment: one cross-attention head learns the reference word alignment beside the translation.

Garg et al. 2019, "Jointly Learning to Align and Translate with Transformer Models" (EMNLP). A translation run
with ``train.alignment_weight = w > 0`` trains one head of one decoder layer's cross-attention
(``train.alignment_layer``, default the penultimate layer as in Garg et al.; ``train.alignment_head``, default 0)
toward the reference word alignment of its training pairs, with a cross-entropy term beside the translation loss:

    L = L_translation + w · L_align

    L_align = −(1 / |R|) Σ_{t ∈ R} Σ_s p_ts · log a_ts

- a_ts: the head's attention (B, T, S) of target row t (the decoder query that predicts ``tgt_out[t]``) on
  source token s, before attention dropout; each row sums to 1 over the real source tokens.
- p_ts: the reference links of row t normalised to sum 1: uniform over the source tokens the target token is
  linked to (`alignment_targets`). A target word linked to k source words, each of m pieces, spreads 1/(k·m)
  over them; each piece of a target word gets the links of its word.
- R: the rows with at least one link. Rows without links (EOS, unaligned words, padding) are left out of both
  the sum and the count.

L_translation is the label-smoothed mean over the batch's target tokens (``smoothed_loss``). Both terms are
means over one micro-batch; under gradient accumulation or torchrun the Trainer weighs each micro-batch by its
target tokens, so the alignment term of a step is the token-weighted mean of its micro-batches' row means (the
exact L_align of the whole batch when they share one batch).

The reference links come from `qkv.data.alignment`: eflomal's alignment of the run's training pairs, computed
once and cached (``pip install 'qkv[align]'``), or a Pharaoh link file (``train.alignment_file``, line-aligned
with the training corpus). `example_links` maps each training example's word links onto its (truncated) token
positions exactly as `qkv.evaluation.alignment` reads attention rows and columns, so a guided head is scored
(``qkv eval --alignment``) where it is trained. The batches carry them as ``batch["align"]`` (B, T, S) bool
(`qkv.data.translation.collate`), so a process gets the links of its own rows under torchrun, and resume
re-reads the same cached alignment.

Logged: ``align_loss``, the running L_align (per linked row) on the progress bar, and ``train_align_loss`` at
every evaluation (metrics.jsonl). Validation loss and BLEU are those of the translation alone.

Shape legend: B batch, H heads, T target length (+1 for EOS), S source length (+1 for EOS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from qkv.data.alignment import Alignments, read_alignment_file, reference_alignments, token_links, training_pairs
from qkv.data.translation import Examples
from qkv.errors import QKVError
from qkv.evaluation.alignment import check_words, token_words

EPS = 1e-7  # inside the log, as fairseq's implementation of Garg et al.: a link with no attention costs ~16, not inf


@dataclass(frozen=True)
class Guide:
    """Which head is guided, and how strongly: the resolved ``train.alignment_*`` settings."""

    weight: float  # w
    layer: int  # decoder layer, 0-based
    head: int  # head of that layer's cross-attention, 0-based


def guide_of(train_cfg, model_cfg) -> Guide | None:
    """The guided head of a run (None when ``train.alignment_weight`` is 0); a layer or head outside the model
    is a one-line QKVError naming the range."""
    layers, heads = model_cfg.n_decoder_layers, model_cfg.n_heads
    layer = train_cfg.alignment_layer if train_cfg.alignment_layer is not None else max(layers - 2, 0)
    if not 0 <= layer < layers:
        raise QKVError(f"train.alignment_layer {layer} is outside the decoder's layers 0..{layers - 1}")
    if not 0 <= train_cfg.alignment_head < heads:
        raise QKVError(f"train.alignment_head {train_cfg.alignment_head} is outside the heads 0..{heads - 1}")
    if train_cfg.alignment_weight == 0:
        return None
    return Guide(train_cfg.alignment_weight, layer, train_cfg.alignment_head)


# ------------------------------------------------------------------------------------------ the links
def training_alignments(data_cfg, alignment_file: str | None = None,
                        progress: Callable[[str], None] | None = None) -> Alignments:
    """The reference word alignment of the training corpus of `data_cfg` (all of it: `load_split` takes a prefix,
    so line k is training pair k): the Pharaoh file `alignment_file`, which must have one line per pair, or else
    eflomal's, read from the cache or computed (a QKVError saying how to install eflomal if it is missing)."""
    if alignment_file is not None:
        src, tgt, _ = training_pairs(data_cfg)
        return read_alignment_file(alignment_file, src, tgt)
    return reference_alignments(data_cfg, progress=progress)


def example_links(ref: Alignments, ex: Examples, src_lines: list[str], tgt_lines: list[str], src_tok, tgt_tok
                  ) -> list[list[tuple[int, int]]]:
    """Per example of `ex` (`make_examples` of `src_lines`/`tgt_lines`, the first lines of `ref`), its reference
    links as (target position t, source position s) token pairs. `ex.index` says which line each example is
    (pairs with an empty side were dropped); links to words the context cut off are dropped too.

    Example: source "ein Hund ." -> tokens [ein][ Hu][nd][ .][EOS], target "a dog ." -> [a][ dog][ .], word
    links {(0, 0), (1, 1), (2, 2)} -> [(0, 0), (1, 1), (1, 2), (2, 3)]."""
    n = len(src_lines)
    if len(ref) < n or ref.src[:n] != list(src_lines) or ref.tgt[:n] != list(tgt_lines):
        raise QKVError(f"the reference alignment ({ref.path}) is not of these training pairs: its sentence pairs "
                       "differ from the data's")
    out = []
    for s_ids, t_ids, k in zip(ex.src, ex.tgt, ex.index, strict=True):
        src_words = token_words(src_tok, s_ids, keep_specials=False)  # EOS left out
        tgt_words = token_words(tgt_tok, t_ids, keep_specials=False)
        check_words(src_words, src_lines[k], "source", k)
        check_words(tgt_words, tgt_lines[k], "target", k)
        out.append(token_links([p for _, p in src_words], [p for _, p in tgt_words], ref.sure[k]))
    return out


def attach_links(ex: Examples, ref: Alignments, src_lines: list[str], tgt_lines: list[str], src_tok, tgt_tok,
                 guide: Guide, say: Callable[[str], None]) -> dict:
    """Set ``ex.links`` (`example_links`), so that every batch of `ex` carries its links; say what is guided and
    return it for config.json's data_meta."""
    ex.links = example_links(ref, ex, src_lines, tgt_lines, src_tok, tgt_tok)
    rows = sum(len({t for t, _ in pairs}) for pairs in ex.links)
    tokens = sum(len(t) + 1 for t in ex.tgt)  # + EOS, whose row has no link
    where = ref.meta.get("reference") or str(ref.path)
    say(f"guided alignment: decoder layer {guide.layer}, head {guide.head}, weight {guide.weight:g}; "
        f"{rows:,} of {tokens:,} target tokens have reference links ({where})")
    return {"reference": where, "layer": guide.layer, "head": guide.head, "linked_rows": rows,
            "links": sum(map(len, ex.links))}


# ------------------------------------------------------------------------------------------ the loss
def alignment_targets(align: Tensor) -> tuple[Tensor, Tensor]:
    """Links (B, T, S) bool -> (p (B, T, S) float, each linked row normalised to sum 1 and every other row 0;
    has_links (B, T) bool). Example: a row [1, 0, 1] -> [0.5, 0, 0.5]; a row [0, 0, 0] stays 0 (excluded)."""
    p = align.float()  # (B, T, S)
    per_row = p.sum(dim=-1, keepdim=True)  # (B, T, 1) links of each row
    return p / per_row.clamp(min=1.0), per_row.squeeze(-1) > 0  # (B, T, S), (B, T)


def alignment_loss(attn: Tensor, align: Tensor) -> tuple[Tensor, int]:
    """(Σ over linked rows of −Σ_s p_ts log a_ts, the number of linked rows |R|): L_align = the first / the
    second (module docstring). attn (B, T, S), one head's cross-attention; align (B, T, S) bool, the links."""
    p, has_links = alignment_targets(align)  # (B, T, S), (B, T)
    log_a = (attn.float() + EPS).log()  # (B, T, S); padded source columns have a = 0 and p = 0
    row_ce = -(p * log_a).sum(dim=-1)  # (B, T), 0 on rows without links
    return row_ce.sum(), int(has_links.sum())


def guided_loss(model: nn.Module, batch: dict, guide: Guide,
                token_loss: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, int]]) -> tuple[Tensor, dict]:
    """L = L_translation + w · L_align for a training batch that carries "align", and the Trainer's info: the
    token count, the NLL and L_align as (total, count) running means. token_loss(logits, targets) -> (loss, NLL,
    target tokens): the translation objective. One teacher-forced forward through `model` (DDP-safe)."""
    logits, _, weights = model(batch["src"], batch["src_mask"], batch["tgt_in"],
                               cross_attention_layer=guide.layer)  # (B, T, V), (B, H, T, S)
    loss, nll, n = token_loss(logits, batch["tgt_out"])
    total, rows = alignment_loss(weights[:, guide.head], batch["align"])  # one head: (B, T, S)
    if rows:
        loss = loss + guide.weight * total / rows
    return loss, {"tokens": int(batch["src_mask"].sum()) + n, "nll": (nll.item() * n, n),
                  "align_loss": (total.item(), rows)}
