"""Talking to a chat model: stream one reply, keep the history, trim it from the front when the context fills.

A reply is decoded from ``render(history + [user], add_generation_prompt=True)`` — the same template as
training — until ``<|end|>`` (or any role token: a model that forgot ``<|end|>`` is starting a new turn),
the token budget, or the end of the context. Replies are never decoded past the context: the prompt is the
whole conversation, so sliding the window would silently drop it.

History trimming: before each reply, while the prompt plus `max_new_tokens` does not fit the context, the
oldest user/assistant exchange is dropped (a system message is kept). `ChatSession.reply` records how many
exchanges it dropped in ``last_trimmed`` so the caller can say so.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from qkv.data.chat_template import chat_tokens, render, tool_tokens
from qkv.errors import QKVError
from qkv.generation.lm import TokenStream
from qkv.generation.sampling import TokenSampling, seeded_generator


def reply_stream(model: nn.Module, tok, prompt_ids: Sequence[int], max_new_tokens: int,
                 sampling: TokenSampling | None = None, generator: torch.Generator | None = None,
                 top: int = 0) -> TokenStream:
    """The reply to a rendered prompt as a `TokenStream`, ending at the end-of-turn token (or any role token);
    a tokenizer with the calculator's tokens gets a `ToolStream`, the same interface with the tool in the loop.

    At most ``min(max_new_tokens, context - len(prompt_ids))`` tokens are generated: a reply never slides the
    window (the prompt is the whole conversation)."""
    from qkv.generation.calculator import ToolStream

    ct = chat_tokens(tok)
    budget = max(0, min(max_new_tokens, model.config.max_seq_len - len(prompt_ids)))
    stops, sampling = (ct.end, ct.user, ct.assistant, ct.system), sampling or TokenSampling(temperature=0.0)
    if tool_tokens(tok) is not None:  # a model that calls the calculator (`qkv.generation.calculator`)
        return ToolStream(model, tok, prompt_ids, budget, sampling, generator, stops, top)
    return TokenStream(model, tok, prompt_ids, budget, sampling, generator=generator, stop_ids=stops, top=top)


def greedy_reply(model: nn.Module, tok, messages: Sequence[dict], max_new_tokens: int) -> str:
    """The greedy reply to a conversation that ends with a user turn (what exact match scores)."""
    ids, _ = render(messages, tok, add_generation_prompt=True)
    return "".join(reply_stream(model, tok, ids, max_new_tokens).texts())


class ChatSession:
    """A conversation with a model: ``for piece in session.reply("Hi"): print(piece, end="")``."""

    def __init__(self, model: nn.Module, tok, sampling: TokenSampling | None = None, max_new_tokens: int = 64,
                 system: str | None = None, seed: int | None = None):
        self.model, self.tok, self.sampling = model, tok, sampling or TokenSampling(temperature=0.0)
        self.max_new_tokens, self.system = max_new_tokens, system
        chat_tokens(tok)  # fail now, not at the first message, if this is not a chat tokenizer
        self.generator = seeded_generator(next(model.parameters()).device, seed)
        self.history: list[dict] = []  # user/assistant messages, oldest first (the system message is separate)
        self.last_trimmed = 0  # exchanges dropped to make room for the last reply

    def reset(self) -> None:
        self.history = []

    def _messages(self, user: str) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": user}]

    def prompt_ids(self, user: str) -> list[int]:
        """The rendered prompt for `user`, dropping the oldest exchanges until it fits (see module docstring)."""
        ctx = self.model.config.max_seq_len
        self.last_trimmed = 0
        ids, _ = render(self._messages(user), self.tok, add_generation_prompt=True)
        while len(ids) + self.max_new_tokens > ctx and self.history:
            self.history = self.history[2:]
            self.last_trimmed += 1
            ids, _ = render(self._messages(user), self.tok, add_generation_prompt=True)
        if len(ids) >= ctx:
            raise QKVError(f"the message is too long: its prompt is {len(ids)} tokens and the context holds {ctx}")
        return ids

    def reply(self, user: str) -> Iterator[str]:
        """The reply to `user` as a stream of text pieces; when it ends, both turns join the history.

        The prompt is built (and the history trimmed, see ``last_trimmed``) before this returns.
        """
        return self._texts(user, self.reply_stream(user))

    def reply_stream(self, user: str, top: int = 0) -> TokenStream:
        """The reply to `user` as a `TokenStream` (tokens with their text, and why it ended); the history is not
        changed (`reply` adds the turns when its stream ends)."""
        if not user.strip():
            raise QKVError("the message is empty")
        return reply_stream(self.model, self.tok, self.prompt_ids(user), self.max_new_tokens, self.sampling,
                            self.generator, top)

    def _texts(self, user: str, stream: TokenStream) -> Iterator[str]:
        pieces = []
        for piece in stream.texts():
            pieces.append(piece)
            yield piece
        self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": "".join(pieces)}]
