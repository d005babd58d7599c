"""Topic `spans`: where an answer comes from, two ways — the span head pointing into the passage, and the decoder's
cross-attention while it writes the answer.

The extractive head is one linear layer on the encoder's states: for every position i of ``question ; passage``,
s_i = w_start · h_i + b_start and e_i = w_end · h_i + b_end. The answer is the span i..j of the passage with the
highest s_i + e_j, i <= j < i + L (`qkv.generation.spans.best_spans`). This topic recomputes both logit rows from
the encoder's states and the head's two weight rows, checks them against the run's own `spans` call, shows the
most likely starts and ends, and then the generative head's answer with the cross-attention that wrote it,
averaged over the last decoder layer's heads: the passage characters it read for each character it wrote.
"""

from __future__ import annotations

import torch

from qkv.explain.base import Explanation, Options, heatmap, no_grad
from qkv.explain.inputs import source_of

LESSON = ("Question answering reads 'question ; passage' with the encoder and can answer two ways. The extractive "
          "head points: a start score and an end score for every encoder state, and the answer is the best span "
          "of the passage (BiDAF, BERT). The generative head writes: the decoder produces the answer a token "
          "at a time, reading the passage only through cross-attention (T5), so it can also say what the passage "
          "does not hold: yes, no, a count.")

TOP = 5  # most likely starts and ends shown
WIDTH = 64  # source positions in the cross-attention picture


@no_grad
def explain_spans(run, opts: Options) -> Explanation:
    from qkv.generation.spans import best_spans

    model = run.model
    source = run.read_source(source_of(run, opts))[0]
    e = Explanation("spans", "the span head's start/end logits, and the decoder's cross-attention over the passage",
                    run.path.name)
    e.say(LESSON)
    (ours,) = run.spans([source])  # the run's own reading: logits, the allowed positions, the best span
    batch = run.source_batch([source])
    labels = batch.labels[0]
    memory = model.encode(batch.src, batch.src_mask)[0]  # (S, C)
    w, b = model.span_head.weight, model.span_head.bias  # (2, C), (2,)
    e.tensor("memory = encoder(question ; passage)", memory, f"{memory.size(0)} positions × d_model "
             f"{memory.size(1)}", rows=labels)
    e.tensor("span_head.weight: row 0 = w_start, row 1 = w_end", w, "(2, d_model)")
    start = memory @ w[0] + b[0]  # (S,)
    end = memory @ w[1] + b[1]  # (S,)
    e.check("start logits s_i = w_start · h_i + b_start  ==  the run's span head", start.float().cpu(),
            ours.start_logits)
    e.check("end logits e_j = w_end · h_j + b_end  ==  the run's span head", end.float().cpu(), ours.end_logits)
    allowed = ours.allowed.to(start.device)
    p_start = start.float().masked_fill(~allowed, float("-inf")).softmax(-1)  # (S,): over the passage only
    p_end = end.float().masked_fill(~allowed, float("-inf")).softmax(-1)
    q = int(allowed.float().argmax())
    e.say(f"the question takes positions 0..{q - 1}; the passage starts at {q}: the softmax and the search run over "
          "the passage only")
    from qkv.data.qa import token_offsets

    (offsets,) = token_offsets(run.src_tokenizer, [source])
    rows = []
    for name, p in (("start", p_start), ("end", p_end)):
        top = p.topk(min(TOP, int(allowed.sum()))).indices.tolist()
        rows += [[name, i, labels[i], f"{float(p[i]):.3f}", _around(source, offsets, i)] for i in top]
    e.table(["", "position", "token", "probability", "around it"], rows,
            f"the {TOP} most likely starts and ends")
    i, j, score = best_spans(start[None], end[None], allowed[None], run.config.data.max_answer_len)
    e.check("best span = argmax s_i + e_j over i <= j < i + L  ==  the run's span", torch.tensor([float(i), float(j)]),
            torch.tensor([float(ours.start), float(ours.end)]), tolerance=0.0)
    e.say(f"extractive answer: positions {ours.start}..{ours.end}: {ours.answer!r} (score {ours.score:.3f})")

    # the generative head: its answer, and the cross-attention it wrote it with
    stack = run.cross_attention(source)
    amap = stack.pick(-1, None)  # (answer tokens, source positions): the last decoder layer, heads averaged
    weights = amap.weights.float()  # (T, S)
    e.say(f"generative answer: {stack.text!r}")
    share = float(weights[:, q:].sum() / weights.sum()) if weights.numel() else 0.0
    e.say(f"the last decoder layer's cross-attention puts {100 * share:.1f}% of its weight on the passage "
          "(the rest on the question and EOS)")
    focus = int(weights.sum(0)[q:].argmax()) + q if weights.numel() else q  # the passage position read most
    lo = max(0, min(focus - WIDTH // 2, weights.size(1) - WIDTH))
    hi = min(weights.size(1), lo + WIDTH)
    e.say(f"the most-read passage position is {focus} ({_around(source, offsets, focus)!r}); the picture "
          f"shows positions {lo}..{hi - 1}")
    e.figure("span-logits", "start and end probabilities over the passage",
             lambda fig: _draw_spans(fig, p_start.cpu(), p_end.cpu(), q, ours),
             {"start": p_start.cpu(), "end": p_end.cpu(), "labels": labels})
    e.figure("cross-attention", "the decoder's cross-attention while writing the answer (last layer, heads "
             "averaged)", lambda fig: heatmap(fig.add_subplot(111), weights[:, lo:hi], amap.rows, amap.cols[lo:hi],
                                              "source position (key)", "answer token (query)"),
             {"weights": weights[:, lo:hi], "first_position": lo}, size=(12.0, 4.0))
    e.data.update(source=source, tokens=labels, passage_at=q, start=ours.start, end=ours.end,
                  extractive_answer=ours.answer, span_score=ours.score, generative_answer=stack.text,
                  cross_attention_on_passage=share)
    return e


def _around(source: str, offsets: list[tuple[int, int]], i: int) -> str:
    """The source text around token i (its characters and eight on each side)."""
    if i >= len(offsets):
        return "<eos>"
    a, b = offsets[i]
    return source[max(0, a - 8): b + 8]


def _draw_spans(fig, p_start, p_end, q, ours) -> None:
    ax = fig.add_subplot(111)
    x = range(q, len(p_start))
    ax.plot(list(x), p_start[q:].tolist(), label="start", color="tab:green")
    ax.plot(list(x), p_end[q:].tolist(), label="end", color="tab:red")
    ax.axvspan(ours.start - 0.5, ours.end + 0.5, color="gold", alpha=0.3, label="best span")
    ax.set_xlabel("passage position (character)")
    ax.set_ylabel("probability")
    ax.legend()
