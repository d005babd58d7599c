"""Topic `qkv`: one attention head step by step (Vaswani et al. 2017, §3.2.1, eq. 1), on the run's real tensors.

    Q = X W_Q + b_Q,  K = X W_K + b_K,  V = X W_V + b_V          (the head's rows of q_proj, k_proj, v_proj)
    scores = Q Kᵀ / √d_k,  masked to -inf where a query may not look,  weights = softmax(scores),  out = weights V

X is what the attention module really received (a forward hook on blocks[L].attn: the output of norm1). The
topic then computes every head the same way, concatenates them, sends them through the module's own o_proj
and checks the result against the module's output; the head's weights are checked against the model's own
attention maps. GPT runs read their text causally; a translation run reads its source with the encoder's
(bidirectional) self-attention. With RoPE, Q and K are rotated by `qkv.nn.positional.apply_rope`.

The pieces shared by the attention topics live here: `recording` (what each attention module was called with
and gave back), `mask_of` (the mask that call used, built by `qkv.nn.masks` as the module builds it),
`one_head` (the steps above for one head of one call) and `through_w_o` (heads concatenated, then o_proj).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.evaluation.attention import token_label
from qkv.explain.base import WINDOW, Explanation, Options, heatmap, no_grad, pick
from qkv.explain.inputs import default_text, describe_source, source_of
from qkv.nn.attention import MultiHeadAttention
from qkv.nn.masks import causal_mask, combine, key_padding_to_attn
from qkv.nn.positional import apply_rope
from qkv.tasks.capabilities import Capability, can

LESSON = ("Attention lets every token gather information from the other tokens. Each head projects the layer's "
          "input X three ways: a query Q (what this token is looking for), a key K (what it offers to be found "
          "by) and a value V (what it passes on). The score of query i against key j is their dot product "
          "divided by √d_k; positions a token may not see get -inf; a softmax turns each row of scores into "
          "weights that sum to 1, and the head's output for token i is the weighted sum of the values.")


# ------------------------------------------------------------------------------------------------ shared pieces
@dataclass
class Call:
    """One call of an attention module, as the model made it (recorded by a forward hook)."""

    x: Tensor  # (B, Tq, C) the query-side input
    context: Tensor | None  # (B, Tk, C) the key/value-side input of cross-attention; None: keys and values from x
    kwargs: dict  # causal, key_mask, attn_mask, rope, … as the model passed them
    out: Tensor  # (B, Tq, C) the module's output
    weights: Tensor | None  # (B, H, Tq, Tk) when the model asked for them

    @property
    def kv_input(self) -> Tensor:
        return self.x if self.context is None else self.context


@contextmanager
def recording(modules: dict[str, nn.Module]) -> Iterator[dict[str, list[Call]]]:
    """name -> the `Call`s each attention module gets while the block runs (forward hooks, removed after)."""
    calls: dict[str, list[Call]] = {name: [] for name in modules}

    def hook(name):
        def record(module, args, kwargs, output):
            context = args[1] if len(args) > 1 else kwargs.get("context")
            calls[name].append(Call(args[0], context, dict(kwargs), output[0], output[1]))
        return record

    handles = [m.register_forward_hook(hook(name), with_kwargs=True) for name, m in modules.items()]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def mask_of(call: Call) -> Tensor | None:
    """The bool mask (True = may attend) that `call` used, broadcastable to (B, H, Tq, Tk): built by
    `qkv.nn.masks` from the call's own causal / key_mask / attn_mask arguments, as MultiHeadAttention does."""
    tq, tk = call.x.size(1), call.kv_input.size(1)
    key_mask = call.kwargs.get("key_mask")
    return combine(causal_mask(tq, tk, call.x.device) if call.kwargs.get("causal") and tq > 1 else None,
                   key_padding_to_attn(key_mask) if key_mask is not None else None,  # (B, 1, 1, Tk)
                   call.kwargs.get("attn_mask"))


