"""Explain mode: each concept of the transformer lesson shown on a trained run's real tensors (`qkv explain`).

    from qkv.explain import TOPICS, explain
    e = explain("qkv", qkv.load_run("runs/shakespeare"), text="ROMEO: hi", layer=0, head=1)
    print(e.format_text()); e.to_json(); e.write_pngs("out/")

`TOPICS` lists the topics in lesson order: name -> `Topic` (what it shows in one line, "module:function" under
qkv.explain, what a run must be able to do for it: `qkv.tasks.capabilities`, and of a run that turns a source into
text, which sources it reads (`run.source_kind`), whether it needs the decoder's cross-attention (a CTC head has
none) and whether it takes a source given by the user). That is the one place that says where a topic applies:
`applies(topic, run)` and `missing(topic, run)` read it for the CLI, the web page and the tests, and a topic asked
of a run it does not apply to is a one-line error naming what it needs. Each topic is one module here
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
    # of a run that turns a source into text (source-to-text):
    sources: tuple[str, ...] | None = None  # the source kinds it reads (`run.source_kind`); None: any
    decoder: bool = False  # it reads the decoder and its cross-attention (a CTC speech head has no decoder)
    takes_source: bool = False  # it reads one source the user gives (src, image or audio), else the run's example


# what a run that lacks a topic's source kind or decoder would need, in words (the one-line errors say it)
SOURCE_KINDS = {"text": "reads its source as text (translation)", "image": "reads images (captioning)",
                "audio": "reads recordings (speech recognition)"}
DECODER = "writes text with a decoder that reads the source through cross-attention (a CTC head has none)"


TOPICS: dict[str, Topic] = {
    "tokens": Topic("text -> tokens -> integer ids; the vocabulary; an unknown character", "tokens:explain_tokens",
                    (C.TOKENS,)),
    "embeddings": Topic("ids -> rows of the embedding table; nearest neighbours; why it is V × d",
                        "embeddings:explain_embeddings", (C.TOKEN_INPUT,)),
    "positions": Topic("the positional signal added to each row; one token at two positions",
                       "positions:explain_positions", (C.TOKEN_INPUT,)),
    "audio": Topic("a recording -> STFT -> mel filters -> log-mel -> conv stem -> encoder states; where a letter "
                   "listened", "audio:explain_audio", (C.SOURCE_TO_TEXT,), sources=("audio",), takes_source=True),
    "qkv": Topic("one head step by step: Q = XW_Q, K, V, QKᵀ/√d_k, mask, softmax, × V — recomputed", "qkv:explain_qkv",
                 (C.TOKEN_INPUT, C.SOURCE_TO_TEXT), takes_source=True),
    "heads": Topic("every head of a layer; concatenated heads through W_O vs one head alone", "heads:explain_heads",
                   (C.TOKEN_INPUT, C.SOURCE_TO_TEXT), takes_source=True),
    "self-vs-cross": Topic("one attention module as self-attention and as cross-attention: where Q, K, V come from",
                           "self_vs_cross:explain_self_vs_cross", (C.CONTINUATION, C.SOURCE_TO_TEXT), decoder=True,
                           takes_source=True),
    "decoder-only-vs-encoder-decoder": Topic("which token sees which: causal mask, padding mask, cross-attention",
                                             "masks:explain_masks", (C.CONTINUATION, C.SOURCE_TO_TEXT), decoder=True,
                                             takes_source=True),
    "output": Topic("last hidden state -> logits -> softmax; temperature, top-k, top-p", "output:explain_output",
                    (C.CONTINUATION, C.SOURCE_TO_TEXT), decoder=True, takes_source=True),
    "encoder-states": Topic("the encoder's outputs for one source, its cross-attention K/V, then dropped",
                            "encoder_states:explain_encoder_states", (C.SOURCE_TO_TEXT,), decoder=True,
                            takes_source=True),
    "spans": Topic("where an answer comes from: the span head's start/end logits recomputed, the decoder's "
                   "cross-attention over the passage", "spans:explain_spans", (C.SPANS,), decoder=True,
                   takes_source=True),
    "training-pairs": Topic("one training example as the task builds it: inputs, targets, loss mask",
                            "training_pairs:explain_training_pairs", (C.TRAINING_EXAMPLES,)),
    "parameters": Topic("this run's parameter table, then GPT-3's; the '500,000 × 1024' embedding claim checked",
                        "parameters:explain_parameters", (C.PARAMETERS,)),
    "alignment": Topic("each produced word's cross-attention over the source words", "alignment:explain_alignment",
                       (C.TEXT_SOURCE,), decoder=True, takes_source=True),
    "diffusion": Topic("forward process q(x_t | x_0), one reverse step written out, the reverse chain",
                       "diffusion:explain_diffusion", (C.IMAGES,)),
    "evaluation": Topic("cross-entropy, perplexity, sentence and corpus BLEU, chrF++ on a few references",
                        "evaluation:explain_evaluation", (C.SOURCE_TO_TEXT,), decoder=True),
}


def missing(topic: str, run, codes: bool = True) -> str | None:
    """What `run` lacks for `topic`, in words ("turns a source into text (...) (source-to-text)"; `codes`: with the
    capabilities' names); None when the topic applies: the run can do one of what the topic needs and, if it turns
    a source into text, reads a source kind the topic reads and has the decoder the topic reads."""
    t = TOPICS[topic]
    if not any(c in run.capabilities for c in t.needs):
        if t.sources is not None:  # a topic of one source kind: say that kind
            return " or ".join(SOURCE_KINDS[k] for k in t.sources)
        return " or ".join(DOES[c] + (f" ({c})" if codes else "") for c in t.needs)
    if C.SOURCE_TO_TEXT in run.capabilities:
        if t.sources is not None and run.source_kind not in t.sources:
            return " or ".join(SOURCE_KINDS[k] for k in t.sources)
        if t.decoder and not has_decoder(run):
            return DECODER
    return None


def applies(topic: str, run) -> bool:
    """Whether `topic` can be shown on `run` (`missing` says what it lacks otherwise)."""
    return missing(topic, run) is None


def has_decoder(run) -> bool:
    """Whether a source-to-text run writes its text with decoder layers (cross-attention over the memory); a CTC
    speech head reads its text off the encoder states and has none (`EncoderDecoder.decoder` is empty)."""
    return len(run.model.decoder) > 0


def topics_for(run) -> list[str]:
    """The topics that apply to `run`, in lesson order."""
    return [name for name in TOPICS if applies(name, run)]


def explain(topic: str, run, **options) -> Explanation:
    """The Explanation of `topic` on a loaded run (`qkv.load_run`); options are `Options` fields. A topic that
    does not apply to the run is a one-line QKVError naming what it needs."""
    if topic not in TOPICS:
        raise QKVError(f"unknown topic {topic!r}; the topics are: {', '.join(TOPICS)}")
    needs = missing(topic, run)
    if needs is not None:
        raise QKVError(f"explain {topic} needs a run that {needs}; {run.path.name} is {run.describe()}")
    if options.get("audio") is not None:
        check_audio(topic, run)
    module, function = TOPICS[topic].target.split(":")
    return getattr(importlib.import_module(f"qkv.explain.{module}"), function)(run, Options(**options))


def check_audio(topic: str, run) -> None:
    """A recording goes to a run that reads recordings, and to a topic that reads a source: else a one-line error."""
    if C.SOURCE_TO_TEXT not in run.capabilities or run.source_kind != "audio":
        raise QKVError(f"audio (a recording) is for a run that {SOURCE_KINDS['audio']}; {run.path.name} is "
                       f"{run.describe()}", argument="audio")
    if not TOPICS[topic].takes_source:
        takers = [name for name, t in TOPICS.items() if t.takes_source and applies(name, run)]
        raise QKVError(f"explain {topic} reads no recording; audio goes to {', '.join(takers)}", argument="audio")


__all__ = ["TOPICS", "Explanation", "Options", "Topic", "applies", "check_audio", "explain", "has_decoder", "missing",
           "topics_for"]
