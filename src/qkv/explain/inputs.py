"""The input a topic reads: what the user gave (a text, a source sentence, image or recording, a prompt), else an
example that the run itself offers (its sample prompt, a validation source, a training caption)."""

from __future__ import annotations

from qkv.errors import QKVError
from qkv.explain.base import Options

# which option a run's text side reads (`Tokenized.text_tokenizer`'s side)
_OPTION = {"source": "src", "prompt": "prompt", "text": "text", "caption": "text", "transcript": "text"}

# the option that gives a source of each kind (`run.source_kind`), and what it is
SOURCE_OPTION = {"text": ("src", "a sentence"), "image": ("image", "an image file"), "audio": ("audio", "a WAV file")}


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
    """The source an encoder–decoder topic reads: src (a run whose source is text), image (one whose source is
    images) or audio (one that reads recordings), else the run's first example source."""
    option, what = SOURCE_OPTION[run.source_kind]
    given = getattr(opts, option)
    if given is None:
        if any(getattr(opts, other) is not None for other, _ in SOURCE_OPTION.values()):
            raise QKVError(f"{run.path.name} reads {run.source_kind} sources: give {option}, {what}", argument=option)
        return run.example_sources(1)[0]
    if isinstance(given, str) and not given.strip():
        raise QKVError("the source is empty")
    return given


def describe_source(run, source) -> str:
    """A source in a sentence: a sentence quoted, an image or a recording by where it comes from (a recording with
    its length)."""
    if run.source_kind == "text":
        return repr(source.strip() if isinstance(source, str) else source)
    kind = "recording" if run.source_kind == "audio" else "image"
    if isinstance(source, (bytes, bytearray)):
        return f"the {kind} given"
    if isinstance(source, str):
        return f"the {kind} {source}"
    if run.source_kind == "audio" and hasattr(source, "shape"):  # a waveform (N,) at 16 kHz
        from qkv.data.audio import SAMPLE_RATE

        return f"a recording of the run's validation set ({source.shape[-1] / SAMPLE_RATE:.2f} s)"
    return f"an {kind} of the run's validation set"
