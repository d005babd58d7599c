"""Topic `parameters`: where this run's parameters sit, then GPT-3 175B's, and the "500,000 × 1024" claim.

The run's table is what `qkv params RUN` prints (`qkv.evaluation.params`): components of a GPT, or modules
with layer numbers folded for any other model, and the topic checks that its rows add up exactly to the
model's own `sum(p.numel())`. GPT-3 175B (`qkv.models.presets`, Brown et al. 2020, Table 2.1) is built on
the meta device (shapes only, no memory) and counted the same way. Its real token embedding, 50,257 ×
12,288, is then set against the often-repeated claim that ChatGPT's input embedding is "500,000 words ×
1024": both counts and both shares of GPT-3's total, from the preset's modules.
"""

from __future__ import annotations

from functools import cache

import torch

from qkv.evaluation.params import ParamReport, human, report_for_model
from qkv.explain.base import Check, Explanation, Options, no_grad
from qkv.models.gpt import GPT
from qkv.models.presets import get_preset
from qkv.tasks.capabilities import Capability, can

LESSON = ("A model's parameters are the numbers training sets: every weight matrix, bias and norm scale. Counting "
          "them by component shows where a model's size goes. In a small model the embedding table can be a large "
          "part of it; in a large one almost everything is in the blocks (about 12·d² per layer: 4·d² for Q, K, V "
          "and the output projection, 8·d² for the MLP), and the embedding table is a rounding error.")

GPT3 = "gpt3-175b"
CLAIM_ROWS, CLAIM_COLS = 500_000, 1024  # "ChatGPT's input embedding is 500,000 words × 1024"
BARS = 12  # components drawn per chart; smaller ones are summed into "the rest"


@no_grad
def explain_parameters(run, opts: Options) -> Explanation:
    e = Explanation("parameters", "where the parameters are; GPT-3 175B; the '500,000 × 1024' claim", run.path.name)
    e.say(LESSON)
    model = run.model
    n = sum(p.numel() for p in model.parameters())  # a tied or shared tensor counts once
    counts = _run_table(run, model, e)
    total = sum(counts.values())
    _exact(e, f"this table's rows sum to sum(p.numel() for p in model.parameters()) = {n:,}", total, n)
    if getattr(run, "autoencoder", None) is not None:
        e.say(f"this latent-diffusion run also has its autoencoder (RUN/autoencoder), a separate model of "
              f"{sum(p.numel() for p in run.autoencoder.parameters()):,} parameters, not counted above.")

    report, n3, (rows, cols) = _gpt3()
    c = report.config
    e.say(f"GPT-3 175B ({GPT3}, Brown et al. 2020): {c['n_layers']} layers, d = {c['d_model']:,}, {c['n_heads']} "
          f"heads × {c['d_head']}, vocabulary {c['vocab_size']:,}, context {c['max_seq_len']:,}; built on the meta "
          "device.")
    gpt3_counts = _gpt_rows(report, e, f"{GPT3}: parameters by component")
    _exact(e, f"{GPT3}'s rows sum to sum(p.numel()) of the preset's modules = {n3:,}", sum(gpt3_counts.values()), n3)

    claim, real = CLAIM_ROWS * CLAIM_COLS, rows * cols
    e.table(["input embedding", "rows (vocabulary)", "columns (width d)", "parameters", "share of GPT-3 175B"],
            [["the claim: '500,000 words × 1024'", CLAIM_ROWS, CLAIM_COLS, claim, f"{claim / n3:.3%}"],
             ["GPT-3 175B's tok_emb", rows, cols, real, f"{real / n3:.3%}"]],
            title=f"the claim checked against GPT-3 175B's {n3:,} parameters")
    e.say(f"the claim's count, {human(claim)}, is {abs(real - claim) / real:.0%} off the real {human(real)}, but both "
          f"factors are wrong: GPT-3 reads {rows:,} byte-level BPE tokens (pieces of words, not words) and its rows "
          f"are {cols:,} wide, not {CLAIM_COLS:,}. Either way the input embedding is a small part of the model: "
          f"{claim / n3:.2%} as claimed, {real / n3:.2%} in fact; the {c['n_layers']} blocks hold "
          f"{report.per_layer * c['n_layers'] / n3:.1%}. (ChatGPT's own sizes are not published; GPT-3's are.)")
    if can(run, Capability.TOKEN_INPUT):
        share = run.text_input().table.weight.numel() / n
        e.say(f"this run's token table is {share:.1%} of its parameters against GPT-3's {real / n3:.2%}: the "
              "vocabulary stays the same size while the blocks grow with d² × layers.")

    e.data.update(run_total=n, run_components=counts, gpt3_total=n3, gpt3_components=gpt3_counts,
                  gpt3_embedding=real, gpt3_embedding_shape=[rows, cols], claim=claim,
                  claim_shape=[CLAIM_ROWS, CLAIM_COLS], claim_share=claim / n3, real_share=real / n3)
    charts = {run.path.name: _shares(counts, n), GPT3: _shares(gpt3_counts, n3)}
    e.figure("shares", "share of the parameters by component: this run and GPT-3 175B",
             lambda fig: _bars(fig, charts), {"shares": charts}, size=(12.0, 5.5))
    return e


