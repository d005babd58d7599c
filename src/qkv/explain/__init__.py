"""Explain mode: each concept of the transformer lesson shown on a trained run's real tensors (`qkv explain`).

    from qkv.explain import TOPICS, explain
    e = explain("qkv", qkv.load_run("runs/shakespeare"), text="ROMEO: hi", layer=0, head=1)
    print(e.format_text()); e.to_json(); e.write_pngs("out/")

`TOPICS` lists the topics in lesson order: name -> `Topic` (what it shows in one line, "module:function" under
qkv.explain, and what a run must be able to do for it: `qkv.tasks.capabilities`). That is the one place that says
where a topic applies: `applies(topic, run)` reads it for the CLI, the web page and the tests, and a topic asked
of a run it does not apply to is a one-line error naming the capability it needs. Each topic is one module here
and returns a `qkv.explain.base.Explanation`: a paragraph, the tensors with their shapes and a few numbers, the
checks that recompute a module's output from the printed parts, and figures drawn only when asked for. A topic's
module is imported when the topic is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from qkv.errors import QKVError
from qkv.explain.base import Explanation, Options
from qkv.tasks.capabilities import DOES, Capability

C = Capability


@dataclass(frozen=True)
class Topic:
    line: str  # what it shows, in one line
    target: str  # "module:function" under qkv.explain
    needs: tuple[Capability, ...]  # a run must be able to do one of these (any)


TOPICS: dict[str, Topic] = {
    "tokens": Topic("text -> tokens -> integer ids; the vocabulary; an unknown character", "tokens:explain_tokens",
                    (C.TOKENS,)),
    "embeddings": Topic("ids -> rows of the embedding table; nearest neighbours; why it is V × d",
                        "embeddings:explain_embeddings", (C.TOKEN_INPUT,)),
    "positions": Topic("the positional signal added to each row; one token at two positions",
                       "positions:explain_positions", (C.TOKEN_INPUT,)),
    "qkv": Topic("one head step by step: Q = XW_Q, K, V, QKᵀ/√d_k, mask, softmax, × V — recomputed", "qkv:explain_qkv",
                 (C.TOKEN_INPUT, C.SOURCE_TO_TEXT)),
    "heads": Topic("every head of a layer; concatenated heads through W_O vs one head alone", "heads:explain_heads",
                   (C.TOKEN_INPUT, C.SOURCE_TO_TEXT)),
    "self-vs-cross": Topic("one attention module as self-attention and as cross-attention: where Q, K, V come from",
                           "self_vs_cross:explain_self_vs_cross", (C.CONTINUATION, C.SOURCE_TO_TEXT)),
    "decoder-only-vs-encoder-decoder": Topic("which token sees which: causal mask, padding mask, cross-attention",
                                             "masks:explain_masks", (C.CONTINUATION, C.SOURCE_TO_TEXT)),
    "output": Topic("last hidden state -> logits -> softmax; temperature, top-k, top-p", "output:explain_output",
                    (C.CONTINUATION, C.SOURCE_TO_TEXT)),
    "encoder-states": Topic("the encoder's outputs for one source, its cross-attention K/V, then dropped",
                            "encoder_states:explain_encoder_states", (C.SOURCE_TO_TEXT,)),
    "training-pairs": Topic("one training example as the task builds it: inputs, targets, loss mask",
                            "training_pairs:explain_training_pairs", (C.TRAINING_EXAMPLES,)),
    "parameters": Topic("this run's parameter table, then GPT-3's; the '500,000 × 1024' embedding claim checked",
                        "parameters:explain_parameters", (C.PARAMETERS,)),
    "alignment": Topic("each produced word's cross-attention over the source words", "alignment:explain_alignment",
                       (C.TEXT_SOURCE,)),
    "diffusion": Topic("forward process q(x_t | x_0), one reverse step written out, the reverse chain",
                       "diffusion:explain_diffusion", (C.IMAGES,)),
    "evaluation": Topic("cross-entropy, perplexity, sentence and corpus BLEU, chrF++ on a few references",
                        "evaluation:explain_evaluation", (C.SOURCE_TO_TEXT,)),
}


def applies(topic: str, run) -> bool:
    """Whether `topic` can be shown on `run`: the run can do one of what the topic needs."""
    return any(c in run.capabilities for c in TOPICS[topic].needs)


def topics_for(run) -> list[str]:
    """The topics that apply to `run`, in lesson order."""
    return [name for name in TOPICS if applies(name, run)]


def explain(topic: str, run, **options) -> Explanation:
    """The Explanation of `topic` on a loaded run (`qkv.load_run`); options are `Options` fields. A topic that
    does not apply to the run is a one-line QKVError naming what it needs."""
    if topic not in TOPICS:
        raise QKVError(f"unknown topic {topic!r}; the topics are: {', '.join(TOPICS)}")
    if not applies(topic, run):
        needs = " or ".join(f"{DOES[c]} ({c})" for c in TOPICS[topic].needs)
        raise QKVError(f"explain {topic} needs a run that {needs}; {run.path.name} is {run.describe()}")
    module, function = TOPICS[topic].target.split(":")
    return getattr(importlib.import_module(f"qkv.explain.{module}"), function)(run, Options(**options))


__all__ = ["TOPICS", "Explanation", "Options", "Topic", "applies", "explain", "topics_for"]
