"""Topic `alignment`: where the decoder looked in the source while it produced each word (Bahdanau et al. 2015).

The run translates the source (its own decoding settings), then the decoder is re-run teacher-forced on
(BOS + translation) with its cross-attention weights kept (`qkv.evaluation.attention.seq2seq_attention`, what
`qkv attention` draws): row t is the query that produced target token t. Subword tokens are merged into words
(BPE: a piece that starts with a space, '▁', begins a new word; special tokens are words of their own): the
weights are summed over a source word's pieces (the mass the word received) and averaged over a target word's
pieces (each piece's row is a distribution), so each word-level row still sums to 1 (checked, as are the
token-level rows). One decoder layer (default the last), the mean over its heads unless --head picks one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.evaluation.attention import seq2seq_attention, token_label
from qkv.explain.base import Explanation, Options, heatmap, need, no_grad, pick
from qkv.explain.inputs import default_text

LESSON = ("In cross-attention each target token the decoder produces spreads one unit of attention over the "
          "source tokens. Read row by row, the weights form a soft alignment: which source words the model was "
          "reading while it wrote each word of the translation. Attention is not an explanation of the "
          "model's decision, but on a trained translation model the strongest weights often pair a word with its "
          "translation.")


@no_grad
def explain_alignment(run, opts: Options) -> Explanation:
    need(run, ("translate",), "alignment")
    e = Explanation("alignment", "each produced word's cross-attention over the source words", run.path.name)
    e.say(LESSON)
    text = default_text(run, opts)
    stack = seq2seq_attention(run.model, run.src_tokenizer, run.tgt_tokenizer, text, run.decoding())
    n_layers, n_heads = stack.weights.shape[:2]
    layer = pick(opts.layer, n_layers, "layer", n_layers - 1)
    head = None if opts.head is None else pick(opts.head, n_heads, "head", 0)
    amap = stack.pick(layer, head)
    weights = amap.weights  # (T, S): produced target tokens × source tokens
    e.say(f"source: {text.strip()!r}; translation: {stack.text!r}; decoder layer {layer} of {n_layers}, "
          + (f"head {head}" if head is not None else f"mean over its {n_heads} heads"))
    e.tensor("cross-attention weights", weights, "produced target token (row) × source token (column)", amap.rows)
    e.check("each token-level row sums to 1", weights.sum(dim=-1), torch.ones(weights.size(0)))

    src_words = _words(amap.cols, _specials(run.src_tokenizer))
    tgt_words = _words(amap.rows, _specials(run.tgt_tokenizer))
    to_src = _membership(src_words, len(amap.cols))  # (S, S_words): 1 where a piece belongs to a word
    to_tgt = _membership(tgt_words, len(amap.rows))  # (T, T_words)
    to_tgt = to_tgt / to_tgt.sum(dim=0)  # each column averages its word's pieces
    words = to_tgt.T @ weights @ to_src  # (T_words, T) @ (T, S) @ (S, S_words) -> (T_words, S_words)
    src_names, tgt_names = [w for w, _ in src_words], [w for w, _ in tgt_words]
    e.say(f"{len(amap.cols)} source tokens -> {len(src_names)} words; {len(amap.rows)} produced tokens -> "
          f"{len(tgt_names)} words (summed over a source word's pieces, averaged over a produced word's pieces)")
    e.tensor("word-level weights", words, "produced word (row) × source word (column)", tgt_names)
    e.check("each word-level row sums to 1", words.sum(dim=-1), torch.ones(words.size(0)))
    best = words.argmax(dim=-1)  # (T_words,)
    e.table(["produced word", "most attended source word", "attention mass"],
            [[t, src_names[int(j)], words[i, j].item()] for i, (t, j) in enumerate(zip(tgt_names, best, strict=True))],
            "each produced word and the source word it attended to most")

    e.data.update(source=text.strip(), translation=stack.text, layer=layer, head=head, source_words=src_names,
                  target_words=tgt_names, alignment=[[t, src_names[int(j)]] for t, j in zip(tgt_names, best,
                                                                                              strict=True)])
    data = {"rows": tgt_names, "cols": src_names, "weights": words, "layer": layer, "head": head}
    title = f"decoder layer {layer}, " + (f"head {head}" if head is not None else "mean over heads")
    size = (max(5.0, 0.6 * len(src_names) + 3), max(4.0, 0.4 * len(tgt_names) + 2))
    e.figure("words", f"word alignment: {title}", lambda fig: heatmap(
        fig.add_subplot(1, 1, 1), data["weights"], data["rows"], data["cols"], "source word", "produced word",
        f"translation: {stack.text}"), data, size)
    return e


def _specials(tok) -> set[str]:
    """The labels of a tokenizer's special tokens (each one a word of its own)."""
    ids = (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)
    return {token_label(tok, i) for i in ids if i is not None}


def _words(labels: list[str], specials: set[str]) -> list[tuple[str, list[int]]]:
    """Pieces -> words: (the word, the positions of its pieces). A piece starting with '▁' (a space) starts a
    word; so does a special token, and the piece after one."""
    words: list[tuple[str, list[int]]] = []
    for i, label in enumerate(labels):
        if not words or label.startswith("▁") or label in specials or labels[i - 1] in specials:
            words.append(("", []))
        text, pieces = words[-1]
        words[-1] = (text + label, pieces + [i])
    return [(text.replace("▁", " ").strip() or "▁", pieces) for text, pieces in words]


def _membership(words: list[tuple[str, list[int]]], n: int) -> Tensor:
    """(n pieces, n words) 0/1: column w marks the pieces of word w."""
    m = torch.zeros(n, len(words))
    for w, (_, pieces) in enumerate(words):
        m[pieces, w] = 1.0
    return m
