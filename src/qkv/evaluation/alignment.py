"""Word alignments read off a translation model's cross-attention, scored against reference alignments.

Shapes: L decoder layers, H heads, T target tokens (rows: row t is the query that produced target token t;
the last row produces EOS), S source tokens (the last is EOS), Tw / Sw target / source words.

1. **Tokens -> words** (`token_words`, `label_words`): a sentence's tokens are grouped into the words of
   `qkv.data.alignment.split_words` (the words the reference aligner saw, so word indices agree). Special
   tokens (EOS, BOS) are words of their own, left out when scoring.
2. **Merging attention** (`merge_attention`): a source word receives the attention mass of all its pieces
   (summed over columns); a target word's row is the mean of its pieces' rows, so each word row still sums
   to 1 over the source words (specials included):
       W_words = (M_tgt / |pieces|)ᵀ · W · M_src      (Tw, T) · (T, S) · (S, Sw) -> (Tw, Sw)
   with M_src (S, Sw) and M_tgt (T, Tw) the 0/1 piece-to-word memberships (`membership`).
3. **Hard alignment** (`hard_links`): each target word links to the ordinary source word with the most
   attention mass; EOS and BOS are neither linked nor linked to. One alignment per decoder layer and head,
   and one from the mean of each layer's heads.
4. **Scores** (Och & Ney 2003), corpus-level: with hypothesis links A, sure links S and possible links
   P ⊇ S, summed over the sentences,
       precision = |A ∩ P| / |A|,   recall = |A ∩ S| / |S|,   AER = 1 − (|A ∩ S| + |A ∩ P|) / (|A| + |S|).
   A reference with one kind of link (eflomal's) has S = P, and then AER = 1 − F1 of precision and recall.
   A model-free baseline is reported beside them (`diagonal_scores`): target word j of Tw -> source word
   round(j · Sw / Tw).

The attention is computed teacher-forced on the *reference* translation, because the reference alignment
links source words to the reference's words (`alignment_scores`); `reference_attention` does the same for
one sentence and returns the map with the reference links as boxes, for `qkv attention`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from qkv.data.alignment import Alignments, split_words, words_of_pieces
from qkv.errors import QKVError

# ------------------------------------------------------------------------------------------------ words
Words = list[tuple[str, list[int]]]  # (the word, the positions of its pieces), in order

_LABEL_SPACES = {"▁": " ", "⏎": "\n", "⇥": "\t", "␍": "\r"}  # token_label's visible stand-ins


def special_token_ids(tok) -> set[int]:
    """The ids of a tokenizer's special tokens (pad, bos, eos, unk): each one a word of its own."""
    return {i for i in (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) if i is not None}


def token_words(tok, ids: Sequence[int], keep_specials: bool = True) -> Words:
    """The words of a token sequence, from the tokens' exact bytes (`qkv.data.alignment.words_of_pieces`).
    With keep_specials=False the special tokens' words are left out: what remains lines up, word for word,
    with ``split_words`` of the sentence (for a sentence not cut by the context)."""
    specials = special_token_ids(tok)
    flags = [i in specials for i in ids]
    words = words_of_pieces([tok.token_bytes(i) for i in ids], flags)
    if keep_specials:
        return words
    return [w for w in words if not (len(w[1]) == 1 and flags[w[1][0]])]


def check_words(words: Words, line: str, side: str, k: int) -> None:
    """QKVError (one line) unless the words of a sentence's tokens (`token_words`, specials left out) are the
    words `split_words` gives the aligner for its line, so that word indices agree. A word cut by the context may
    end early, so the last one is not compared. `side` ("source"/"target") and pair `k` (0-based) name it."""
    expected = split_words(line)
    n = max(len(words) - 1, 0)
    if len(words) > len(expected) or [w for w, _ in words[:n]] != expected[:n]:
        raise QKVError(f"pair {k + 1}: the {side} tokenizer's pieces do not spell the words of the sentence "
                       f"({[w for w, _ in words][:6]} vs {expected[:6]}); word alignment needs a tokenizer whose "
                       "tokens concatenate to the text")


