"""Topic `training-pairs`: one training example exactly as the run's task builds it — inputs, targets, loss mask.

Every task here trains by next-token prediction; what differs is what the model reads and which targets
count. A language model reads a block of text and predicts the same block shifted by one token, every
position counting. A chat model reads a conversation rendered with the chat template and is scored only on
the assistant's tokens (`qkv.data.chat_template`). A translation model reads the source in the encoder and,
in the decoder, BOS + target, predicting target + EOS (`qkv.data.translation.collate`). The example comes
from the run's own data where it is on disk, or from --text (and --src for a translation pair); it is
batched by the task's real functions, scored by the task's real loss, and that loss is recomputed as the
mean cross-entropy −log p(target) over the positions that count.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from qkv.errors import QKVError
from qkv.evaluation.attention import token_label
from qkv.explain.base import WINDOW, Explanation, Options, need, no_grad

LESSON = ("Training shows the model an input and, at every position, the token that should come next. The "
          "target sequence is the input shifted by one token, and the loss is the mean cross-entropy "
          "−log p(target) over the positions that count. What counts depends on the task: every position of "
          "a block of text; only the assistant's answer in a chat; only real target tokens (never padding) in "
          "a translation, whose decoder reads BOS + target and must produce target + EOS.")

IGNORE = -100  # the target the losses skip


@no_grad
def explain_training_pairs(run, opts: Options) -> Explanation:
    need(run, ("lm", "chat", "translate"), "training-pairs")
    e = Explanation("training-pairs", "one training example: inputs, targets, loss mask", run.path.name)
    e.say(LESSON)
    {"lm": _lm, "chat": _chat, "translate": _translate}[run.task](run, opts, e)
    return e


# ------------------------------------------------------------------------------------------------ lm
def _lm(run, opts: Options, e: Explanation) -> None:
    from qkv.data.text import full_pass_windows

    tok, model = run.tokenizer, run.model
    if opts.text is not None:
        tokens = np.asarray(tok.encode(opts.text), dtype=np.int64)
        e.say(f"example: --text {opts.text!r} ({len(tokens)} tokens)")
    else:
        tokens, where = _lm_tokens(run)
        e.say(f"example: the first block of the run's training tokens ({where}); --text gives your own")
    if len(tokens) < 2:
        raise QKVError("a training block needs at least 2 tokens (an input and the token after it)")
    block = min(model.config.max_seq_len, WINDOW, len(tokens) - 1)
    batch = next(full_pass_windows(tokens, block, 1))  # the validation windows: idx (1, T), targets (1, T)
    e.say(f"block of {block} tokens (the model's context is {model.config.max_seq_len}): input = tokens "
          f"0…{block - 1}, target = tokens 1…{block} — every position counts")
    logits, loss = model(batch["idx"], batch["targets"])  # what LMTask.loss computes
    _show(e, tok, batch["idx"][0], batch["targets"][0], logits[0], loss, "GPT(idx, targets) — LMTask.loss")


def _lm_tokens(run) -> tuple[np.ndarray, str]:
    from qkv.data.text import read_tokens
    from qkv.runs import DATA_DIR, DATA_META_FILE, TOKENS_FILES, load_json

    folder = run.path / DATA_DIR
    path = folder / TOKENS_FILES["train"]
    if not path.is_file() or not (folder / DATA_META_FILE).is_file():
        raise QKVError(f"{run.path.name} has no training tokens on disk ({path}); give a text with --text")
    return read_tokens(path, load_json(folder / DATA_META_FILE)["vocab_size"]), f"{DATA_DIR}/{path.name}"


# ------------------------------------------------------------------------------------------------ chat
def _chat(run, opts: Options, e: Explanation) -> None:
    from qkv.data.chat import collate_chat, encode_conversations
    from qkv.data.chat_template import chat_tokens, render, render_text
    from qkv.tasks.chat import chat_loss

    tok, model = run.tokenizer, run.model
    conv, where = _conversation(run, opts)
    e.say(f"example: {where}")
    answer_only = run.config.train.answer_only
    ids, mask = render(conv.messages, tok)
    e.say(f"rendered with the chat template ({len(ids)} tokens): {render_text(conv.messages)!r}")
    ex = encode_conversations([conv], tok, model.config.max_seq_len, answer_only=answer_only)
    batch = collate_chat(ex.inputs, ex.targets, chat_tokens(tok).end)  # the task's batch: idx, targets, mask
    e.say(f"input = the {len(ids)} ids minus the last, target = the ids minus the first; "
          + ("answer-only loss (this run's train.answer_only): targets outside assistant turns are -100, so only "
             "the answer's tokens and their <|end|> count" if answer_only else
             "this run trained with train.answer_only = false: every target counts (the ablation)"))
    logits, _ = model(batch["idx"])  # (1, T, V)
    loss, info = chat_loss(model, batch)  # the chat task's loss on this batch
    _show(e, tok, batch["idx"][0], batch["targets"][0], logits[0], loss, "chat_loss(model, batch) — ChatTask.loss")
    e.data.update(rendered=render_text(conv.messages), answer_tokens=info["answer_tokens"], answer_only=answer_only,
                  mask=mask)


def _conversation(run, opts: Options):
    """The conversation to show, and where it came from: --text (in the template's own form) or the run's data."""
    from qkv.data.chat import load_chat_splits
    from qkv.data.chat_template import SPECIAL_TOKENS, parse
    from qkv.data.conversations import conversation

    form = "<|user|>question<|end|><|assistant|>answer<|end|>"
    if opts.text is not None:
        if not any(t in opts.text for t in SPECIAL_TOKENS):
            raise QKVError(f"--text for a chat run is a whole conversation in the template's form: {form}")
        return conversation(parse(opts.text), "--text"), "--text (a conversation in the template's form)"
    try:
        train = load_chat_splits(run.config.data)["train"]
    except QKVError as err:
        raise QKVError(f"the run's chat data is not available ({err}); give a conversation with --text "
                       f"'{form}'") from None
    return train[0], (f"the first training conversation of the run's data ({train[0].where}); --text '{form}' "
                      "gives your own")


# ------------------------------------------------------------------------------------------------ translate
def _translate(run, opts: Options, e: Explanation) -> None:
    from qkv.data.translation import collate, encode_lines, make_examples, special_ids
    from qkv.tasks.translate import smoothed_loss

    model, src_tok, tgt_tok = run.model, run.src_tokenizer, run.tgt_tokenizer
    src_text, tgt_text, where = _pair(run, opts)
    e.say(f"example: {where}")
    e.say(f"source: {src_text!r}")
    e.say(f"target: {tgt_text!r}")
    pad, bos, eos = special_ids(tgt_tok)
    ex = make_examples(encode_lines(src_tok, [src_text]), encode_lines(tgt_tok, [tgt_text]),
                       model.config.max_seq_len, eos)
    if not ex.src:
        raise QKVError("a translation pair needs a non-empty source and target")
    if ex.truncated:
        e.say(f"(longer than the context: cut to {model.config.max_seq_len - 1} tokens + EOS, as in training)")
    batch = collate(ex.src, ex.tgt, pad, bos, eos)  # src, src_mask, tgt_in = BOS + target, tgt_out = target + EOS
    src_ids = batch["src"][0].tolist()
    e.table(["position", "source token", "id"], [[i, token_label(src_tok, t), t] for i, t in
                                                 enumerate(src_ids[:WINDOW])],
            f"encoder input: the source tokens + EOS ({len(src_ids)} tokens; the encoder sees them all at once)")
    e.say("decoder input = BOS + target, decoder target = target + EOS: at each position the decoder has seen "
          "BOS and the target tokens before it, and must produce the next one (the last one is EOS). In a batch "
          "of several pairs, shorter targets are padded: the padded inputs are <pad>, their targets -100, and "
          "the loss skips them.")
    eps = run.config.train.label_smoothing
    logits = model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits  # (1, T, V), as TranslateTask.loss
    loss, nll, n = smoothed_loss(logits, batch["tgt_out"], eps)  # the task's loss
    ours = _show(e, tgt_tok, batch["tgt_in"][0], batch["tgt_out"][0], logits[0], nll,
                 "the NLL of smoothed_loss(logits, tgt_out, ε) — TranslateTask.loss")
    if eps:
        z = logits[0].float()  # (T, V)
        counted = batch["tgt_out"][0] != IGNORE  # (T,)
        uniform = (z.logsumexp(-1) - z.mean(-1))[counted].mean()  # mean over the vocabulary of −log p_v
        smoothed = (1 - eps) * ours + eps * uniform
        e.say(f"label smoothing ε = {eps}: the optimised loss is (1 − ε)·NLL + ε·mean_v(−log p_v) = {loss.item():.4f}")
        e.check("(1 − ε)·mean CE + ε·mean over the vocabulary of −log p  ==  the smoothed loss", smoothed, loss)
    e.data.update(source=src_text, target=tgt_text, source_ids=src_ids, label_smoothing=eps, smoothed_loss=loss)


def _pair(run, opts: Options) -> tuple[str, str, str]:
    """(source, target, where it came from): --src with --text, or the run's first training pair."""
    from qkv.data.translation import load_split

    if (opts.src is None) != (opts.text is None):
        raise QKVError("a translation pair needs both sides: --src SOURCE and --text TARGET")
    if opts.src is not None:
        if not opts.src.strip() or not opts.text.strip():
            raise QKVError("a translation pair needs a non-empty source and target")
        return opts.src.strip(), opts.text.strip(), "--src and --text"
    d = run.config.data
    try:
        if d.src is None:  # a named dataset: only a copy already on this machine, never a download
            from qkv.data.registry import resolve

            resolve(d.dataset, download=False)
        srcs, tgts, name = load_split(d, "train")
    except QKVError as err:
        raise QKVError(f"the run's training pairs are not available ({err}); give a pair with --src SOURCE "
                       "--text TARGET") from None
    return srcs[0], tgts[0], f"the first training pair of the run's data ({name}); --src and --text give your own"


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
