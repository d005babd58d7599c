"""The JSON bodies the playground's API accepts: typed, bounded, and strict (an unknown field is an error).

FastAPI checks every request against these models before a handler runs, and answers a body that does
not fit with a 422 whose ``error`` line names the field (`qkv.server.app`). Bounds that depend on the run
(the context length, the number of timesteps) or on the server (the `max_new_tokens` cap) are checked by
the handlers, with the same kind of answer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TEXT = 4000  # characters in a prompt, a message, a source sentence
MAX_IMAGE = 1_000_000  # characters of an image's data URL (the body limit, 64 kB by default, comes first)
MAX_AUDIO = 4_000_000  # characters of a recording's WAV data URL: ~93 s of 16 kHz 16-bit mono (likewise)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(Strict):
    """Token sampling (`qkv.generation.sampling.TokenSampling`); None keeps the run's own setting."""

    temperature: float | None = Field(None, ge=0, le=10, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    max_new_tokens: int | None = Field(None, ge=1)


class GenerateRequest(Sampling):
    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    stop: list[str] = Field(default_factory=list, max_length=8)
    top: int = Field(5, ge=0, le=20)  # the most likely next tokens sent with every token (for the hover)

    @model_validator(mode="after")
    def _stops(self):
        if any(not s or len(s) > 64 for s in self.stop):
            raise ValueError("every stop string must be 1 to 64 characters")
        return self


class Message(Strict):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_TEXT)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _turns(self):
        for i, m in enumerate(self.messages):
            if m.role != ("user" if i % 2 == 0 else "assistant"):
                raise ValueError("messages must alternate user, assistant, user, ... and end with a user message")
        if self.messages[-1].role != "user":
            raise ValueError("the last message must be the user's")
        if not self.messages[-1].content.strip():
            raise ValueError("the last message is empty")
        return self


class ToTextRequest(Strict):
    """One source: `text` for a run that reads sentences, `image` (a PNG or JPEG data URL) for one that reads
    images, `audio` (a WAV file as a data URL, ``data:audio/wav;base64,...``) for one that reads recordings
    (`/api/runs/{name}` says which: ``source_kind``)."""

    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE)
    audio: str | None = Field(None, min_length=1, max_length=MAX_AUDIO)
    beam: int | None = Field(None, ge=1, le=16)  # None: the run's [decode] beam; 1 = greedy
    n_best: int = Field(5, ge=1, le=16)  # at most this many hypotheses (beam search finds up to 2·beam)
    length_penalty: float | None = Field(None, ge=0, le=5, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.text, self.image, self.audio)) != 1:
            raise ValueError("give one source: text (a sentence), image or audio (a data URL)")
        return self


class CodeRequest(Strict):
    """A prompt to complete (a function's signature and docstring), greedy or sampled; the completion is then run
    against the problem's hidden tests (a prompt of the run's own problems) or the docstring's examples."""

    prompt: str = Field(..., min_length=1, max_length=MAX_TEXT)
    temperature: float | None = Field(None, gt=0, le=2, allow_inf_nan=False)  # None: greedy
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class AttentionRequest(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class ImagesRequest(Strict):
    label: int | None = Field(None, ge=0)
    prompt: str | None = Field(None, min_length=1, max_length=200)
    guidance: float | None = Field(None, ge=0, le=20, allow_inf_nan=False)
    sampler: Literal["ddim", "ddpm"] | None = None
    steps: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    n: int = Field(4, ge=1)
    frames: int = Field(8, ge=2, le=16)

    @model_validator(mode="after")
    def _one_condition(self):
        if self.label is not None and self.prompt is not None:
            raise ValueError("give a label or a prompt, not both")
        return self


class NoiseRequest(Strict):
    t: list[int] | None = Field(None, min_length=1, max_length=16)  # None: 8 steps spread over [0, T)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    index: int | None = Field(None, ge=0)


class ExplainRequest(Strict):
    """`qkv explain TOPIC RUN --text/--src/--image/--audio/--prompt --layer --head --seed`, and whether to draw the
    pictures."""

    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    src: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE)  # a data URL, for a run that reads images
    audio: str | None = Field(None, min_length=1, max_length=MAX_AUDIO)  # a WAV data URL, for a run that reads audio
    prompt: str | None = Field(None, min_length=1, max_length=200)
    layer: int | None = Field(None, ge=-64, le=63)
    head: int | None = Field(None, ge=-64, le=63)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    pictures: bool = True