def label_words(labels: Sequence[str], specials: set[str]) -> Words:
    """The words of printed token labels (`qkv.evaluation.attention.token_label`: '▁' for a space), as
    `token_words` would group the tokens; a label in `specials` is a word of its own. Labels show a byte cut
    mid-character as an escape (``\\x86``), read back here as that one character, so each label is at least one
    word's piece; prefer `token_words` where the ids are at hand.
    Example: ``["die", "▁", "dr", "ei", "▁eins", "▁.", "<eos>"]``, {"<eos>"} ->
    ``[("die", [0]), ("drei", [1, 2, 3]), ("eins", [4]), (".", [5]), ("<eos>", [6])]``."""
    unescaped = [re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m[1], 16)), label) for label in labels]  # \x86
    pieces = ["".join(_LABEL_SPACES.get(c, c) for c in label).encode("utf-8") for label in unescaped]
    return words_of_pieces(pieces, [label in specials for label in labels])


def membership(words: Words, n: int) -> Tensor:
    """(n pieces, n words) 0/1: column w marks the pieces of word w."""
    m = torch.zeros(n, len(words))
    for w, (_, pieces) in enumerate(words):
        m[pieces, w] = 1.0
    return m


def merge_attention(weights: Tensor, to_src: Tensor, to_tgt: Tensor) -> Tensor:
    """Token attention (..., T, S) -> word attention (..., Tw, Sw): summed over a source word's pieces, averaged
    over a target word's pieces (module docstring). to_src (S, Sw), to_tgt (T, Tw) from `membership`."""
    mean_tgt = to_tgt / to_tgt.sum(dim=0).clamp(min=1.0)  # (T, Tw): each column averages its word's pieces
    # numpy for these tiny per-sentence products: with torch's intra-op threads on (2 cores, shared) one call took
    # ~30 ms instead of ~0.05 ms, more than the model's forward pass
    w = weights.detach().float().cpu().numpy()
    return torch.from_numpy(mean_tgt.T.numpy() @ w @ to_src.numpy())  # (Tw, T) @ (..., T, S) @ (S, Sw) -> (..., Tw, Sw)


def word_attention(weights: Tensor, src_words: Words, tgt_words: Words) -> Tensor:
    """`merge_attention` with the memberships of the given words: (..., T, S) -> (..., Tw, Sw)."""
    T, S = weights.shape[-2:]
    return merge_attention(weights, membership(src_words, S), membership(tgt_words, T))


def hard_links(word_weights: Tensor) -> list[set[tuple[int, int]]]:
    """Word attention (..., Tw, Sw) between ordinary words (specials' rows and columns left out) -> for each
    leading index, the links {(source word, target word)}: every target word to its most-attended source word.

    Example: [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]] (2 target words × 3 source words) -> [{(0, 0), (2, 1)}].
    """
    Tw, Sw = word_weights.shape[-2:]
    n = word_weights.shape[:-2].numel()  # the leading indices (layers × heads)
    if Sw == 0 or Tw == 0:  # an empty side: no links
        return [set() for _ in range(n)]
    best = word_weights.reshape(n, Tw, Sw).argmax(dim=-1).tolist()  # (N, Tw)
    return [{(i, j) for j, i in enumerate(row)} for row in best]


# ------------------------------------------------------------------------------------------------ scores
def link_counts(hyp, sure, possible=None) -> tuple[int, int, int, int]:
    """(|A|, |S|, |A ∩ S|, |A ∩ P|) of one sentence; P = S when `possible` is None."""
    hyp, sure = set(hyp), set(sure)
    possible = set(possible) | sure if possible is not None else sure
    return len(hyp), len(sure), len(hyp & sure), len(hyp & possible)


def scores_from_counts(a: int, s: int, a_s: int, a_p: int) -> dict:
    """AER, precision and recall (as fractions) from summed counts (module docstring); empty sets score 0."""
    return {"aer": 1.0 - (a_s + a_p) / (a + s) if a + s else 0.0,
            "precision": a_p / a if a else 0.0, "recall": a_s / s if s else 0.0}


def aer(hyp, sure, possible=None) -> float:
    """Alignment error rate of one link set (Och & Ney 2003): 1 − (|A∩S| + |A∩P|) / (|A| + |S|)."""
    return scores_from_counts(*link_counts(hyp, sure, possible))["aer"]


