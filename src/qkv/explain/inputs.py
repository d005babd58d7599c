"""The input a topic reads: what the user gave (a text, a source sentence or image, a prompt), else an example that
the run itself offers (its sample prompt, a validation source, a training caption)."""

from __future__ import annotations

from qkv.errors import QKVError
from qkv.explain.base import Options

# which option a run's text side reads (`Tokenized.text_tokenizer`'s side)
_OPTION = {"source": "src", "prompt": "prompt", "text": "text", "caption": "text"}


def tokenizer_of(run):
    """The run's (input-side) tokenizer and which side of the model it serves."""
    return run.text_tokenizer()


def default_text(run, opts: Options) -> str:
    """The text of the run's text side: the option that side reads (src for a source, prompt for a diffusion
    prompt, else text), any other text option given, else the run's own example."""
    given = getattr(opts, _OPTION[tokenizer_of(run)[1]])
    if given is None:
        given = next((g for g in (opts.text, opts.src, opts.prompt) if g is not None), None)
    if given is None:
        return run.example_text()
    if not given:
        raise QKVError("the text is empty")
    return given


def source_of(run, opts: Options):
    """The source an encoder–decoder topic reads: src (a run whose source is text) or image (one whose source is
    images), else the run's first example source."""
    given = opts.src if run.source_kind == "text" else opts.image
    if given is None:
        other = opts.image if run.source_kind == "text" else opts.src
        if other is not None:
            raise QKVError(f"{run.path.name} reads {run.source_kind} sources: give "
                           f"{'src, a sentence' if run.source_kind == 'text' else 'image, an image file'}",
                           argument="src" if run.source_kind == "text" else "image")
        return run.example_sources(1)[0]
    if isinstance(given, str) and not given.strip():
        raise QKVError("the source is empty")
    return given


def describe_source(run, source) -> str:
    """A source in a sentence: a sentence quoted, an image by its size."""
    if run.source_kind == "text":
        return repr(source.strip() if isinstance(source, str) else source)
    if isinstance(source, (bytes, bytearray)):
        return "the image given"
    return f"the image {source}" if isinstance(source, str) else "an image of the run's validation set"
