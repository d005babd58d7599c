"""What a run can do: the capabilities that the layers above `qkv.tasks` ask for, each a small written protocol.

    from qkv.tasks.capabilities import Capability, can, require
    if can(run, Capability.CHAT):
        session = run.chat(temperature=0)
    require(run, Capability.SOURCE_TO_TEXT, "translating")   # else a one-line QKVError naming the capability

The CLI commands, the playground's pages, the explain topics and the human-evaluation candidate makers are
chosen from these, never from a task's name: a new task declares what it can do (`Run.capabilities`) and gets
every command, page and topic that fits. A run declares them per instance (a class-conditional diffusion run
reads no text, a text-conditional one does), and `tests/unit/tasks/test_capabilities.py` checks that each run
kind offers the calls of every capability it declares.

    capability         the run offers (its protocol)                                  lm chat tr cap sp dif ae
    continuation       TextContinuation: sampling, token_stream, stream, generate      ✓  ✓
    chat               Chat: chat() -> a session                                          ✓
    source-to-text     SourceToText: a source (text, image or audio) -> text, n-best,          ✓  ✓  ✓
                       cross-attention, reference pairs, teacher-forced batches
    text-source        the source of source-to-text is text (words to align)                  ✓
    spans              Spans: a span head's start/end scores over a "question ; passage"      (qa)
                       source, and the best span (extractive question answering)
    code               Programs: complete a function, run its hidden tests in the sandbox   (code, code-gpt)
    images             ImageGeneration: sample, the reverse and forward processes                        ✓
    tokens             Tokenized: a tokenizer between text and ids                      ✓  ✓   ✓  ✓  ✓  text
    token-input        TokenInput: the token table, positions and self-attention        ✓  ✓   ✓
                       layers that read a text (a TextInput)
    self-attention     SelfAttentionMaps: every layer and head over a text              ✓  ✓   ✓
    training-examples  TrainingExamples: one example as the task trains on it           ✓  ✓   ✓  ✓
    parameters         Parameters: the parameter table                                  ✓  ✓   ✓  ✓  ✓   ✓  ✓
    evaluation         Evaluates: evaluate(**options) and its report                    ✓  ✓   ✓  ✓  ✓   ✓  ✓

A model behind `continuation` is a decoder-only transformer (`DecoderOnly`: tok_emb, blocks, norm_f, lm_head,
hidden_states, attention_maps); one behind `source-to-text` an encoder–decoder (`EncoderDecoder`: encode,
decode, encoder, decoder, enc_norm, dec_norm, tgt_emb, lm_head, attention_maps, new_cache). Explain reads their
modules through these names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from qkv.errors import QKVError


class Capability(str, Enum):
    CONTINUATION = "continuation"
    CHAT = "chat"
    SOURCE_TO_TEXT = "source-to-text"
    TEXT_SOURCE = "text-source"
    SPANS = "spans"
    CODE = "code"
    IMAGES = "images"
    TOKENS = "tokens"
    TOKEN_INPUT = "token-input"
    SELF_ATTENTION = "self-attention"
    TRAINING_EXAMPLES = "training-examples"
    PARAMETERS = "parameters"
    EVALUATION = "evaluation"

    def __str__(self) -> str:
        return self.value


# what each capability lets a run do, in words: the one-line errors say it
DOES = {
    Capability.CONTINUATION: "continues a text (a language model)",
    Capability.CHAT: "chats (a chat model)",
    Capability.SOURCE_TO_TEXT: "turns a source into text (an encoder–decoder: translation, captioning, speech "
                               "recognition)",
    Capability.TEXT_SOURCE: "reads its source as text (translation)",
    Capability.SPANS: "points at its answer in the passage (a span head: extractive question answering)",
    Capability.CODE: "writes code that is judged by running tests (code generation)",
    Capability.IMAGES: "makes images (diffusion)",
    Capability.TOKENS: "reads or writes text through a tokenizer",
    Capability.TOKEN_INPUT: "reads a text through a token table and self-attention (a GPT, a translation encoder)",
    Capability.SELF_ATTENTION: "shows the self-attention over a text",
    Capability.TRAINING_EXAMPLES: "shows a training example as its task builds it",
    Capability.PARAMETERS: "has a parameter table",
    Capability.EVALUATION: "evaluates itself",
}


def can(run, *capabilities: Capability) -> bool:
    """Whether `run` declares every capability given."""
    return all(c in run.capabilities for c in capabilities)


def require(run, capability: Capability, what: str) -> None:
    """A one-line QKVError unless `run` declares `capability`: "<what> needs a run that <does>; <run> is ..."."""
    if capability not in run.capabilities:
        raise Unsupported(f"{what} needs a run that {DOES[capability]} ({capability}); {run.path.name} is "
                          f"{run.describe()}")


class Unsupported(QKVError, AttributeError):
    """A call the run does not offer: a one-line user error, and an AttributeError, so ``hasattr`` is False."""


# ------------------------------------------------------------------------------------------------ the protocols
@runtime_checkable
class TextContinuation(Protocol):
    """continuation: text after a prompt, token by token (`qkv.generation.lm.TokenStream`), or whole."""

    tokenizer: Any
    model: nn.Module

    def sampling(self, **changes) -> Any: ...  # the run's [sample] settings with changes on top

    def token_stream(self, prompt: str | None = None, sampling: Any = None, **kwargs) -> Any: ...

    def stream(self, prompt: str | None = None, sampling: Any = None, **kwargs) -> Iterator[str]: ...

    def generate(self, prompt: str | None = None, sampling: Any = None, **kwargs) -> str: ...


@runtime_checkable
class Chat(Protocol):
    """chat: a session that keeps the history (`qkv.generation.chat.ChatSession`)."""

    def chat(self, sampling: Any = None, **changes) -> Any: ...

    def example_questions(self, n: int) -> tuple[list[tuple[str, str | None]], str]: ...  # ([(question, ref)], where)


@dataclass
class SourceBatch:
    """Sources as the encoder reads them: src (B, S) ids, (B, C, H, W) images or (B, M, F) log-mel frames, the
    memory mask (B, S) (None: every position real), and one label per memory position of each row (tokens,
    patches, or encoder states' times)."""

    src: Tensor
    src_mask: Tensor | None
    labels: list[list[str]]
    cut: int = 0  # sources cut to the context


@runtime_checkable
class SourceToText(Protocol):
    """source-to-text: an encoder–decoder that writes text about a source (a sentence, an image).

    `source_kind` is "text", "image" or "audio"; a source is a string; or an image file's path or bytes, or an
    image tensor (C, H, W) in [-1, 1]; or a WAV file's path or bytes, or a waveform (N,) at 16 kHz in [-1, 1]."""

    source_kind: str
    target_tokenizer: Any
    model: nn.Module

    def decoding(self, **changes) -> Any: ...  # the run's [decode] settings with changes on top

    def read_source(self, source: Any) -> tuple[Any, str]: ...  # (the source ready to use, a note such as a resize)

    def to_text(self, sources: Sequence[Any], decoding: Any = None, **changes) -> list[str]: ...

    def n_best(self, source: Any, decoding: Any = None, n: int = 5) -> list[dict]: ...

    def source_batch(self, sources: Sequence[Any]) -> SourceBatch: ...

    def cross_attention(self, source: Any, decoding: Any = None) -> Any: ...  # an AttentionStack

    def example_sources(self, n: int = 1) -> list[Any]: ...

    def reference_pairs(self, n: int | None = None) -> tuple[list[Any], list[str], str]: ...

    def dataset_pairs(self, data: str, split: str | None = None) -> tuple[list[Any], list[str], str]: ...

    def pair_batch(self, sources: Sequence[Any], targets: Sequence[str]) -> dict: ...

    def reference_loss(self, sources: Sequence[Any], targets: Sequence[str]) -> tuple[float, int]: ...


@dataclass
class SpanScores:
    """A span head's reading of one source: per position (S,) a start and an end logit, where a span may lie
    (the passage), the best span start..end (inclusive positions) with its score, and its text."""

    source: str
    labels: list[str]  # one per position: the tokens read, EOS last
    start_logits: Tensor  # (S,)
    end_logits: Tensor  # (S,)
    allowed: Tensor  # (S,) bool
    start: int
    end: int
    score: float  # start_logits[start] + end_logits[end]
    answer: str


@runtime_checkable
class Spans(Protocol):
    """spans: the extractive head's `SpanScores` of ``question ; passage`` sources, and answers by either head."""

    def spans(self, sources: Sequence[str]) -> list[SpanScores]: ...

    def answer(self, questions: Sequence[str], passages: Sequence[str], head: str = "generative", decoding: Any = None,
               **changes) -> tuple[list[str], list[str]]: ...


@runtime_checkable
class Programs(Protocol):
    """code: complete a function from its signature and docstring, and run a completion's hidden tests in the
    sandbox (`qkv.evaluation.sandbox`); `architecture` is "encoder-decoder" or "decoder-only"."""

    architecture: str

    def complete(self, prompts: Sequence[str], n: int = 1, temperature: float | None = None,
                 max_new_tokens: int | None = None, seed: int | None = None) -> list[list[str]]: ...

    def problems(self, split: str = "compositions") -> Sequence[Any]: ...  # `qkv.data.programs.Problem`s

    def example_problem(self) -> Any: ...

    def run_tests(self, problem: Any, completion: str) -> Any: ...  # the sandbox's Outcome


@runtime_checkable
class ImageGeneration(Protocol):
    """images: sample images, watch the reverse process, noise a real image (the forward process)."""

    def image_sampling(self, **changes) -> Any: ...

    def condition(self, n: int, label: int | None = None, prompt: str | None = None) -> tuple[dict, dict]: ...

    def sample(self, n: int | None = None, label: int | None = None, prompt: str | None = None,
               settings: Any = None, **changes) -> Tensor: ...

    def reverse_process(self, label: int | None = None, prompt: str | None = None, settings: Any = None,
                        frames: int = 8, n: int = 1, **changes) -> dict: ...

    def forward_process(self, ts: list[int], index: int | None = None, seed: int = 0) -> dict: ...


@runtime_checkable
class Tokenized(Protocol):
    """tokens: the tokenizer between the run's text and ids, which side of the model it serves, an example."""

    def text_tokenizer(self) -> tuple[Any, str]: ...  # (tokenizer, "text" | "source" | "caption" | "prompt")

    def example_text(self) -> str: ...


@dataclass
class TextInput:
    """Where a run reads a text: its token table, its positions and the self-attention layers over it.

    `forward(ids)` runs the model over one text's ids (the hidden states a GPT computes, a translation
    encoder's memory); `maps(ids)` gives the model's own attention weights of `layers`, one (1, H, T, T) per
    layer. `prepare(text, limit)` turns a text into the ids it reads (a translation source gets its EOS) and
    says how many tokens it cut."""

    side: str  # "text" or "source"
    tokenizer: Any
    table_name: str  # "tok_emb" or "src_emb"
    table: nn.Embedding  # (V, d)
    scale: float  # the rows are multiplied by this before positions are added (√d in a translation encoder)
    pos_kind: str  # "learned", "sinusoidal", "rope" or "none"
    pos_emb: nn.Module | None
    drop: nn.Dropout  # between the embedding step and the first layer
    layers: nn.ModuleList  # blocks with .attn
    layers_name: str  # "blocks" or "encoder"
    where: str  # "layer" or "encoder layer"
    causal: bool
    prepare: Callable[[str, int], tuple[list[int], int]]
    forward: Callable[[list[int]], Any]
    maps: Callable[[list[int]], list[Tensor]]
    config: Any = None  # the model's config (rope settings, head_dim, max_seq_len)
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class TokenInput(Protocol):
    """token-input: the `TextInput` that explain's embedding, position and attention topics read."""

    def text_input(self) -> TextInput: ...


@runtime_checkable
class SelfAttentionMaps(Protocol):
    """self-attention: every layer's and head's self-attention over a text (an AttentionStack)."""

    def self_attention(self, text: str) -> Any: ...


@dataclass
class TrainingExample:
    """One training example as the run's task builds and scores it: what the model reads and predicts.

    `inputs`/`targets` (T,) are the ids the (decoder's) loss compares position by position, -100 where a target
    does not count; `logits` (T, V) the model's, from the task's own forward; `loss` the task's own NLL over the
    counted positions, `loss_name` what computed it. `source_rows` (position, token, id) for an encoder's input
    when the task has one; `smoothing` ε and `smoothed_loss` when the optimised loss is label-smoothed."""

    where: str
    lines: list[str]
    tokenizer: Any
    inputs: Tensor
    targets: Tensor
    logits: Tensor
    loss: Tensor
    loss_name: str
    source_rows: list[list] | None = None
    source_note: str = ""
    smoothing: float = 0.0
    smoothed_loss: Tensor | None = None
    data: dict = field(default_factory=dict)


@runtime_checkable
class TrainingExamples(Protocol):
    """training-examples: one example from the run's data (or given by the caller)."""

    def training_example(self, text: str | None = None, src: str | None = None) -> TrainingExample: ...


@runtime_checkable
class Parameters(Protocol):
    """parameters: the run's parameter table (`qkv.evaluation.params`): a GPT's report with FLOPs and memory,
    else the modules with their layer numbers folded."""

    model: nn.Module

    def parameter_table(self) -> Any: ...  # .format_text(), .to_json()


@runtime_checkable
class Evaluates(Protocol):
    """evaluation: `evaluate(**options)` -> a dict of figures, and `report(result)` -> the lines `qkv eval` prints."""

    def evaluate(self, **options) -> dict: ...

    def report(self, result: dict) -> str: ...


PROTOCOLS: dict[Capability, type] = {
    Capability.CONTINUATION: TextContinuation,
    Capability.CHAT: Chat,
    Capability.SOURCE_TO_TEXT: SourceToText,
    Capability.TEXT_SOURCE: SourceToText,
    Capability.SPANS: Spans,
    Capability.CODE: Programs,
    Capability.IMAGES: ImageGeneration,
    Capability.TOKENS: Tokenized,
    Capability.TOKEN_INPUT: TokenInput,
    Capability.SELF_ATTENTION: SelfAttentionMaps,
    Capability.TRAINING_EXAMPLES: TrainingExamples,
    Capability.PARAMETERS: Parameters,
    Capability.EVALUATION: Evaluates,
}
