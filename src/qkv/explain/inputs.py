"""The input a topic reads: the user's text (or source, or prompt), else a default taken from the run itself."""

from __future__ import annotations

from qkv.errors import QKVError
from qkv.explain.base import Options
from qkv.tasks.base import a_

DEFAULT_SOURCE = "Ein Mann fährt Fahrrad."
LESSON_TEXT = "ROMEO: But soft, what light"


def tokenizer_of(run):
    """The run's (input-side) tokenizer and which side it is."""
    if run.task == "translate":
        return run.src_tokenizer, "source"
    if getattr(run, "tokenizer", None) is not None:
        return run.tokenizer, "text" if run.task in ("lm", "chat") else "prompt"
    raise QKVError(f"{run.path.name} is {a_(run.task)} run without a tokenizer: this needs an lm, chat, translate "
                   "or text-conditioned diffusion run")


def default_text(run, opts: Options) -> str:
    """--text (GPT runs) or --src (translation runs), else the run's own sample prompt or a stock sentence."""
    given = {"translate": opts.src, "diffusion": opts.prompt}.get(run.task, opts.text)
    if given is None:
        given = next((g for g in (opts.text, opts.src, opts.prompt) if g is not None), None)
    if given is not None:
        if not given:
            raise QKVError("the text is empty")
        return given
    if run.task == "translate":
        return DEFAULT_SOURCE
    if run.task == "diffusion":
        return "a red circle"
    prompt = getattr(getattr(run.config, "sample", None), "prompt", "") or ""
    # the first candidate the run's tokenizer can encode: its own prompt when it is long enough to show something,
    # the lesson's line, its prompt of any length; else the lesson's line, and the tokenizer says what it lacks
    candidates = [c for c in (prompt if len(prompt) >= 4 else "", LESSON_TEXT, prompt) if c]
    for c in candidates:
        try:
            run.tokenizer.encode(c)
            return c
        except QKVError:
            continue
    return LESSON_TEXT
