"""Topic `self-vs-cross`: one attention class, two uses (Vaswani et al. 2017, §3.2.3).

The encoder's self-attention, the decoder's (causal) self-attention and the decoder's cross-attention are all
`qkv.nn.attention.MultiHeadAttention`; the only difference is where their inputs come from:

- self-attention: ``attn(x)``: Q, K and V are all projections of the same states (source states in the
  encoder, target states in the decoder, where a causal mask hides later target tokens);
- cross-attention: ``cross_attn(x, memory)``: Q from the decoder's target states, K and V from the encoder's
  output (the "memory"), so every target token can read the whole source.

The topic turns the source (a sentence, an image) into text, runs the decoder teacher-forced on (BOS + output)
with forward hooks on every attention module, and prints what each module was actually called with; the
cross-attention K/V inputs are checked to be the encoder output exactly. A GPT run has no encoder: it shows its
self-attention modules and says that cross-attention needs an encoder-decoder run (rather than refusing).
"""

from __future__ import annotations

import torch

from qkv.evaluation.attention import token_label
from qkv.explain.base import Explanation, Options, heatmap, no_grad, pick
from qkv.explain.inputs import describe_source, source_of
from qkv.explain.qkv import one_head, recording, self_attention_input, through_w_o
from qkv.nn.attention import MultiHeadAttention
from qkv.tasks.capabilities import Capability, can

LESSON = ("Self-attention and cross-attention are the same computation, softmax(QKᵀ/√d_k)V, done by the same "
          "module class. In self-attention the queries, keys and values are all made from one sequence, so its "
          "tokens look at each other. In cross-attention the queries come from the decoder (the target being "
          "written) and the keys and values from the encoder's output (the source being translated): that is "
          "the only path by which a translation model's decoder reads the source.")


@no_grad
def explain_self_vs_cross(run, opts: Options) -> Explanation:
    e = Explanation("self-vs-cross", "one attention class as self- and cross-attention", run.path.name)
    e.say(LESSON)
    if can(run, Capability.SOURCE_TO_TEXT):
        _encoder_decoder(run, opts, e)
    else:
        _decoder_only(run, opts, e)
    return e


def _decoder_only(run, opts: Options, e: Explanation) -> None:
    site = self_attention_input(run, opts, e)
    modules = {f"layer {i} self-attention": blk.attn for i, blk in enumerate(site.layers)}
    with recording(modules) as calls:
        site.forward()
    e.table(*_where_from(modules, calls, {"decoder": "text states"}),
            "every attention module of this GPT, as the model called it")
    _same_class(modules, e)
    e.say("a GPT (decoder-only) has no encoder and so no cross-attention: every module above takes Q, K and V from "
          "the same text, causally. Cross-attention needs an encoder-decoder run (one that turns a source into text, "
          "such as translation): qkv explain self-vs-cross TRANSLATION_RUN")
    layer = pick(opts.layer, len(site.layers), "layer", len(site.layers) - 1)
    weights = _mean_or_head(site.maps()[layer][0], opts.head)
    e.data.update(tokens=site.labels, modules=list(modules), cross=False)
    data = {"rows": site.labels, "self": weights, "layer": layer}
    e.figure("attention", f"layer {layer} self-attention: Q, K, V from the same text",
             lambda fig: heatmap(fig.add_subplot(1, 1, 1), data["self"], data["rows"], data["rows"],
                                 "key: text token", "query: text token", f"layer {layer} self-attention"), data)


