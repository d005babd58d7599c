"""Topic `heads`: every head of one layer, and what multi-head attention does with them (Vaswani et al. §3.2.2).

    MultiHead(X) = Concat(head_1, …, head_H) W_O + b_O = Σ_h head_h W_O[:, h·D:(h+1)·D]ᵀ + b_O

Each head is computed as in the `qkv` topic (`one_head`, on the attention module's real input, captured by a
forward hook) and drawn as a heatmap. The heads, concatenated and sent through the module's own o_proj, give
the module's output (checked); one head alone reaches the output only through its own D columns of W_O, its
contribution, and the contributions of all heads plus the bias sum to the output (checked). With
``--compare RUN_B`` the two runs' configs are compared (do they differ only in n_heads?) and their validation
losses are shown side by side. A translation run shows its encoder's self-attention.
"""

from __future__ import annotations

import math

import torch

from qkv.explain.base import Explanation, Options, heatmap, no_grad, pick
from qkv.explain.qkv import one_head, recording, self_attention_input, through_w_o
from qkv.runs import read_metrics

LESSON = ("One attention head computes one weighting of the tokens. Multi-head attention runs H heads side by side, "
          "each with its own W_Q, W_K, W_V of width d_k = d_model / H, so each can look for something different "
          "(the previous token, a matching bracket, the first token). Their outputs are concatenated and mixed by "
          "W_O: the layer's output is the sum of every head's contribution, each head reaching the output only "
          "through its own d_k columns of W_O. A single head of width d_model would compute one weighting only.")


@no_grad
def explain_heads(run, opts: Options) -> Explanation:
    e = Explanation("heads", "every head of a layer; single vs multi-head", run.path.name)
    e.say(LESSON)
    site = self_attention_input(run, opts, e)
    layer = pick(opts.layer, len(site.layers), "layer", len(site.layers) - 1)
    attn = site.layers[layer].attn
    head = pick(opts.head, attn.n_heads, "head", 0)
    with recording({"attn": attn}) as calls:
        site.forward()
    (call,) = calls["attn"]
    H, D, labels = attn.n_heads, attn.d_head, site.labels
    parts = [one_head(attn, call, h) for h in range(H)]
    weights = torch.cat([p["weights"][0] for p in parts])  # H × (1, T, T) -> (H, T, T)
    e.say(f"{site.where} {layer}: {H} heads of d_k = {D} (d_model {call.x.size(-1)}), over {len(labels)} tokens")

    e.tensor("weights of every head", weights, "(head, query, key); each row sums to 1",
             [f"h{h} {label}" for h in range(H) for label in labels])
    e.check(f"every head's weights == the model's attention maps (layer {layer})", weights, site.maps()[layer][0])
    e.table(["head", "last token looks most at", "weight", "mean entropy (nats)"],
            [[h, labels[int(weights[h, -1].argmax())], weights[h, -1].max().item(), _entropy(weights[h])]
             for h in range(H)], "what each head does with the last token, and how spread its rows are")

    e.say(f"multi-head: the {H} heads' outputs (T × {D} each) are concatenated to T × {H * D} and sent through "
          f"o_proj (W_O: {tuple(attn.o_proj.weight.shape)}):")
    e.check("concat(heads) through o_proj == attn(X)", through_w_o(attn, [p["out"] for p in parts]), call.out)
    w_o = attn.o_proj.weight  # (C, H·D)
    contributions = [p["out"][0, 0] @ w_o[:, h * D:(h + 1) * D].T  # (T, D) @ (C, D)ᵀ -> (T, C)
                     for h, p in enumerate(parts)]
    bias = attn.o_proj.bias if attn.o_proj.bias is not None else torch.zeros_like(w_o[:, 0])
    e.tensor(f"head {head} alone", contributions[head], f"head {head}'s output × its columns "
             f"{head * D}…{(head + 1) * D - 1} of W_O: its contribution to the layer's output", labels)
    e.check(f"Σ over the {H} heads' contributions + b_O == attn(X)", sum(contributions) + bias, call.out[0])
    total = call.out[0] - bias  # (T, C): what the heads add together
    e.table(["head", "‖contribution‖ (mean over tokens)", "cosine with the sum of all heads"],
            [[h, c.norm(dim=-1).mean().item(), _cosine(c, total)] for h, c in enumerate(contributions)],
            "single head vs multi-head: how much of the layer's output each head alone gives")
    e.data.update(layer=layer, head=head, n_heads=H, d_k=D, tokens=labels)
    if opts.compare is not None:
        _compare(run, opts.compare, e)

    data = {"tokens": labels, "weights": weights, "layer": layer}
    e.figure(f"layer{layer}", f"{site.where} {layer}: the {H} heads", lambda fig: _draw(fig, data), data,
             size=(3.6 * min(H, 4) + 1, 3.4 * math.ceil(H / 4) + 0.8))
    return e


def _entropy(w: torch.Tensor) -> float:
    """Mean entropy of the rows of (T, T) weights: 0 = each query looks at one key."""
    return -(w * w.clamp_min(1e-12).log()).sum(dim=-1).mean().item()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def _compare(run, other, e: Explanation) -> None:
    """Does `other` differ from `run` only in n_heads? Their configs' differences and validation losses."""
    a, b = _settings(run), _settings(other)
    differ = [[k, _show(a.get(k)), _show(b.get(k))] for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    heads = [row for row in differ if row[0] == "model.n_heads"]
    others = [row for row in differ if row[0] != "model.n_heads"]
    if not heads:
        verdict = (f"{other.path.name} has the same number of heads ({a.get('model.n_heads')}): not a head-count "
                   "comparison")
    elif not others:
        verdict = f"the two runs differ only in n_heads ({heads[0][1]} vs {heads[0][2]}): a clean comparison"
    else:
        verdict = f"the two runs differ in n_heads and in {len(others)} other setting(s): the comparison is not clean"
    e.say(f"--compare {other.path.name}: {verdict}")
    if differ:
        e.table(["setting", run.path.name, other.path.name], differ, "what differs (config.json)")
    rows = [[r.path.name, r.task, _show(_settings(r).get("model.n_heads")),
             _show(getattr(r.model.config, "head_dim", None)), _show(_val_loss(r)), _show(_last_step(r))]
            for r in (run, other)]
    e.table(["run", "task", "n_heads", "d_k", "val_loss", "at step"], rows,
            "validation loss side by side (the last evaluation in each run's metrics.jsonl)")
    e.data["compare"] = {"run": other.path.name, "only_n_heads": bool(heads) and not others,
                         "differences": differ, "val_loss": [_val_loss(run), _val_loss(other)]}


def _settings(run) -> dict:
    """The run's config.json flattened to section.key (task, model, data, train: what makes the run)."""
    flat = {"task": run.saved.get("task")}
    for section in ("model", "data", "train"):
        flat.update({f"{section}.{k}": v for k, v in (run.saved.get(section) or {}).items()})
    return flat


def _val_loss(run) -> float | None:
    return next((m["val_loss"] for m in reversed(read_metrics(run.path)) if "val_loss" in m), None)


def _last_step(run) -> int | None:
    return next((m.get("step") for m in reversed(read_metrics(run.path)) if "val_loss" in m), None)


def _show(v) -> str:
    return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _draw(fig, data: dict) -> None:
    weights, labels = data["weights"], data["tokens"]
    H = weights.size(0)
    cols = min(H, 4)
    for h in range(H):
        ax = fig.add_subplot(math.ceil(H / cols), cols, h + 1)
        heatmap(ax, weights[h], labels, labels, "key (attended token)", "query (reading token)", f"head {h}")
