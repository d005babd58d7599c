"""Parameter accounting for a GPT: where every parameter sits, what a token costs, what training needs.

The report is built from the real model, not from a formula: `GPT(cfg)` is constructed on the ``meta``
device (shapes only, no memory, so GPT-3 175B costs nothing) and its named parameters are grouped into
components. The rows therefore always sum to ``model.num_params()``, whatever the config.

    >>> from qkv.models.presets import get_preset
    >>> report = param_report(get_preset("gpt2"), "gpt2")
    >>> report.total
    124439808

Conventions
-----------
- Tied weights are counted once: with ``tie_embeddings`` the LM head row shows 0 and says "tied to tok_emb".
- Biases are folded into the row of their matrix (shape ``768×768 + 768``); a layer's norms (norm1, norm2,
  weights and biases) share one row.
- Non-embedding parameters N exclude the token and learned position tables (Kaplan et al. 2020, §2.1).
- FLOPs per token, forward (Kaplan et al. 2020, Table 1, counting a multiply-add as 2 FLOPs):

      C_forward ≈ 2·N_body + 2·n_layers·n_ctx·d_attn + 2·d_model·vocab

  N_body is N without an untied LM head, so the head's matmul is counted exactly once (by the last term)
  whether tied or not. The attention term is for a token attending to a full context n_ctx = max_seq_len;
  d_attn = n_heads·d_head. Norms, softmax and activations are left out (≪ 1%). Training ≈ 3 × forward
  (the backward pass costs twice the forward).
- Memory, weights and optimizer state only (activations depend on batch and length and are not included):
  fp32 training holds weights + grads + AdamW m + v in fp32, 16 bytes per parameter. bf16-mixed training
  holds bf16 weights + bf16 grads (2 + 2) and an fp32 master copy + fp32 m + v (4 + 4 + 4): also 16 bytes per
  parameter. Mixed precision saves activation memory and time, not optimizer state.
- KV cache: keys and values of every layer, 2·n_layers·n_heads·d_head numbers per token.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch

from qkv.config import to_dict
from qkv.models.gpt import GPT, GPTConfig

# (pattern on the parameter name, component, group). Every GPT parameter matches exactly one pattern;
# anything new that matches none lands in an "other" row, so the sum stays exact.
_COMPONENTS: list[tuple[str, str, str]] = [
    (r"tok_emb\.", "token embedding (tok_emb)", "embedding"),
    (r"pos_emb\.", "positions (pos_emb)", "embedding"),
    (r"value_embs\.", "value embeddings (value_embs, one table per layer)", "embedding"),
    (r"blocks\.\d+\.attn\.q_proj\.", "Q (attn.q_proj)", "layer"),
    (r"blocks\.\d+\.attn\.k_proj\.", "K (attn.k_proj)", "layer"),
    (r"blocks\.\d+\.attn\.v_proj\.", "V (attn.v_proj)", "layer"),
    (r"blocks\.\d+\.attn\.o_proj\.", "output projection (attn.o_proj)", "layer"),
    (r"blocks\.\d+\.mlp\.up\.", "MLP up (mlp.up)", "layer"),
    (r"blocks\.\d+\.mlp\.down\.", "MLP down (mlp.down)", "layer"),
    (r"blocks\.\d+\.norm[12]\.", "norms (norm1, norm2)", "layer"),
    (r"blocks\.\d+\.", "other (per layer)", "layer"),
    (r"norm_f\.", "final norm (norm_f)", "head"),
    (r"lm_head\.", "LM head (lm_head)", "head"),
    (r"(resid|x0)_scales", "residual scalars λ, μ of the x0 shortcut (resid_scales, x0_scales)", "head"),
    (r"", "other", "head"),
]

_NO_POSITION_PARAMS = {
    "sinusoidal": "sinusoidal table: fixed, 0 params",
    "rope": "RoPE rotates q and k: 0 params",
    "none": "no position information: 0 params",
}


@dataclass
class ParamRow:
    """One component. For rows in the per-layer block, `count` is the total over all layers."""

    name: str
    group: str  # "embedding", "layer" (repeated n_layers times) or "head"
    shape: str  # e.g. "768×768 + 768" (for a layer row: one layer's tensors)
    count: int
    per_layer: int | None = None  # count in one layer (layer rows only)
    share: float = 0.0  # count / total
    note: str = ""


@dataclass
class ParamReport:
    name: str
    config: dict
    rows: list[ParamRow]
    total: int
    non_embedding: int
    embedding: int  # token table + learned position table
    per_layer: int  # parameters in one block
    flops_forward_per_token: int
    flops_train_per_token: int
    memory_bytes: dict[str, int]  # weights_fp32, weights_bf16, train_fp32, train_bf16_mixed
    kv_cache_bytes_per_token_fp32: int

    @property
    def kv_cache_bytes_full_context_fp32(self) -> int:
        return self.kv_cache_bytes_per_token_fp32 * self.config["max_seq_len"]

    def to_json(self) -> dict:
        return {
            "kind": "gpt",  # what this table holds: components, FLOPs and memory (a GroupTable says "groups")
            "name": self.name,
            "total": self.total,
            "non_embedding": self.non_embedding,
            "embedding": self.embedding,
            "embedding_share": self.embedding / self.total,
            "per_layer": self.per_layer,
            "flops_forward_per_token": self.flops_forward_per_token,
            "flops_train_per_token": self.flops_train_per_token,
            "memory_bytes": dict(self.memory_bytes),
            "kv_cache_bytes_per_token_fp32": self.kv_cache_bytes_per_token_fp32,
            "kv_cache_bytes_full_context_fp32": self.kv_cache_bytes_full_context_fp32,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "config": dict(self.config),
        }

    def format_text(self) -> str:
        return self.format_table()

    def format_table(self) -> str:
        """Aligned text: one row per component, the per-layer block once, then totals, FLOPs and memory."""
        c = self.config
        n_layers = c["n_layers"]
        head_dim = c["d_head"] or c["d_model"] // c["n_heads"]
        d_ff = c["d_ff"] or 4 * c["d_model"]

        def pct(n: int) -> str:
            return f"{100 * n / self.total:.1f}%"

        table = [("component", "shape", "per layer", "total", "share", "")]
        for group in ("embedding", "layer", "head"):
            rows = [r for r in self.rows if r.group == group]
            if group == "layer":
                table.append((f"per layer × {n_layers}:", "", "", "", "", ""))
            for r in rows:
                indent = "  " if group == "layer" else ""
                per = f"{r.per_layer:,}" if r.per_layer is not None else ""
                share = pct(r.count) if r.count else "-"
                table.append((indent + r.name, r.shape, per, f"{r.count:,}", share, r.note))
            if group == "layer":
                n = sum(r.count for r in rows)
                table.append(("  all of one block", "", f"{self.per_layer:,}", f"{n:,}", pct(n), ""))
        table.append(("total", "", "", f"{self.total:,}", pct(self.total), human(self.total)))
        table.append(("non-embedding", "", "", f"{self.non_embedding:,}", pct(self.non_embedding),
                      human(self.non_embedding)))

        widths = [max(len(row[i]) for row in table) for i in range(5)]
        lines = []
        for row in table:
            cells = [  # text columns left-aligned, numbers right-aligned
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row[:5], widths, strict=True))
            ]
            lines.append("  ".join(cells) + (f"  {row[5]}" if row[5] else ""))
        rule = "-" * (sum(widths) + 2 * 4)
        lines = [lines[0], rule, *lines[1:-2], rule, *lines[-2:]]

        mem = self.memory_bytes
        kv = self.kv_cache_bytes_per_token_fp32
        T = c["max_seq_len"]
        title = (
            f"{self.name}: {n_layers} layers, d_model {c['d_model']}, {c['n_heads']} heads × {head_dim}, "
            f"d_ff {d_ff}, context {T}, vocab {c['vocab_size']}"
        )
        return "\n".join([
            title,
            "",
            *(line.rstrip() for line in lines),
            "",
            self.embedding_line(),
            f"FLOPs per token: forward {human(self.flops_forward_per_token)}, "
            f"training ≈ 3 × forward = {human(self.flops_train_per_token)} (Kaplan et al. 2020, context {T})",
            f"weights: {human_bytes(mem['weights_fp32'])} fp32, {human_bytes(mem['weights_bf16'])} bf16",
            f"training state, weights + grads + AdamW m, v (no activations): "
            f"{human_bytes(mem['train_fp32'])} fp32, {human_bytes(mem['train_bf16_mixed'])} bf16-mixed "
            f"(16 bytes per parameter either way)",
            "  per process: the same under DDP; under FSDP (train.parallel = \"fsdp\") "
            + ", ".join(f"{human_bytes(mem['train_fp32'] / n)} on {n}" for n in (2, 4, 8))
            + " processes, plus one gathered block",
            f"KV cache (fp32): {human_bytes(kv)} per token, "
            f"{human_bytes(self.kv_cache_bytes_full_context_fp32)} for a full {T}-token context",
        ])

    def embedding_line(self) -> str:
        """Why the embedding is big (or small): the token table against one block, ≈ 12·d_model² each."""
        c = self.config
        token = c["vocab_size"] * c["d_model"]
        rows = [r for r in self.rows if r.group == "embedding" and r.count]
        parts = ", ".join(f"{r.name.split(' (')[0]} {100 * r.share:.1f}%" for r in rows)
        return (
            f"embeddings: {100 * self.embedding / self.total:.1f}% of parameters ({parts}): "
            f"vocab × d_model = {c['vocab_size']:,} × {c['d_model']:,} = {human(token)}, "
            f"as many as {token / self.per_layer:.1f} blocks ({human(self.per_layer)} each, ≈ 12·d_model²)"
        )


def human(n: float) -> str:
    """124439808 -> '124.4M', 175e9 -> '175.0B' (decimal units)."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:g}"