def _encoder_decoder(run, opts: Options, e: Explanation) -> None:
    from qkv.generation.seq2seq import decode_batch

    model, tgt_tok = run.model, run.target_tokenizer
    source = source_of(run, opts)
    batch = run.source_batch([source])
    if batch.cut:
        e.say(f"(the source is longer than the context: cut to {model.config.max_seq_len - 1} tokens + EOS)")
    bos, eos = tgt_tok.bos_id, tgt_tok.eos_id
    (out,) = decode_batch(model, batch.src, batch.src_mask, bos, eos, run.decoding(), tgt_tok.vocab_size)
    tgt = [bos] + out[: model.config.max_seq_len - 1]
    src, src_mask = batch.src, batch.src_mask  # (1, S) ids or (1, ...) an image; (1, S) the memory mask
    tgt_in = torch.tensor([tgt], device=src_mask.device)  # (1, T) = BOS + output: teacher forcing
    S, T = src_mask.size(1), len(tgt)
    src_labels, tgt_labels = batch.labels[0], [token_label(tgt_tok, i) for i in tgt]
    e.say(f"source: {describe_source(run, source)} ({S} memory positions); output: {tgt_tok.decode(out)!r}; the "
          f"decoder reads BOS + output ({T} tokens) teacher-forced")

    modules = {f"encoder {i} self-attention": blk.attn for i, blk in enumerate(model.encoder)}
    for i, blk in enumerate(model.decoder):
        modules |= {f"decoder {i} self-attention": blk.attn, f"decoder {i} cross-attention": blk.cross_attn}
    normed = []
    hook = model.enc_norm.register_forward_hook(lambda module, args, output: normed.append(output))
    try:
        with recording(modules) as calls:
            maps = model.attention_maps(src, src_mask, tgt_in)
    finally:
        hook.remove()
    (memory,) = [model.pool(x) for x in normed]  # (1, S, C): the encoder's output, as this very pass computed it
    e.table(*_where_from(modules, calls, {"encoder": "source states", "decoder": "target states",
                                          "memory": "encoder output (memory)"}),
            "every attention module of this model, as the model called it (forward hooks)")
    _same_class(modules, e)
    e.tensor("memory", memory[0], "the encoder's output: K and V of every cross-attention layer", src_labels)
    for i in range(len(model.decoder)):
        (call,) = calls[f"decoder {i} cross-attention"]
        e.check(f"decoder {i} cross-attention's K/V input == the encoder output", call.context, memory, tolerance=0.0)
    layer = pick(opts.layer, len(model.decoder), "layer", len(model.decoder) - 1)
    attn = model.decoder[layer].cross_attn
    (call,) = calls[f"decoder {layer} cross-attention"]
    e.tensor(f"decoder {layer} cross-attention Q input", call.x[0], "norm_cross of the target states", tgt_labels)
    e.say(f"the same per-head maths as in the qkv topic, with K and V from the memory ({T} queries × {S} keys), "
          "gives the module's output:")
    heads = [one_head(attn, call, h)["out"] for h in range(attn.n_heads)]
    e.check(f"decoder {layer} cross-attention: concat(heads) through o_proj == cross_attn(x, memory)",
            through_w_o(attn, heads), call.out)
    self_w = _mean_or_head(maps["self"][layer][0], opts.head)  # (T, T)
    cross_w = _mean_or_head(maps["cross"][layer][0], opts.head)  # (T, S)
    e.data.update(source=src_labels, target=tgt_labels, modules=list(modules), cross=True, layer=layer)
    data = {"rows": tgt_labels, "cols": src_labels, "self": self_w, "cross": cross_w, "layer": layer}
    e.figure("attention", f"decoder layer {layer}: self-attention (target × target) and cross-attention "
             "(target × source)", lambda fig: _draw(fig, data), data, size=(12.0, 5.0))


def _where_from(modules: dict, calls: dict, names: dict) -> tuple[list[str], list[list]]:
    """Columns and rows: each module's class, what its Q and its K/V were computed from, their shapes, its mask.
    names: how to call the encoder's and the decoder's (or a GPT's) states, and the memory."""
    rows = []
    for name, module in modules.items():
        (call,) = calls[name]
        q_from = names["encoder"] if name.startswith("encoder") else names["decoder"]
        kv_from = q_from if call.context is None else names["memory"]
        mask = ("causal" if call.kwargs.get("causal") else
                "source padding" if call.kwargs.get("key_mask") is not None else "none")
        rows.append([name, type(module).__name__, q_from, tuple(call.x.shape), kv_from, tuple(call.kv_input.shape),
                     "x, memory" if call.context is not None else "x", mask])
    return ["module", "class", "Q from", "Q input", "K, V from", "K/V input", "called with", "mask"], rows


def _same_class(modules: dict, e: Explanation) -> None:
    classes = {type(m) for m in modules.values()}
    e.say(f"classes used: {', '.join(sorted(c.__name__ for c in classes))} — "
          + ("one class for every attention module; only its inputs differ" if classes == {MultiHeadAttention}
             else "more than one class"))
    e.data["classes"] = sorted(c.__name__ for c in classes)


def _mean_or_head(weights: torch.Tensor, head: int | None) -> torch.Tensor:
    """(H, rows, cols) -> one head's map, or the mean over heads."""
    return weights.mean(dim=0) if head is None else weights[pick(head, weights.size(0), "head", 0)]


def _draw(fig, data: dict) -> None:
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [len(data["rows"]), len(data["cols"])]})
    heatmap(left, data["self"], data["rows"], data["rows"], "key: target token (decoder)", "query: target token",
            f"decoder {data['layer']} self-attention (causal)")
    heatmap(right, data["cross"], data["rows"], data["cols"], "key: source token (encoder output)",
            "query: target token", f"decoder {data['layer']} cross-attention")
