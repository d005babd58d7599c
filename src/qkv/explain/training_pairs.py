"""Topic `training-pairs`: one training example exactly as the run's task builds it — inputs, targets, loss mask.

The run builds the example and scores it with its task's own loss (`TrainingExamples.training_example`, a
`qkv.tasks.capabilities.TrainingExample`); this topic shows it and recomputes that loss from the logits.

Every task here trains by next-token prediction; what differs is what the model reads and which targets
count. A language model reads a block of text and predicts the same block shifted by one token, every
position counting. A chat model reads a conversation rendered with the chat template and is scored only on
the assistant's tokens (`qkv.data.chat_template`). A translation model reads the source in the encoder and,
in the decoder, BOS + target, predicting target + EOS (`qkv.data.translation.collate`). The example comes
from the run's own data where it is on disk, or from text (and src for a pair); it is
batched by the task's real functions, scored by the task's real loss, and that loss is recomputed as the
mean cross-entropy −log p(target) over the positions that count.
"""

from __future__ import annotations

from torch import Tensor

from qkv.evaluation.attention import token_label
from qkv.explain.base import WINDOW, Explanation, Options, no_grad

LESSON = ("Training shows the model an input and, at every position, the token that should come next. The "
          "target sequence is the input shifted by one token, and the loss is the mean cross-entropy "
          "−log p(target) over the positions that count. What counts depends on the task: every position of "
          "a block of text; only the assistant's answer in a chat; only real target tokens (never padding) in "
          "a translation, whose decoder reads BOS + target and must produce target + EOS.")

IGNORE = -100  # the target the losses skip


@no_grad
def explain_training_pairs(run, opts: Options) -> Explanation:
    e = Explanation("training-pairs", "one training example: inputs, targets, loss mask", run.path.name)
    e.say(LESSON)
    source = opts.image if opts.image is not None else opts.src
    ex = run.training_example(text=opts.text, src=source, limit=WINDOW)
    e.say(f"example: {ex.where}")
    for line in ex.lines:
        e.say(line)
    if ex.source_rows is not None:
        e.table(["position", "source token", "id"], ex.source_rows, ex.source_note)
    elif ex.source_note:
        e.say(ex.source_note)
    if ex.source_rows is not None or ex.source_note:
        e.say("decoder input = BOS + target, decoder target = target + EOS: at each position the decoder has seen "
              "BOS and the target tokens before it, and must produce the next one (the last one is EOS). In a batch "
              "of several pairs, shorter targets are padded: the padded inputs are <pad>, their targets -100, and "
              "the loss skips them.")
    ours = _show(e, ex.tokenizer, ex.inputs, ex.targets, ex.logits, ex.loss, ex.loss_name)
    eps = ex.smoothing
    if eps and ex.smoothed_loss is not None:
        z = ex.logits.float()  # (T, V)
        counted = ex.targets != IGNORE  # (T,)
        uniform = (z.logsumexp(-1) - z.mean(-1))[counted].mean()  # mean over the vocabulary of −log p_v
        smoothed = (1 - eps) * ours + eps * uniform
        e.say(f"label smoothing ε = {eps}: the optimised loss is (1 − ε)·NLL + ε·mean_v(−log p_v) = "
              f"{ex.smoothed_loss.item():.4f}")
        e.check("(1 − ε)·mean CE + ε·mean over the vocabulary of −log p  ==  the smoothed loss", smoothed,
                ex.smoothed_loss)
    e.data.update(ex.data)
    return e


# ------------------------------------------------------------------------------------------------ shared
def _show(e: Explanation, tok, inputs: Tensor, targets: Tensor, logits: Tensor, loss: Tensor, what: str) -> Tensor:
    """The table (position, input, target, counts) and the loss recomputed from the logits over the counted
    positions; returns that mean. inputs, targets: (T,); logits: (T, V)."""
    z = logits.float()  # (T, V)
    counted = targets != IGNORE  # (T,)
    picked = targets.clamp(min=0)  # (T,) any id where the target is ignored
    ce = z.logsumexp(-1) - z.gather(1, picked[:, None]).squeeze(1)  # (T,) −log p(target) = logsumexp(z) − z_target
    ours = ce[counted].mean()
    rows = []
    for i, (x, y, c, nll) in enumerate(zip(inputs.tolist(), targets.tolist(), counted.tolist(), ce.tolist(),
                                           strict=True)):
        skipped = f"-100 ({token_label(tok, inputs[i + 1].item())})" if i + 1 < len(inputs) else "-100"
        rows.append([i, token_label(tok, x), token_label(tok, y) if c else skipped, "yes" if c else "no",
                     round(nll, 4) if c else ""])
    T, n = len(rows), int(counted.sum())
    first = max(0, min(T - WINDOW, int(counted.nonzero()[0, 0]) - 4)) if n else 0  # the window shows counted rows
    shown = rows[first : first + WINDOW]
    if T > WINDOW:
        e.say(f"(the example is {T} positions; the table shows positions {first}…{first + len(shown) - 1})")
    e.table(["position", "input token", "target token", "counts in loss", "−log p(target)"], shown,
            f"{n} of {T} positions count (-100: no loss there; the token it would have been in parentheses)")
    e.say(f"loss = mean over the {n} counted positions of −log p(target) = {ours.item():.4f} nats")
    e.check(f"mean cross-entropy over the counted positions, from the logits  ==  {what}", ours, loss)
    e.figure("loss-mask", "which positions count in the loss", _draw(rows, shown, first),
             {"inputs": [r[1] for r in rows], "targets": [r[2] for r in rows], "counts": [r[3] == "yes" for r in rows],
              "nll": [r[4] if r[4] != "" else None for r in rows]})
    e.data.update(inputs=inputs.tolist(), targets=targets.tolist(), counted=n, positions=T, loss_task=loss.item(),
                  loss_ours=ours.item())
    return ours


def _draw(rows: list, shown: list, first: int):
    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        xs = list(range(first, first + len(shown)))
        heights = [r[4] if r[4] != "" else 0.0 for r in shown]
        colours = ["tab:blue" if r[3] == "yes" else "lightgrey" for r in shown]
        ax.bar(xs, heights, color=colours)
        for x, r in zip(xs, shown, strict=True):
            if r[3] == "no":
                ax.text(x, 0, "–", ha="center", va="bottom", color="grey", fontsize=7)
        ax.set_xticks(xs, [r[1] for r in shown], rotation=90, fontsize=7)
        ax.set_xlabel("input token (grey: target skipped, -100)")
        ax.set_ylabel("−log p(target) (nats)")
        ax.set_title(f"{sum(r[3] == 'yes' for r in rows)} of {len(rows)} positions count in the loss", fontsize=9)
    return draw