def human_bytes(n: float) -> str:
    """497759232 -> '497.8 MB' (decimal units, as disk and GPU vendors use)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:g} B"


def _shape_str(shapes: list[tuple[int, ...]]) -> str:
    """[(768, 768), (768,)] -> '768×768 + 768'; repeats collapse: four (768,) -> '4 × 768'."""
    parts: list[list] = []
    for s in shapes:
        text = "×".join(map(str, s)) or "scalar"
        if parts and parts[-1][0] == text:
            parts[-1][1] += 1
        else:
            parts.append([text, 1])
    return " + ".join(text if k == 1 else f"{k} × {text}" for text, k in parts)


def _classify(name: str) -> tuple[str, str]:
    for pattern, component, group in _COMPONENTS:
        if re.match(pattern, name):
            return component, group
    raise AssertionError("the last pattern matches everything")


def param_report(cfg: GPTConfig, name: str = "GPT") -> ParamReport:
    """Account for every parameter of `GPT(cfg)` (built on the meta device) and what it costs to run."""
    with torch.device("meta"):
        model = GPT(cfg)
    return report_for_model(model, name)


def report_for_model(model: GPT, name: str = "GPT") -> ParamReport:
    """The report for an existing model (any device; meta is enough): rows, totals, FLOPs, memory."""
    cfg = model.config
    comps: dict[str, dict] = {}  # component -> {"group", "shapes" (layer 0 or whole), "count", "per_layer"}
    first_owner: dict[int, str] = {}  # id(parameter) -> first name, to spot tied weights
    tied: dict[str, str] = {}  # component -> note
    for pname, p in model.named_parameters(remove_duplicate=False):
        component, group = _classify(pname)
        c = comps.setdefault(component, {"group": group, "shapes": [], "count": 0, "per_layer": 0})
        if id(p) in first_owner:
            tied[component] = f"tied to {first_owner[id(p)].rsplit('.', 1)[0]} (counted once)"
            c["shapes"].append(tuple(p.shape))
            continue
        first_owner[id(p)] = pname
        c["count"] += p.numel()
        if group != "layer" or pname.startswith("blocks.0."):
            c["shapes"].append(tuple(p.shape))
            c["per_layer"] += p.numel()

    total = model.num_params()
    order = [component for _, component, _ in _COMPONENTS]
    rows: list[ParamRow] = []
    for component, c in sorted(comps.items(), key=lambda kv: order.index(kv[0])):
        rows.append(ParamRow(
            name=component, group=c["group"], shape=_shape_str(c["shapes"]), count=c["count"],
            per_layer=c["per_layer"] if c["group"] == "layer" else None, share=c["count"] / total,
            note=tied.get(component, ""),
        ))
    if cfg.pos_encoding != "learned":  # say so instead of leaving the row out
        rows.insert(1, ParamRow(f"positions ({cfg.pos_encoding})", "embedding", "-", 0,
                                note=_NO_POSITION_PARAMS[cfg.pos_encoding]))
    if sum(r.count for r in rows) != total:  # a bug here, not a user error
        raise AssertionError(f"rows sum to {sum(r.count for r in rows)}, model has {total}")

    non_embedding = model.num_params(non_embedding=True)
    untied_head = 0 if cfg.tie_embeddings else model.lm_head.weight.numel()
    d_attn = cfg.n_heads * cfg.head_dim
    flops_fwd = (
        2 * (non_embedding - untied_head)
        + 2 * cfg.n_layers * cfg.max_seq_len * d_attn
        + 2 * cfg.d_model * cfg.vocab_size
    )
    return ParamReport(
        name=name,
        config=to_dict(cfg),
        rows=rows,
        total=total,
        non_embedding=non_embedding,
        embedding=total - non_embedding,
        per_layer=sum(r.per_layer or 0 for r in rows),
        flops_forward_per_token=flops_fwd,
        flops_train_per_token=3 * flops_fwd,
        memory_bytes={
            "weights_fp32": 4 * total,
            "weights_bf16": 2 * total,
            "train_fp32": (4 + 4 + 4 + 4) * total,  # weights, grads, m, v
            "train_bf16_mixed": (2 + 2 + 4 + 4 + 4) * total,  # bf16 weights, grads; fp32 master, m, v
        },
        kv_cache_bytes_per_token_fp32=2 * cfg.n_layers * d_attn * 4,  # k and v, every layer, 4 bytes
    )



# ------------------------------------------------------------------------------------- any model, by name
@dataclass
class ParamGroup:
    """The parameters that share a name once layer numbers are folded (``decoder.layers.*.self_attn.q_proj``)."""

    name: str  # the module path, with "*" for the layer number
    shapes: list[tuple[int, ...]]  # one copy's tensors (weight, bias ...)
    copies: int  # how many layers repeat it
    count: int  # all copies together (tied weights counted once)
    share: float = 0.0
    note: str = ""


def parameter_groups(model: torch.nn.Module) -> tuple[list[ParamGroup], int]:
    """Every parameter of any model (GPT, Seq2Seq, DiT, autoencoder), grouped by module with layer numbers
    folded (modules that differ only in a number and hold tensors of the same shapes: the layers of a stack),
    in the model's own order; and the total (a tied weight is counted once, where it first appears). The
    counts sum to the total exactly."""
    modules: dict[str, dict] = {}  # module path -> {"shapes": {leaf: shape}, "count", "note"}
    seen: dict[int, str] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        module, _, leaf = pname.rpartition(".")
        m = modules.setdefault(module or pname, {"shapes": {}, "count": 0, "note": ""})
        m["shapes"][leaf] = tuple(p.shape)
        if id(p) in seen:
            m["note"] = f"tied to {seen[id(p)].rsplit('.', 1)[0]} (counted once)"
            continue
        seen[id(p)] = pname
        m["count"] += p.numel()
    stacks: dict[str, list[str]] = {}  # folded name -> its modules, in order
    for module in modules:
        stacks.setdefault(re.sub(r"\.\d+(?=\.|$)", ".*", module), []).append(module)
    rows: list[tuple[str, list[str]]] = []
    for folded, members in stacks.items():
        alike = len({tuple(modules[m]["shapes"].items()) for m in members}) == 1 and len(members) > 1
        rows += [(folded, members)] if alike else [(m, [m]) for m in members]
    total = sum(m["count"] for m in modules.values())
    return [ParamGroup(name, list(modules[members[0]]["shapes"].values()), len(members),
                       sum(modules[m]["count"] for m in members),
                       sum(modules[m]["count"] for m in members) / total if total else 0.0,
                       modules[members[0]]["note"]) for name, members in rows], total


def format_groups(rows: list[ParamGroup], total: int, title: str) -> str:
    """Aligned text for `parameter_groups`: module, one copy's shapes, copies, parameters, share."""
    width = max([len(r.name) for r in rows] + [6])
    lines = [title, f"{'module':<{width}}  {'shape (one copy)':<28} {'copies':>6} {'params':>12} {'share':>7}"]
    for r in rows:
        shape = " + ".join("×".join(map(str, s)) for s in r.shapes)
        lines.append(f"{r.name:<{width}}  {shape:<28} {r.copies:>6} {r.count:>12,} {r.share:>7.1%}"
                     + (f"  {r.note}" if r.note else ""))
    lines.append(f"{'total':<{width}}  {'':<28} {'':>6} {total:>12,} ({human(total)})")
    return "\n".join(lines)


@dataclass
class GroupTable:
    """The parameter table of any model: `parameter_groups`, printable and as JSON (kind "groups")."""

    name: str
    model_type: str
    rows: list[ParamGroup]
    total: int

    @classmethod
    def of(cls, model: torch.nn.Module, name: str, model_type: str) -> GroupTable:
        return cls(name, model_type, *parameter_groups(model))

    def to_json(self) -> dict:
        return {"kind": "groups", "name": self.name, "model_type": self.model_type, "total": self.total,
                "groups": [dataclasses.asdict(r) for r in self.rows]}

    def format_text(self) -> str:
        return format_groups(self.rows, self.total, f"{self.name}: {self.model_type} model, parameters by module")
