"""Topic `embeddings`: integer ids → rows of the embedding table, the rows' nearest neighbours, why it is V × d.

The embedding layer is a (V × d) matrix, one learned row per vocabulary id. Embedding the text selects the
rows of its ids: the topic prints the table, the selected (T × d) rows with their norms, and checks that
selecting rows of the weight by hand gives exactly what the module returns. Cosine similarity between rows
shows what training put near what (the nearest neighbours of the text's first tokens), and V·d against the
model's parameter count says what the table costs. A translation run shows its source table (`src_emb`): the
table is the run's `TextInput` (`qkv.tasks.capabilities`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.errors import QKVError
from qkv.evaluation.attention import token_label
from qkv.explain.base import Explanation, Options, no_grad, signed_heatmap, window
from qkv.explain.inputs import default_text

LESSON = ("The embedding layer is a table with one learned row of d numbers for every id of the vocabulary: "
          "V rows × d columns. Embedding a token multiplies nothing: it selects row `id` of the table (what "
          "multiplying a one-hot vector by the table would give), so a text of T tokens becomes a T × d matrix. "
          "Training moves the rows so that tokens the model uses alike point in similar directions, which cosine "
          "similarity measures.")

PROBES = 3  # distinct tokens of the text whose nearest neighbours are listed
NEIGHBOURS = 5
DIMS = 32  # dimensions drawn in the picture


@no_grad
def explain_embeddings(run, opts: Options) -> Explanation:
    ti = run.text_input()
    tok, side = ti.tokenizer, ti.side
    text = default_text(run, opts)
    e = Explanation("embeddings", "ids → rows of the embedding table", run.path.name)
    e.say(LESSON)
    name, emb = ti.table_name, ti.table
    weight = emb.weight  # (V, d)
    V, d = weight.shape
    e.say(f"{name}: the {side} embedding table, {V:,} ids × d = {d}. {' '.join(ti.notes)}")
    e.tensor(f"{name}.weight", weight, "V × d: row i is the vector of id i (the first ids printed)",
             rows=[token_label(tok, i) for i in range(min(4, V))])

    ids = tok.encode(text)
    if not ids:
        raise QKVError("the text encodes to no tokens")
    ids = window(ids, e)
    labels = [token_label(tok, i) for i in ids]
    idx = torch.tensor([ids], device=weight.device)  # (1, T)
    rows = weight[idx[0]]  # (T, d): row selection by hand
    e.say(f"text: {text!r} -> ids {ids}")
    e.tensor(f"{name}.weight[ids]", rows, f"T × d = {len(ids)} × {d}: row `id` of the table for each token",
             rows=labels)
    e.check(f"row selection {name}.weight[ids]  ==  {name}(ids)", rows, emb(idx)[0])  # (1, T, d) -> (T, d)

    norms = rows.norm(dim=-1)  # (T,)
    mean_norm = weight.norm(dim=-1).mean().item()
    e.table(["position", "token", "id", "‖row‖"],
            [[t, label, i, n] for t, (label, i, n) in enumerate(zip(labels, ids, norms.tolist(), strict=True))],
            title=f"the looked-up rows' lengths (the table's mean row length is {mean_norm:.4f})")

    neighbours = _neighbours(tok, weight, list(dict.fromkeys(ids))[:PROBES], e)

    table_params = V * d
    model_params = sum(p.numel() for p in run.model.parameters())  # a tied or shared matrix counts once
    share = table_params / model_params
    e.say(f"why V × d: one learned d-vector per id, so the table holds V·d = {V:,} × {d} = {table_params:,} "
          f"parameters, {share:.1%} of this model's {model_params:,}. The vocabulary sets the rows and the "
          "model's width the columns: every layer after it reads and writes vectors of that same width d.")

    e.data.update(text=text, ids=ids, tokens=labels, table=name, vocab_size=V, d_model=d,
                  row_norms=norms.tolist(), neighbours=neighbours, table_params=table_params,
                  model_params=model_params, table_share=share)
    shown = rows[:, :DIMS]  # (T, first dims)
    dims = [str(j) for j in range(shown.shape[1])]
    e.figure("lookup", f"{name}.weight[ids]: the rows of the text's tokens (first {len(dims)} of {d} dims)",
             lambda fig: signed_heatmap(fig.add_subplot(), shown, labels, dims, "dimension", "token"),
             {"rows": labels, "dims": dims, "values": shown})
    probe, near = next(iter(neighbours.items()))
    e.figure("neighbours", f"nearest neighbours of {probe!r} in {name} (cosine similarity)",
             lambda fig: _bars(fig.add_subplot(), near, probe), {"token": probe, "neighbours": near})
    return e


def _neighbours(tok, weight: Tensor, probes: list[int], e: Explanation) -> dict[str, list]:
    """The rows closest in direction to each probe's row (itself left out), as a table; label -> [[label, id, cos]]."""
    k = min(NEIGHBOURS, weight.shape[0] - 1)
    out, rows = {}, []
    for i in probes:
        cos = F.cosine_similarity(weight[i][None], weight, dim=-1)  # (1, d) against (V, d) -> (V,)
        cos[i] = float("-inf")  # not its own neighbour
        top = cos.topk(k)
        label = token_label(tok, i)
        out[label] = [[token_label(tok, j), j, c] for j, c in zip(top.indices.tolist(), top.values.tolist(),
                                                                   strict=True)]
        rows += [[label, rank + 1, n, j, c] for rank, (n, j, c) in enumerate(out[label])]
    e.table(["token", "rank", "neighbour", "id", "cosine"], rows,
            title=f"nearest neighbours by cosine similarity of the rows (top {k} of the other {weight.shape[0] - 1:,})")
    return out


def _bars(ax, near: list, probe: str) -> None:
    ax.bar(range(len(near)), [c for _, _, c in near], color="tab:blue")
    ax.set_xticks(range(len(near)), [n for n, _, _ in near])
    ax.set_xlabel(f"nearest tokens to {probe!r}")
    ax.set_ylabel("cosine similarity")
    ax.axhline(0, color="black", linewidth=0.5)