# ------------------------------------------------------------------------------------------------ a model
@torch.no_grad()
def alignment_scores(model, src_tok, tgt_tok, ref: Alignments, batch_tokens: int = 4000,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Score the hard alignments of every decoder layer × head (and each layer's head mean) against `ref`.

    The model reads each (source, reference translation) pair teacher-forced; its cross-attention is merged
    to words and the links extracted as in the module docstring. Returns the corpus-level scores per layer and
    head ("head" is an index or "mean"), the best entry, and what was compared.
    """
    from qkv.data.translation import collate, encode_lines, make_examples, special_ids

    if not len(ref):
        raise QKVError("no sentence pairs to score the alignment on")
    model.eval()
    pad, bos, eos = special_ids(tgt_tok)
    T_max = model.config.max_seq_len
    ex = make_examples(encode_lines(src_tok, ref.src), encode_lines(tgt_tok, ref.tgt), T_max, eos, skip_empty=False)
    device = model.lm_head.weight.device
    L, H = model.config.n_decoder_layers, model.config.n_heads
    counts = np.zeros((L, H + 1, 4), dtype=np.int64)  # |A|, |S|, |A ∩ S|, |A ∩ P| per layer × (heads + mean)
    cost = [max(len(s), len(t) + 1) for s, t in zip(ex.src, ex.tgt, strict=True)]
    order = sorted(range(len(cost)), key=cost.__getitem__)
    batches, cur = [], []
    for k in order:
        if cur and cost[k] * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(k)
    if cur:
        batches.append(cur)
    for n_done, idx in enumerate(batches):
        b = collate([ex.src[k] for k in idx], [ex.tgt[k] for k in idx], pad, bos, eos)
        maps = model.cross_attention_maps(b["src"].to(device), b["src_mask"].to(device), b["tgt_in"].to(device))
        w = torch.stack(maps, dim=1).float().cpu()  # L × (B, H, T, S) -> (B, L, H, T, S)
        w = torch.cat([w, w.mean(dim=2, keepdim=True)], dim=2)  # (B, L, H + 1, T, S): the head mean last
        for row, k in enumerate(idx):
            s_ids, t_ids = ex.src[k], ex.tgt[k]
            src_words = token_words(src_tok, s_ids, keep_specials=False)
            tgt_words = token_words(tgt_tok, t_ids, keep_specials=False)
            check_words(src_words, ref.src[k], "source", k)
            check_words(tgt_words, ref.tgt[k], "target", k)
            sure, possible = ref.sure[k], ref.possible[k]
            ww = word_attention(w[row, :, :, : len(t_ids), : len(s_ids)], src_words, tgt_words)  # (L, H+1, Tw, Sw)
            for n, hyp in enumerate(hard_links(ww)):
                counts[n // (H + 1), n % (H + 1)] += link_counts(hyp, sure, possible)
        if progress and (n_done + 1) % 20 == 0:
            progress(f"alignment: {sum(len(i) for i in batches[: n_done + 1]):,}/{len(ex.src):,} sentence pairs")
    rows = []
    for layer in range(L):
        for h in range(H + 1):
            a, s, a_s, a_p = counts[layer, h].tolist()
            rows.append({"layer": layer, "head": h if h < H else "mean", **scores_from_counts(a, s, a_s, a_p),
                         "hyp_links": a})
    best = min(rows, key=lambda r: (r["aer"], r["layer"], str(r["head"])))
    sure_total = int(counts[0, 0, 1])
    possible_total = sum(len(p) for p in ref.possible)
    return {"reference": ref.meta.get("reference") or _describe(ref), "sentences": len(ref),
            "sure_links": sure_total, "possible_links": possible_total, "one_link_kind": possible_total == sure_total,
            "truncated_pairs": ex.truncated, "layers": L, "heads": H, "scores": rows, "best": best,
            "diagonal": diagonal_scores(ref), "cache": str(ref.path) if ref.path else None}


def diagonal_scores(ref: Alignments) -> dict:
    """The scores of a model-free baseline: target word j of Tw links to source word round(j · Sw / Tw)."""
    total = np.zeros(4, dtype=np.int64)
    for src, tgt, sure, possible in zip(ref.src, ref.tgt, ref.sure, ref.possible, strict=True):
        n_src, n_tgt = len(split_words(src)), len(split_words(tgt))
        diagonal = {(min(n_src - 1, round(j * n_src / n_tgt)), j) for j in range(n_tgt)} if n_src else set()
        total += link_counts(diagonal, sure, possible)
    return scores_from_counts(*total.tolist())


def _describe(ref: Alignments) -> str:
    m = ref.meta
    if "aligner" in m:
        return f"{m['aligner']}, {m['symmetrization']} (model {m['settings']['model']}, {m['pairs']:,} pairs aligned)"
    return "reference alignments"


def alignment_report(r: dict) -> list[str]:
    """`alignment_scores`' result as the lines `qkv eval --alignment` prints."""
    kind = "S = P: one link kind" if r["one_link_kind"] else f"{r['possible_links']:,} possible"
    lines = [f"word alignment vs {r['reference']}: {r['sentences']:,} sentence pairs, {r['sure_links']:,} sure links "
             f"({kind})",
             "each reference word -> the source word its cross-attention row gives most mass (teacher-forced); in %",
             f"{'decoder layer':>13}  {'head':>4}  {'AER':>6}  {'precision':>9}  {'recall':>6}"]
    for row in r["scores"]:
        lines.append(f"{row['layer']:>13}  {row['head']!s:>4}  {100 * row['aer']:6.2f}  {100 * row['precision']:9.2f}"
                     f"  {100 * row['recall']:6.2f}")
    d = r["diagonal"]
    lines.append(f"{'diagonal':>13}  {'-':>4}  {100 * d['aer']:6.2f}  {100 * d['precision']:9.2f}  "
                 f"{100 * d['recall']:6.2f}  (no model: target word j -> source word j·S/T)")
    b = r["best"]
    which = "the mean of its heads" if b["head"] == "mean" else f"head {b['head']}"
    lines.append(f"best: decoder layer {b['layer']}, {which}: AER {100 * b['aer']:.2f} "
                 f"(precision {100 * b['precision']:.2f}, recall {100 * b['recall']:.2f})")
    if r["truncated_pairs"]:
        lines.append(f"note: {r['truncated_pairs']} pair(s) longer than the context were cut; their cut words have "
                     "no hypothesis links")
    return lines


# ------------------------------------------------------------------------------------------------ one sentence
@torch.no_grad()
def reference_attention(model, src_tok, tgt_tok, source: str, target: str, links, layer: int = -1,
                        head: int | None = None):
    """The cross-attention map of decoder `layer` (a head, or the head mean) while the model reads `source` and
    the reference `target` teacher-forced, with the reference word links as boxes over their token cells."""
    from qkv.data.translation import source_ids
    from qkv.evaluation.attention import AttentionStack, token_label

    model.eval()
    T_max = model.config.max_seq_len
    (s_ids,), _ = source_ids(src_tok, [source.strip()], T_max)
    t_ids = tgt_tok.encode(target.strip())[: T_max - 1]
    device = model.lm_head.weight.device
    src = torch.tensor([s_ids], device=device)  # (1, S)
    tgt_in = torch.tensor([[tgt_tok.bos_id] + t_ids], device=device)  # (1, T)
    w = torch.cat(model.cross_attention_maps(src, torch.ones_like(src, dtype=torch.bool), tgt_in))  # (L, H, T, S)
    rows = [token_label(tgt_tok, i) for i in t_ids] + [token_label(tgt_tok, tgt_tok.eos_id)]
    stack = AttentionStack(w.float().cpu(), rows, [token_label(src_tok, i) for i in s_ids], "cross-attention",
                           target.strip(), "source tokens", "reference target tokens (teacher-forced)",
                           f"reference: {target.strip()}")
    amap = stack.pick(layer, head)
    amap.title += "; red boxes: reference word links"
    src_words = token_words(src_tok, s_ids, keep_specials=False)
    tgt_words = token_words(tgt_tok, t_ids, keep_specials=False)
    for i, j in sorted(links):
        if i < len(src_words) and j < len(tgt_words):
            r, c = tgt_words[j][1], src_words[i][1]
            amap.boxes.append((min(r), max(r) + 1, min(c), max(c) + 1))
    return amap