def one_head(attn: MultiHeadAttention, call: Call, h: int) -> dict[str, Tensor]:
    """Head h of `call`, step by step, each tensor (B, 1, T, ·): the layout of MultiHeadAttention with one head."""
    d = attn.d_head
    rows = slice(h * d, (h + 1) * d)  # head h owns these rows of each projection

    def project(linear: nn.Linear, inp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w = linear.weight[rows].T  # (D, C_in) -> (C_in, D): W_Q as the paper writes it, X W_Q
        b = linear.bias[rows] if linear.bias is not None else torch.zeros(d, dtype=w.dtype, device=w.device)
        return w, b, (inp @ w + b)[:, None]  # (B, T, D) -> (B, 1, T, D)

    w_q, b_q, q_lin = project(attn.q_proj, call.x)
    w_k, b_k, k_lin = project(attn.k_proj, call.kv_input)
    w_v, b_v, v_lin = project(attn.v_proj, call.kv_input)
    extra = call.kwargs.get("value_extra")  # value embeddings: a per-token vector added to the values
    v = v_lin if extra is None else v_lin + extra[..., rows][:, None]  # (B, T, D) -> (B, 1, T, D)
    q, k = q_lin, k_lin
    if getattr(attn, "qk_norm", False):  # QK-norm: each head's query and key rows scaled to unit RMS
        q, k = F.rms_norm(q, (d,)), F.rms_norm(k, (d,))
    rope = call.kwargs.get("rope")
    q, k = (apply_rope(q, *rope), apply_rope(k, *rope)) if rope is not None else (q, k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, 1, Tq, D) @ (B, 1, D, Tk) -> (B, 1, Tq, Tk)
    mask = mask_of(call)
    masked = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
    weights = masked.softmax(dim=-1)  # (B, 1, Tq, Tk), rows sum to 1
    return {"W_Q": w_q, "b_Q": b_q, "W_K": w_k, "b_K": b_k, "W_V": w_v, "b_V": b_v, "Q_lin": q_lin, "K_lin": k_lin,
            "V_lin": v_lin, "Q": q, "K": k, "V": v, "scores": scores, "masked": masked, "weights": weights,
            "out": weights @ v}  # (B, 1, Tq, Tk) @ (B, 1, Tk, D) -> (B, 1, Tq, D)


def through_w_o(attn: MultiHeadAttention, heads: list[Tensor]) -> Tensor:
    """Heads' outputs, each (B, 1, T, D), concatenated and sent through the module's own o_proj: (B, T, C)."""
    y = torch.cat(heads, dim=1)  # (B, H, T, D)
    B, H, T, D = y.shape
    return attn.o_proj(y.transpose(1, 2).reshape(B, T, H * D))  # (B, H, T, D) -> (B, T, H, D) -> (B, T, H·D)


@dataclass
class SelfAttentionInput:
    """Where a run's self-attention is read: its layers, the input tokens, and the model run over them."""

    layers: nn.ModuleList  # blocks with .attn: GPT blocks, or an encoder
    where: str  # "layer" or "encoder layer"
    causal: bool
    labels: list[str]  # one label per input token
    forward: Callable[[], object]  # the model's plain forward over the input
    maps: Callable[[], list[Tensor]]  # the model's own attention weights, one (1, H, T, T) per layer


def self_attention_input(run, opts: Options, e: Explanation) -> SelfAttentionInput:
    """Where a run's self-attention is read: the text its token input reads (a GPT's text, causal; a translation
    encoder's source + EOS, both directions), else the encoder of a source it turns into text (image patches)."""
    if can(run, Capability.TOKEN_INPUT):
        ti = run.text_input()
        text = default_text(run, opts)
        limit = min(WINDOW, ti.config.max_seq_len)
        ids, cut = ti.prepare(text, limit)
        if cut:
            e.say(f"(the {ti.side} is {len(ids) + cut} tokens; cut to the first {limit} for reading)")
        how = "causal self-attention" if ti.causal else "the encoder reads it with self-attention in both directions"
        e.say(f"{ti.side}: {text!r} -> {len(ids)} tokens{' with the EOS the encoder reads' * (not ti.causal)}; {how}")
        return SelfAttentionInput(ti.layers, ti.where, ti.causal, [token_label(ti.tokenizer, i) for i in ids],
                                  lambda: ti.forward(ids), lambda: ti.maps(ids))
    source = source_of(run, opts)
    batch = run.source_batch([source])
    model = run.model
    tgt_tok = run.target_tokenizer
    bos = torch.tensor([[tgt_tok.bos_id]], device=batch.src_mask.device)  # (1, 1): attention_maps needs a target
    e.say(f"source: {describe_source(run, source)} -> {len(batch.labels[0])} positions ({batch.labels[0][0]}, …); "
          "the encoder reads them with self-attention in both directions")
    return SelfAttentionInput(model.encoder, "encoder layer", False, batch.labels[0],
                              lambda: model.encode(batch.src, batch.src_mask),
                              lambda: model.attention_maps(batch.src, batch.src_mask, bos)["encoder"])


# ------------------------------------------------------------------------------------------------ the topic
@no_grad
def explain_qkv(run, opts: Options) -> Explanation:
    e = Explanation("qkv", "one head step by step", run.path.name)
    e.say(LESSON)
    site = self_attention_input(run, opts, e)
    layer = pick(opts.layer, len(site.layers), "layer", 0)
    attn = site.layers[layer].attn
    head = pick(opts.head, attn.n_heads, "head", 0)
    with recording({"attn": attn}) as calls:
        site.forward()
    (call,) = calls["attn"]
    p = one_head(attn, call, head)
    labels, d = site.labels, attn.d_head
    e.say(f"{site.where} {layer}, head {head} of {attn.n_heads}: d_model {call.x.size(-1)}, d_k = d_v = {d}")

    e.tensor("X", call.x[0], "the attention module's input (norm1 of the residual stream), one row per token",
             labels)
    for name, proj in (("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj")):
        e.tensor(f"W_{name}", p[f"W_{name}"], f"head {head}'s rows {head * d}…{(head + 1) * d - 1} of {proj}.weight, "
                 "transposed")
        if getattr(attn, proj).bias is not None:
            e.tensor(f"b_{name}", p[f"b_{name}"], f"head {head}'s part of {proj}.bias")
    for name, key in (("Q", "Q_lin"), ("K", "K_lin"), ("V", "V_lin")):
        bias = f" + b_{name}" if attn.q_proj.bias is not None else ""
        e.tensor(f"{name} = X W_{name}{bias}", p[key][0, 0], "" if bias else "(this run's projections have no bias)",
                 labels)
    ours = torch.cat([p["Q_lin"], p["K_lin"], p["V_lin"]], dim=-1)  # (1, 1, T, 3D)
    inputs = ((attn.q_proj, call.x), (attn.k_proj, call.kv_input), (attn.v_proj, call.kv_input))
    module = torch.cat([proj(inp)[..., head * d:(head + 1) * d] for proj, inp in inputs],
                       dim=-1)[:, None]  # (1, T, 3D) -> (1, 1, T, 3D)
    e.check("Q, K, V == q_proj(X), k_proj(X), v_proj(X) (head's columns)", ours, module)
    if attn.qk_norm:
        e.say("this run uses QK-norm: each head's Q and K rows are divided by their root-mean-square before the dot "
              "product (F.rms_norm), so every score is bounded by √d_k")
    if call.kwargs.get("value_extra") is not None:
        e.tensor("V = X W_V + ve(token)", p["V"][0, 0], "value embeddings: this layer's embedding of each input "
                 "token added to its value", labels)
    if call.kwargs.get("rope") is not None:
        e.say("this run uses RoPE: no position vector was added to X; instead Q and K are rotated by "
              "qkv.nn.positional.apply_rope with the angles of each position (rope_angles), so Q·K depends on the "
              "distance between the two tokens")
        e.tensor("Q rotated", p["Q"][0, 0], "apply_rope(Q, cos, sin)", labels)
        e.tensor("K rotated", p["K"][0, 0], "apply_rope(K, cos, sin)", labels)
    e.tensor("QKᵀ/√d_k", p["scores"][0, 0], f"scores: query rows × key columns, divided by √{d} = {math.sqrt(d):.3f}",
             labels)
    mask = mask_of(call)
    if site.causal and mask is None:
        e.say("a single token: there is no later token to hide")
    elif site.causal:
        e.tensor("causal mask", mask.int(), "1 = may attend: token i sees tokens 0…i (qkv.nn.masks.causal_mask)",
                 labels)
        e.tensor("masked scores", p["masked"][0, 0], "-inf above the diagonal: the future is hidden", labels)
    else:
        e.say("no mask: the encoder reads its whole source in both directions (one source, nothing padded)")
    e.tensor("weights = softmax(scores)", p["weights"][0, 0], "each row sums to 1", labels)
    e.tensor("head output = weights × V", p["out"][0, 0], f"head {head}'s output: (T × {d})", labels)

    maps = site.maps()[layer]  # (1, H, T, T), the model's own attention_reference path
    e.check(f"head {head}'s weights == the model's attention map (attention_maps, layer {layer}, head {head})",
            p["weights"][0, 0], maps[0, head])
    heads = [p["out"] if h == head else one_head(attn, call, h)["out"] for h in range(attn.n_heads)]
    e.say(f"every head of the layer computed the same way, concatenated (T × {attn.n_heads}·{d}) and sent through "
          "o_proj is the module's output:")
    e.check("concat(heads) through o_proj (W_O, b_O) == attn(X)", through_w_o(attn, heads), call.out)

    e.data.update(layer=layer, head=head, d_k=d, n_heads=attn.n_heads, tokens=labels, causal=site.causal,
                  rope=call.kwargs.get("rope") is not None)
    data = {"tokens": labels, "Q": p["Q"][0, 0], "K": p["K"][0, 0], "V": p["V"][0, 0],
            "scores": p["masked"][0, 0], "weights": p["weights"][0, 0]}
    e.figure("head", f"{site.where} {layer}, head {head}: Q, K, V and the attention weights",
             lambda fig: _draw(fig, data, head), data, size=(14.0, 4.5))
    return e


def _draw(fig, data: dict, head: int) -> None:
    labels = data["tokens"]
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 2]})
    for ax, name in zip(axes[:3], ("Q", "K", "V"), strict=True):
        m = data[name].float().cpu().numpy()
        lim = max(1e-9, float(abs(m).max()))
        ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("head dimension")
        ax.set_ylabel("token")
        ax.set_title(f"{name} (head {head})", fontsize=9)
    heatmap(axes[3], data["weights"], labels, labels, "key (attended token)", "query (reading token)",
            "softmax(QKᵀ/√d_k + mask)")
