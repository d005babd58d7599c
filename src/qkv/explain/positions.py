"""Topic `positions`: the positional signal each row gets, and one token at two positions.

Attention alone cannot tell the order of its inputs, so the model marks positions. A learned table (GPT-2)
or the fixed sinusoidal table (Vaswani et al. 2017) is added to the token rows: the topic prints the token
rows, the positional rows and their sum X, and checks that sum against the input of the first block as the
model computes it (captured by a forward pre-hook; a translation run's encoder first scales the token rows
by √d). RoPE adds nothing: it rotates each head's queries and keys, and the topic prints the angles the
first block receives. A token that occurs twice shows the effect: one token row, two different input rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qkv.errors import QKVError
from qkv.evaluation.attention import token_label
from qkv.explain.base import WINDOW, Explanation, Options, no_grad, signed_heatmap, window
from qkv.explain.inputs import default_text
from qkv.nn.positional import rope_angles

LESSON = ("Attention compares every token with every other and, by itself, cannot tell their order: shuffle the "
          "tokens and each gets the same output, shuffled. So the position is put into the numbers. GPT-2 adds a "
          "learned vector for each position to the token's row; the original transformer adds a fixed table of "
          "sines and cosines of different frequencies; RoPE adds nothing to the rows and instead rotates each "
          "head's queries and keys by an angle proportional to the position, so that q·k depends on how far apart "
          "two tokens are.")

PICTURE = 64  # positions (and dimensions) in the picture of the table

HOW = {
    "learned": "pos_emb.weight: one trained row per position (GPT-2's wpe), added to the token row",
    "sinusoidal": "pos_emb.table: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); "
                  "fixed, not trained; added to the token row",
    "rope": "RoPE: nothing is added to the rows; inside every attention layer q and k of each head are rotated, "
            "dimension pair (i, i + D/2) by the angle pos / base^(2i/D)",
    "none": "none: no positional signal at all; only the causal mask breaks the symmetry",
}


@no_grad
def explain_positions(run, opts: Options) -> Explanation:
    ti = run.text_input()
    tok, side = ti.tokenizer, ti.side
    text = default_text(run, opts)
    cfg = ti.config
    e = Explanation("positions", "the positional signal added to each row", run.path.name)
    e.say(LESSON)
    kind = ti.pos_kind
    emb_name, emb = ti.table_name, ti.table
    first_name, first = f"{ti.layers_name}[0]", ti.layers[0]
    scale = ti.scale
    e.say(f"this run: {HOW[kind]}.")

    ids = tok.encode(text)
    if not ids:
        raise QKVError("the text encodes to no tokens")
    limit = min(WINDOW, cfg.max_seq_len)
    ids = window(ids, e, limit)
    if len(set(ids)) == len(ids):  # no token twice: show one anyway
        ids = ids[: limit - 1] + ids[:1]
        e.say("(no token occurs twice in the text; its first token is appended at the end)")
    labels = [token_label(tok, i) for i in ids]
    T = len(ids)
    idx = torch.tensor([ids], device=emb.weight.device)  # (1, T)
    positions = torch.arange(T, device=idx.device)  # (T,)
    e.say(f"{side}: {text!r} -> {T} tokens at positions 0 to {T - 1}")

    captured = {}

    def grab(module, args, kwargs):
        captured["x"], captured["rope"] = args[0], kwargs.get("rope")

    hook = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        ti.forward(ids)
    finally:
        hook.remove()
    x_model = captured["x"][0]  # (1, T, d) -> (T, d)

    tokens = emb(idx)[0]  # (1, T, d) -> (T, d)
    e.tensor(f"{emb_name}(ids)", tokens, "T × d: the token rows, the same for a token wherever it stands",
             rows=labels)
    pos_rows = [f"pos {t}" for t in range(T)]
    if kind in ("learned", "sinusoidal"):
        signal = ti.pos_emb(positions)  # (T, d)
        e.tensor("pos_emb(positions)", signal, f"T × d: row t is added to the token at position t ({kind})",
                 rows=pos_rows)
        ours = tokens * scale + signal  # (T, d)
        formula = f"{emb_name}(ids){'·√d' if scale != 1.0 else ''} + pos_emb(positions)"
        if scale != 1.0:
            e.say(f"the {ti.where.split()[0]} scales the token rows by √d = {scale:.4f} (scale_embeddings, Vaswani et "
                  "al. §3.4) before adding the positions")
    else:
        ours = tokens  # (T, d): nothing is added
        formula = f"{emb_name}(ids), nothing added"
        if kind == "rope":
            cos, sin = captured["rope"]  # each (T, D)
            e.tensor("cos(angles)", cos, "T × D: cos of the rotation angle of each position and head dimension, "
                     f"as {first_name} receives it (rope_angles)", rows=pos_rows)
            e.tensor("sin(angles)", sin, "T × D: applied to Q and K in every layer, never added to X", rows=pos_rows)
    drop = ti.drop
    e.say(f"dropout (p = {drop.p}) sits between the embedding step and {first_name}; "
          + ("the model is in eval mode, so it passes X through unchanged." if not drop.training else
             "the model is in TRAINING mode, so dropout changes X and the check below cannot hold."))
    e.tensor(f"X: the input of {first_name}", x_model, "T × d: captured by a forward pre-hook", rows=labels)
    check = e.check(f"{formula}  ==  the input of {first_name}", ours, x_model)

    pair = _same_token_twice(ids, labels, tokens, x_model, kind, e)
    e.data.update(text=text, ids=ids, tokens=labels, pos_encoding=kind, token_scale=scale, pair=pair,
                  check=check.max_abs_diff)
    _picture(ti, kind, e)
    return e


def _same_token_twice(ids, labels, tokens, x, kind: str, e: Explanation) -> dict:
    """The first token that occurs twice: its token rows (identical) against its input rows (not, if added)."""
    first_seen = {}
    for t, i in enumerate(ids):
        if i in first_seen:
            a, b = first_seen[i], t
            break
        first_seen[i] = t

    def compare(u, v) -> list[float]:
        return [F.cosine_similarity(u, v, dim=0).item(), (u - v).norm().item()]

    token_cmp, input_cmp = compare(tokens[a], tokens[b]), compare(x[a], x[b])
    e.table(["row", "cosine", "L2 distance"],
            [[f"token row {labels[a]}", *token_cmp], [f"input row X[{a}] vs X[{b}]", *input_cmp]],
            title=f"one token at two positions: {labels[a]!r} (id {ids[a]}) at positions {a} and {b}")
    if kind in ("learned", "sinusoidal"):
        e.say(f"the token row is the same vector at both positions; what enters the first block differs by "
              f"pos_emb({a}) − pos_emb({b}) (L2 {input_cmp[1]:.4f}), so attention can tell the two apart.")
    else:
        e.say("the two input rows are identical: " + ("RoPE puts the position in later, by rotating this token's "
              "query and key by different angles in every layer." if kind == "rope" else
              "with no positional signal only the causal mask (what each position may see) tells them apart."))
    return {"token": labels[a], "id": ids[a], "positions": [a, b], "token_cosine": token_cmp[0],
            "token_l2": token_cmp[1], "input_cosine": input_cmp[0], "input_l2": input_cmp[1]}


def _picture(ti, kind: str, e: Explanation) -> None:
    """The positional table (or RoPE's cosines) for the first positions, as a heatmap."""
    if kind == "none":
        return
    cfg = ti.config
    positions = torch.arange(min(PICTURE, cfg.max_seq_len), device=ti.table.weight.device)  # (P,)
    if kind == "rope":
        table = rope_angles(positions, cfg.head_dim, cfg.rope_base)[0]  # (P, D): cos of the angles
        what, xlabel = "RoPE: cos(angle) per position and head dimension", "head dimension"
    else:
        table = ti.pos_emb(positions)  # (P, d)
        what, xlabel = f"the {kind} positional table, pos_emb", "dimension"
    table = table[:, :PICTURE]  # (P, first dims)
    rows = [str(t) for t in range(table.shape[0])]
    cols = [str(j) for j in range(table.shape[1])]
    e.figure("table", f"{what} (first {len(rows)} positions × {len(cols)} dims)",
             lambda fig: signed_heatmap(fig.add_subplot(), table, rows, cols, xlabel, "position"),
             {"positions": len(rows), "dims": len(cols), "values": table}, size=(8.0, 6.0))
