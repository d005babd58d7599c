"""Topic `output`: the last hidden state → logits → softmax, and how sampling settings reshape the result.

The final norm's output at the last position (captured by a forward hook) is multiplied by the output
layer's V × d matrix: one logit per vocabulary id. The topic recomputes those logits from the printed h and
weight against the model's own, writes softmax out against the distribution the sampler draws from, then
shows that distribution under temperature 0.5, 1 and 2, top-k 5, top-p 0.9 and greedy decoding, each from
`qkv.generation.sampling.sampling_probs` (what `qkv generate` samples from): the top tokens' probabilities,
the entropy and how many tokens can still be drawn. An encoder-decoder run shows the decoder's first step: the
distribution of the first target token after BOS, given the source (a sentence, an image).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.errors import QKVError
from qkv.evaluation.attention import token_label
from qkv.explain.base import Explanation, Options, no_grad, window
from qkv.explain.inputs import default_text, describe_source, source_of
from qkv.generation.sampling import TokenSampling, sampling_probs
from qkv.tasks.capabilities import Capability, can

LESSON = ("After the last block, the final norm gives one hidden vector h of d numbers per position; the last "
          "position's h predicts the next token. The output layer multiplies h by a V × d matrix: one score, a "
          "logit, per vocabulary id. Softmax turns logits into probabilities: p_i = exp(l_i) / Σ_j exp(l_j). "
          "Sampling settings reshape that distribution before a token is drawn: temperature divides the logits "
          "(below 1 sharpens, above 1 flattens), top-k keeps the k most likely tokens, top-p keeps the smallest "
          "set whose probabilities add up to p, and greedy decoding takes the most likely token.")

TOP = 10  # tokens listed and drawn
SETTINGS: dict[str, TokenSampling] = {
    "T = 1": TokenSampling(temperature=1.0),
    "T = 0.5": TokenSampling(temperature=0.5),
    "T = 2": TokenSampling(temperature=2.0),
    "top-k 5": TokenSampling(temperature=1.0, top_k=5),
    "top-p 0.9": TokenSampling(temperature=1.0, top_p=0.9),
    "greedy (T = 0)": TokenSampling(temperature=0.0),
}


@no_grad
def explain_output(run, opts: Options) -> Explanation:
    encoder_decoder = can(run, Capability.SOURCE_TO_TEXT)
    text = source_of(run, opts) if encoder_decoder else default_text(run, opts)
    e = Explanation("output", "last hidden state → logits → probabilities", run.path.name)
    e.say(LESSON)
    model = run.model
    norm_name, norm = ("dec_norm", model.dec_norm) if encoder_decoder else ("norm_f", model.norm_f)
    captured = {}
    hook = norm.register_forward_hook(lambda module, args, out: captured.update(h=out))
    try:
        logits, tok, where = _last_logits(run, text, e)  # (V,), the tokenizer of the outputs, a description
    finally:
        hook.remove()
    h = captured["h"][0, -1]  # (1, T, d) -> (d,): the last position
    e.tensor(f"h = {norm_name}(x) at the last position", h, f"d = {h.numel()}: {where}")

    head = model.lm_head
    tied = head.weight is (model.tgt_emb.weight if encoder_decoder else model.tok_emb.weight)
    V = head.weight.shape[0]
    e.tensor("W = lm_head.weight", head.weight, "V × d: one row per vocabulary id" +
             (" (tied: the token embedding table)" if tied else ""),
             rows=[token_label(tok, i) for i in range(min(4, V))])
    ours = h @ head.weight.T  # (d,) @ (d, V) -> (V,)
    if head.bias is not None:
        ours = ours + head.bias
    e.tensor("logits = h Wᵀ" + (" + b" if head.bias is not None else ""), ours,
             f"V = {V:,}: one score per id; logit i is the dot product of h with row i")
    cap = getattr(model.config, "logit_softcap", None)
    if cap is not None:
        ours = cap * torch.tanh(ours / cap)  # (V,)
        e.tensor(f"logits = {cap:g}·tanh(h Wᵀ / {cap:g})", ours,
                 f"the soft cap: every logit squeezed into (−{cap:g}, {cap:g}), nearly unchanged near 0")
    e.check("h @ lm_head.weightᵀ" + (" (capped)" if cap is not None else "") + "  ==  the model's logits at the last "
            "position", ours, logits)

    shifted = ours - ours.max()  # softmax is unchanged by a shift; this keeps exp from overflowing
    probs = shifted.exp() / shifted.exp().sum()  # (V,)
    e.check("exp(l − max l) / Σ exp(l − max l) of these logits  ==  sampling_probs(logits, T = 1)", probs,
            sampling_probs(logits[None], SETTINGS["T = 1"])[0])  # (1, V) -> (V,)
    top = probs.topk(min(TOP, V))
    order = top.indices.tolist()
    labels = [token_label(tok, i) for i in order]
    e.table(["rank", "token", "id", "logit", "probability"],
            [[r + 1, labels[r], i, ours[i].item(), probs[i].item()] for r, i in enumerate(order)],
            title=f"the {len(order)} most likely next tokens (of {V:,})")

    dists = {name: sampling_probs(logits[None], cfg)[0] for name, cfg in SETTINGS.items()}  # (1, V) -> (V,) each
    e.table(["token", "id", *dists],
            [[labels[r], i, *(p[i].item() for p in dists.values())] for r, i in enumerate(order)],
            title="the same tokens' probabilities under each sampling setting (qkv.generation.sampling.sampling_probs)")
    summary = {name: _summary(p, order) for name, p in dists.items()}
    e.table(["setting", "entropy (nats)", "tokens with p > 0", "top-1 probability", f"mass of these {len(order)}"],
            [[name, *s.values()] for name, s in summary.items()],
            title="what each setting leaves to chance (a token with p = 0 can never be drawn)")
    e.say("temperature below 1 moves mass to the top tokens and lowers the entropy, above 1 spreads it; top-k and "
          "top-p set the tail to exactly 0 and renormalise the rest; greedy leaves one token.")

    shown = {name: [p[i].item() for i in order] for name, p in dists.items()}  # setting -> top tokens' p
    shown_input = text if isinstance(text, str) else describe_source(run, text)
    e.data.update(text=shown_input, top_ids=order, top_tokens=labels, top_probs=[probs[i].item() for i in order],
                  top_logits=[ours[i].item() for i in order], settings=summary, setting_probs=shown)
    e.figure("sampling", "next-token probabilities of the top tokens under each sampling setting",
             lambda fig: _bars(fig, labels, shown, summary), {"tokens": labels, "probs": shown}, size=(11.0, 6.5))
    return e


def _last_logits(run, source, e: Explanation) -> tuple[Tensor, object, str]:
    """Run the model on the input; its logits at the last position (V,), the output tokenizer, what h is."""
    model = run.model
    if can(run, Capability.SOURCE_TO_TEXT):
        tgt_tok = run.target_tokenizer
        batch = run.source_batch([source])  # (1, S) ids + EOS, or (1, ...) an image; the memory mask (1, S)
        e.say(f"source: {describe_source(run, source)} -> {batch.src_mask.size(1)} memory positions; the decoder has "
              "read only BOS, so this is the distribution of the first target token")
        memory = model.encode(batch.src, batch.src_mask)  # (1, S, d)
        bos = torch.tensor([[tgt_tok.bos_id]], device=batch.src_mask.device)  # (1, 1)
        return model.decode(memory, batch.src_mask, bos)[0, -1], tgt_tok, "the decoder's state after BOS"
    tok = run.tokenizer
    ids = tok.encode(source)
    if not ids:
        raise QKVError("the text encodes to no tokens")
    ids = window(ids, e)
    e.say(f"text: {source!r} -> {len(ids)} tokens; the last one is {token_label(tok, ids[-1])!r}")
    idx = torch.tensor([ids], device=model.lm_head.weight.device)  # (1, T)
    return model(idx)[0][0, -1], tok, f"position {len(ids) - 1}, after {token_label(tok, ids[-1])!r}"


def _summary(p: Tensor, order: list[int]) -> dict:
    kept = p[p > 0]
    return {"entropy": (-(kept * kept.log()).sum()).item() + 0.0, "nonzero": int(kept.numel()),
            "top1": p.max().item(), "mass_top": p[order].sum().item()}


def _bars(fig, labels: list[str], probs: dict[str, list[float]], summary: dict) -> None:
    """One bar chart per setting, the same tokens in the same order, so the reshaping shows."""
    for k, (name, values) in enumerate(probs.items()):
        ax = fig.add_subplot(2, (len(probs) + 1) // 2, k + 1)
        ax.bar(range(len(values)), values, color="tab:blue")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_xlabel("next token")
        ax.set_ylabel("probability")
        ax.set_title(f"{name}: entropy {summary[name]['entropy']:.2f}, {summary[name]['nonzero']} kept", fontsize=9)
