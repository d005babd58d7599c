"""Explain mode: each concept of the transformer lesson shown on a trained run's real tensors (`qkv explain`).

    from qkv.explain import TOPICS, explain
    e = explain("qkv", qkv.load_run("runs/shakespeare"), text="ROMEO: hi", layer=0, head=1)
    print(e.format_text()); e.to_json(); e.write_pngs("out/")

`TOPICS` lists the topics in lesson order: name -> `Topic` (what it shows in one line, "module:function" under
qkv.explain, the run tasks it applies to). Each topic is one module here and returns a
`qkv.explain.base.Explanation`: a paragraph, the tensors with their shapes and a few numbers, the checks that
recompute a module's output from the printed parts, and figures drawn only when asked for. A topic's module is
imported when the topic is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from qkv.errors import QKVError
from qkv.explain.base import Explanation, Options

SEQ2SEQ, TEXT = ("translate",), ("lm", "chat", "translate")


@dataclass(frozen=True)
class Topic:
    line: str  # what it shows, in one line
    target: str  # "module:function" under qkv.explain
    kinds: tuple[str, ...]  # the run tasks it applies to


TOPICS: dict[str, Topic] = {
    "tokens": Topic("text -> tokens -> integer ids; the vocabulary; an unknown character", "tokens:explain_tokens",
                    TEXT),
    "embeddings": Topic("ids -> rows of the embedding table; nearest neighbours; why it is V × d",
                        "embeddings:explain_embeddings", TEXT),
    "positions": Topic("the positional signal added to each row; one token at two positions",
                       "positions:explain_positions", TEXT),
    "qkv": Topic("one head step by step: Q = XW_Q, K, V, QKᵀ/√d_k, mask, softmax, × V — recomputed", "qkv:explain_qkv",
                 TEXT),
    "heads": Topic("every head of a layer; concatenated heads through W_O vs one head alone", "heads:explain_heads",
                   TEXT),
    "self-vs-cross": Topic("one attention module as self-attention and as cross-attention: where Q, K, V come from",
                           "self_vs_cross:explain_self_vs_cross", TEXT),
    "decoder-only-vs-encoder-decoder": Topic("which token sees which: causal mask, padding mask, cross-attention",
                                             "masks:explain_masks", TEXT),
    "output": Topic("last hidden state -> logits -> softmax; temperature, top-k, top-p", "output:explain_output", TEXT),
    "encoder-states": Topic("the encoder's outputs for one sentence, its cross-attention K/V, then dropped",
                            "encoder_states:explain_encoder_states", SEQ2SEQ),
    "training-pairs": Topic("a chat and a translation example as trained: inputs, targets, loss mask",
                            "training_pairs:explain_training_pairs", TEXT),
    "parameters": Topic("this run's parameter table, then GPT-3's; the '500,000 × 1024' embedding claim checked",
                        "parameters:explain_parameters", (*TEXT, "diffusion", "autoencoder")),
    "alignment": Topic("each produced word's cross-attention over the source words", "alignment:explain_alignment",
                       SEQ2SEQ),
    "diffusion": Topic("forward process q(x_t | x_0), one reverse step written out, the reverse chain",
                       "diffusion:explain_diffusion", ("diffusion",)),
    "evaluation": Topic("cross-entropy, perplexity, sentence and corpus BLEU, chrF++ on a few sentences",
                        "evaluation:explain_evaluation", SEQ2SEQ),
}


def explain(topic: str, run, **options) -> Explanation:
    """The Explanation of `topic` on a loaded run (`qkv.load_run`); options are `Options` fields."""
    if topic not in TOPICS:
        raise QKVError(f"unknown topic {topic!r}; the topics are: {', '.join(TOPICS)}")
    module, function = TOPICS[topic].target.split(":")
    return getattr(importlib.import_module(f"qkv.explain.{module}"), function)(run, Options(**options))


__all__ = ["TOPICS", "Explanation", "Options", "Topic", "explain"]
