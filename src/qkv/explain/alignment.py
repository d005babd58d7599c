"""Topic `alignment`: where the decoder looked in the source while it produced each word (Bahdanau et al. 2015).

The run translates the source (its own decoding settings), then the decoder is re-run teacher-forced on
(BOS + translation) with its cross-attention weights kept (`qkv.evaluation.attention.seq2seq_attention`, what
`qkv attention` draws): row t is the query that produced target token t. Subword tokens are merged into words
by `qkv.evaluation.alignment` (the words of `qkv.data.alignment.split_words`, which `qkv eval --alignment`
scores against reference alignments; special tokens are words of their own): the weights are summed over a
source word's pieces (the mass the word received) and averaged over a target word's pieces (each piece's row
is a distribution), so each word-level row still sums to 1 (checked, as are the token-level rows). One
decoder layer (default the last), the mean over its heads unless --head picks one.
"""

from __future__ import annotations

import torch

from qkv.evaluation.alignment import label_words as _words
from qkv.evaluation.alignment import membership as _membership
from qkv.evaluation.alignment import merge_attention, special_token_ids
from qkv.evaluation.attention import token_label
from qkv.explain.base import Explanation, Options, heatmap, no_grad, pick
from qkv.explain.inputs import source_of

LESSON = ("In cross-attention each target token the decoder produces spreads one unit of attention over the "
          "source tokens. Read row by row, the weights form a soft alignment: which source words the model was "
          "reading while it wrote each word of the translation. Attention is not an explanation of the "
          "model's decision, but on a trained translation model the strongest weights often pair a word with its "
          "translation.")


@no_grad
def explain_alignment(run, opts: Options) -> Explanation:
    e = Explanation("alignment", "each produced word's cross-attention over the source words", run.path.name)
    e.say(LESSON)
    text = source_of(run, opts)
    src_tok, tgt_tok = run.text_tokenizer()[0], run.target_tokenizer
    stack = run.cross_attention(text, run.decoding())
    n_layers, n_heads = stack.weights.shape[:2]
    layer = pick(opts.layer, n_layers, "layer", n_layers - 1)
    head = None if opts.head is None else pick(opts.head, n_heads, "head", 0)
    amap = stack.pick(layer, head)
    weights = amap.weights  # (T, S): produced target tokens × source tokens
    e.say(f"source: {text.strip()!r}; translation: {stack.text!r}; decoder layer {layer} of {n_layers}, "
          + (f"head {head}" if head is not None else f"mean over its {n_heads} heads"))
    e.tensor("cross-attention weights", weights, "produced target token (row) × source token (column)", amap.rows)
    e.check("each token-level row sums to 1", weights.sum(dim=-1), torch.ones(weights.size(0)))

    src_words = _words(amap.cols, _specials(src_tok))
    tgt_words = _words(amap.rows, _specials(tgt_tok))
    to_src = _membership(src_words, len(amap.cols))  # (S, S_words): 1 where a piece belongs to a word
    to_tgt = _membership(tgt_words, len(amap.rows))  # (T, T_words)
    words = merge_attention(weights, to_src, to_tgt)  # (T, S) -> (T_words, S_words): sum sources, average targets
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
    return {token_label(tok, i) for i in special_token_ids(tok)}
