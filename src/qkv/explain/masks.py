"""Topic `decoder-only-vs-encoder-decoder`: which token can see which, as the masks the model really used say.

- decoder-only (GPT): one causal mask, T × T lower-triangular: token i sees tokens 0…i.
- encoder-decoder (translation): the encoder sees the whole source in both directions, except padding (a key
  padding mask, from the batch's lengths as `qkv.data.translation.collate` pads it); the decoder's
  self-attention is causal over the target; its cross-attention lets every target token see every real source
  token (target × source, the same padding mask).

Each mask is rebuilt from the arguments the attention module was really called with (forward hooks) by the
functions of `qkv.nn.masks`, exactly as `MultiHeadAttention` builds it; then the attention weights the model
computed in that same pass are checked to be exactly 0 wherever the mask says "may not attend".
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.evaluation.attention import token_label
from qkv.explain.base import Explanation, Options, heatmap, no_grad
from qkv.explain.inputs import describe_source, source_of
from qkv.explain.qkv import Call, mask_of, recording, self_attention_input
from qkv.tasks.capabilities import Capability, can

LESSON = ("Attention lets a token read other tokens; a mask decides which. A decoder-only model (GPT) writes text "
          "left to right, so token i may only read tokens 0…i: the causal mask, a lower triangle. An encoder-decoder "
          "model (translation) reads the whole source at once: its encoder lets every source token see every "
          "other one, hiding only the padding that makes sentences of a batch the same length; its decoder is "
          "causal over the target it writes, and its cross-attention lets each target token see the whole "
          "(unpadded) source. A masked score becomes -inf, so its softmax weight is exactly 0.")

# what fills the shorter source of a batch, by `run.source_kind`
PADDING = {"text": "<pad> fills a shorter sentence", "image": "positions past a shorter source are padding",
           "audio": "zero frames fill a shorter recording"}


@no_grad
def explain_masks(run, opts: Options) -> Explanation:
    e = Explanation("decoder-only-vs-encoder-decoder", "which token can see which", run.path.name)
    e.say(LESSON)
    if can(run, Capability.SOURCE_TO_TEXT):
        _encoder_decoder(run, opts, e)
    else:
        _decoder_only(run, opts, e)
    return e


def _decoder_only(run, opts: Options, e: Explanation) -> None:
    site = self_attention_input(run, opts, e)
    modules = {f"layer {i}": blk.attn for i, blk in enumerate(site.layers)}
    with recording(modules) as calls:
        site.maps()
    labels = site.labels
    causal = _visible(calls["layer 0"][0])[0]  # (T, T)
    e.say(f"decoder-only: every layer's self-attention is called with causal=True and no padding; "
          f"qkv.nn.masks.causal_mask({len(labels)}, {len(labels)}) gives:")
    _grid(e, "causal mask (1 = the query row may read the key column)", causal, labels, labels)
    for name in modules:
        _zero_where_masked(e, f"{name} self-attention", calls[name][0])
    e.data.update(tokens=labels, causal=causal.int())
    data = {"panels": [{"title": "causal mask (decoder-only)", "mask": causal.int(), "rows": labels, "cols": labels,
                        "xlabel": "key (token read)", "ylabel": "query (token reading)"}]}
    e.figure("masks", "decoder-only: the causal mask", lambda fig: _draw(fig, data), data)


def _encoder_decoder(run, opts: Options, e: Explanation) -> None:
    from qkv.generation.seq2seq import decode_batch

    model, tgt_tok = run.model, run.target_tokenizer
    source = source_of(run, opts)
    if run.source_kind == "text":  # a second, shorter sentence: the batch needs padding
        words = source.strip().split()
        other = " ".join(words[: (len(words) + 1) // 2]) if len(words) > 1 else f"{source} {source}"
        shown = [repr(source.strip()), repr(other)]
    else:
        other = run.example_sources(2)[-1]
        shown = [describe_source(run, source), describe_source(run, other)]
    batch = run.source_batch([source, other])  # padded as training pads a batch
    if batch.cut:
        e.say(f"(a source is longer than the context: cut to {model.config.max_seq_len - 1} tokens + EOS)")
    pad, bos, eos = tgt_tok.pad_id, tgt_tok.bos_id, tgt_tok.eos_id
    outs = [out[: model.config.max_seq_len - 1]
            for out in decode_batch(model, batch.src, batch.src_mask, bos, eos, run.decoding(), tgt_tok.vocab_size)]
    T = 1 + max(map(len, outs))
    tgt_in = torch.tensor([[bos, *o] + [pad] * (T - 1 - len(o)) for o in outs], device=batch.src_mask.device)  # (2, T)
    src, src_mask = batch.src, batch.src_mask  # (2, S) or (2, ...) images; (2, S)
    S = src_mask.size(1)
    src_labels = [row + ["<pad>"] * (S - len(row)) for row in batch.labels]  # a recording labels its real states only
    tgt_labels = [[token_label(tgt_tok, i) for i in row] for row in tgt_in.tolist()]
    e.say(f"encoder-decoder: a batch of two sources, {shown[0]} and {shown[1]}, {S} memory positions each "
          f"({PADDING[run.source_kind]}); their outputs, teacher-forced as BOS + output, padded to {T} with "
          f"<pad> (id {pad})")
    e.table(["position", "source 1", "real", "source 2", "real"],
            [[p, src_labels[0][p], int(src_mask[0, p]), src_labels[1][p], int(src_mask[1, p])] for p in range(S)],
            "the source padding mask (src_mask: 1 = real position, 0 = padding), as training batches it")

    modules = {f"encoder {i} self-attention": blk.attn for i, blk in enumerate(model.encoder)}
    for i, blk in enumerate(model.decoder):
        modules |= {f"decoder {i} self-attention": blk.attn, f"decoder {i} cross-attention": blk.cross_attn}
    with recording(modules) as calls:
        model.attention_maps(src, src_mask, tgt_in)
    b = int(src_mask.sum(dim=1).argmin())  # the sentence with padding
    one = "sentence" if run.source_kind == "text" else "source"  # what one row of the batch is called
    enc = _visible(calls["encoder 0 self-attention"][0])[b]  # (S, S)
    dec = _visible(calls["decoder 0 self-attention"][0])[b]  # (T, T)
    cross = _visible(calls["decoder 0 cross-attention"][0])[b]  # (T, S)
    e.say(f"encoder self-attention of {one} {b + 1} (key_mask = its src_mask): every query reads every real "
          "source token, in both directions; no key reads the padding (the padded query rows compute something "
          "that is never used)")
    enc_labels = src_labels[b] if len(src_labels[b]) == enc.size(0) else [f"p{i}" for i in range(enc.size(0))]
    _grid(e, f"encoder mask, {one} {b + 1} (source × source)", enc, enc_labels, enc_labels)
    e.say("decoder self-attention (causal=True, no key mask): target token i reads target tokens 0…i. The target "
          "needs no padding mask: it is right-padded, so a real target token never reaches a padded one")
    _grid(e, f"decoder self-attention mask, {one} {b + 1} (target × target)", dec, tgt_labels[b], tgt_labels[b])
    e.say("decoder cross-attention (key_mask = src_mask): every target token reads the whole real source")
    _grid(e, f"cross-attention mask, {one} {b + 1} (target × source)", cross, tgt_labels[b], src_labels[b])
    for name in modules:
        _zero_where_masked(e, name, calls[name][0])

    given = [source, other] if run.source_kind == "text" else shown
    e.data.update(sources=given, src_mask=src_mask.int(), padded_sentence=b, encoder=enc.int(),
                  decoder=dec.int(), cross=cross.int())
    data = {"panels": [
        {"title": f"encoder ({one} {b + 1}, padded)", "mask": enc.int(), "rows": enc_labels,
         "cols": enc_labels, "xlabel": "key: source token", "ylabel": "query: source token"},
        {"title": "decoder self-attention (causal)", "mask": dec.int(), "rows": tgt_labels[b], "cols": tgt_labels[b],
         "xlabel": "key: target token", "ylabel": "query: target token"},
        {"title": "cross-attention (target × source)", "mask": cross.int(), "rows": tgt_labels[b],
         "cols": src_labels[b], "xlabel": "key: source token", "ylabel": "query: target token"}]}
    e.figure("masks", "encoder-decoder: padding, causal and cross-attention masks", lambda fig: _draw(fig, data), data,
             size=(15.0, 5.0))


def _visible(call: Call) -> Tensor:
    """The call's mask as (B, Tq, Tk) bool, True = may attend (all True where it had none)."""
    B, tq, tk = call.x.size(0), call.x.size(1), call.kv_input.size(1)
    mask = mask_of(call)
    full = torch.ones(B, 1, tq, tk, dtype=torch.bool, device=call.x.device)
    return (full if mask is None else full & mask)[:, 0]  # (B, 1, Tq, Tk) -> (B, Tq, Tk)


def _zero_where_masked(e: Explanation, name: str, call: Call) -> None:
    """The weights the module computed, (B, H, Tq, Tk), are exactly 0 where its mask hides the key."""
    hidden = ~_visible(call)[:, None].expand_as(call.weights)  # (B, Tq, Tk) -> (B, H, Tq, Tk)
    masked = call.weights[hidden]
    if not masked.numel():
        e.say(f"{name}: nothing is masked (a single token sees itself)")
        return
    e.check(f"{name}: the model's weights at the {masked.numel()} masked places are 0", masked,
            torch.zeros_like(masked), tolerance=0.0)


def _grid(e: Explanation, title: str, mask: Tensor, rows: list[str], cols: list[str]) -> None:
    e.table(["query \\ key", *cols], [[r, *m] for r, m in zip(rows, mask.int().tolist(), strict=True)], title)


def _draw(fig, data: dict) -> None:
    panels = data["panels"]
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, p in zip(axes, panels, strict=True):
        heatmap(ax, p["mask"], p["rows"], p["cols"], p["xlabel"], p["ylabel"], p["title"])