@cache
def _gpt3() -> tuple[ParamReport, int, tuple[int, int]]:
    """GPT-3 175B built once on the meta device (shapes only: 175B parameters cost no memory): its report,
    sum(p.numel()) of its modules, and its token table's shape."""
    with torch.device("meta"):
        model = GPT(get_preset(GPT3))
    return report_for_model(model, GPT3), sum(p.numel() for p in model.parameters()), tuple(model.tok_emb.weight.shape)


def _run_table(run, model, e: Explanation) -> dict[str, int]:
    """The run's table as `qkv params` prints it (`Run.parameter_table`): a GPT's components, any other model's
    modules."""
    table = run.parameter_table()
    if isinstance(table, ParamReport):
        return _gpt_rows(table, e, f"{run.path.name}: parameters by component")
    e.table(["module", "shape (one copy)", "copies", "parameters", "share", "note"],
            [[g.name, " + ".join("×".join(map(str, s)) for s in g.shapes), g.copies, g.count, f"{g.share:.1%}", g.note]
             for g in table.rows],
            title=f"{run.path.name}: {type(model).__name__} parameters by module (layer numbers folded as *), "
                  f"{table.total:,} ({human(table.total)})")
    return {g.name: g.count for g in table.rows}


def _gpt_rows(report, e: Explanation, title: str) -> dict[str, int]:
    """A GPT's `ParamReport` rows as a table; component -> count."""
    e.table(["component", "shape (a layer's, for layer rows)", "per layer", "total", "share", "note"],
            [[r.name, r.shape, r.per_layer if r.per_layer is not None else "", r.count, f"{r.share:.2%}", r.note]
             for r in report.rows],
            title=f"{title}, {report.total:,} ({human(report.total)})")
    return {r.name: r.count for r in report.rows}


def _exact(e: Explanation, what: str, ours: int, model: int) -> None:
    """An exact check on integers (`Explanation.check` compares in fp32, which rounds counts above 2^24)."""
    e.blocks.append(Check(what, float(abs(ours - model)), tolerance=0.0))


def _shares(counts: dict[str, int], total: int) -> dict[str, float]:
    """The largest components' shares, the rest summed, for a chart."""
    ranked = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: -kv[1])
    shares = {k: v / total for k, v in ranked[:BARS]}
    if len(ranked) > BARS:
        shares["the rest"] = sum(v for _, v in ranked[BARS:]) / total
    return shares


def _bars(fig, charts: dict[str, dict[str, float]]) -> None:
    for k, (name, shares) in enumerate(charts.items()):
        ax = fig.add_subplot(1, len(charts), k + 1)
        ax.barh(range(len(shares)), [100 * s for s in shares.values()], color="tab:blue")
        ax.set_yticks(range(len(shares)), list(shares), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("share of all parameters (%)")
        ax.set_ylabel("component")
        ax.set_title(name, fontsize=9)
