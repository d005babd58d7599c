"""Completing a prompt with either architecture, behind one interface: greedy or sampled completions, and the
log-probability of given completions with gradient (what evaluation by pass@k and REINFORCE need).

    encoder–decoder   the encoder reads the prompt (ending with EOS); the decoder writes the completion
                      after BOS, until EOS (`Seq2SeqCompleter`)
    decoder-only      one sequence: the prompt's ids, then the completion's, then EOS; the completion is what
                      comes after the prompt (`GPTCompleter`)

Both return `Sample`s: the completion's ids, EOS last when the model ended it, and its
text. A prompt longer than the context keeps its last tokens (decoder-only, with room for the completion) or its
first (encoder–decoder, whose encoder reads at most max_seq_len).

Shape legend: N rows (prompts × samples), S prompt length, T completion length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from qkv.generation.seq2seq import greedy_decode, sample_decode

ROWS = 256  # the most rows an encoder–decoder decodes side by side (prompts × samples)


@dataclass
class Sample:
    """One completion: its ids (no BOS; EOS last if the model ended it) and its text (without EOS); `forced`, if
    not empty, marks the ids a tool wrote instead of the model (they carry no log-probability of the policy)."""

    ids: list[int]
    text: str
    forced: tuple[bool, ...] = ()


@contextmanager
def _no_dropout(model: nn.Module):
    """The model in eval mode (no dropout) inside, its mode restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


class Seq2SeqCompleter:
    """Prompt -> completion with an encoder–decoder (`qkv.models.seq2seq.Seq2Seq`) and one tokenizer."""

    def __init__(self, model, tokenizer, bos_id: int, eos_id: int):
        self.model, self.tok, self.bos, self.eos = model, tokenizer, bos_id, eos_id

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tok.encode(prompt)[: self.model.config.max_seq_len - 1] + [self.eos]

    def _src(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids = [self.prompt_ids(p) for p in prompts]
        S, pad = max(map(len, ids)), self.model.config.pad_id
        src = torch.full((len(ids), S), pad, dtype=torch.long)  # (N, S)
        for i, row in enumerate(ids):
            src[i, : len(row)] = torch.tensor(row)
        device = self.model.lm_head.weight.device
        return src.to(device), (src != pad).to(device) if pad is not None else torch.ones_like(src, dtype=torch.bool)

    def _samples(self, rows: list[list[int]], limit: int) -> list[Sample]:
        # a row shorter than its limit ended with EOS (the decoders drop it): put it back, it was chosen
        return [Sample(r + [self.eos] if len(r) < limit else r, self.tok.decode(r)) for r in rows]

    def _limit(self, max_new_tokens: int) -> int:
        return min(max_new_tokens, self.model.config.max_seq_len)

    @torch.no_grad()
    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[Sample]:
        rows = []
        with _no_dropout(self.model):
            for i in range(0, len(prompts), ROWS):  # at most ROWS decoded side by side
                src, mask = self._src(prompts[i : i + ROWS])
                rows += greedy_decode(self.model, src, mask, self.bos, self.eos, max_len_a=0.0,
                                      max_len_b=max_new_tokens, vocab_size=self.tok.vocab_size)
        return self._samples(rows, self._limit(max_new_tokens))

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int, temperature: float, max_new_tokens: int,
               generator: torch.Generator | None = None) -> list[list[Sample]]:
        groups = []
        step = max(1, ROWS // n)
        with _no_dropout(self.model):
            for i in range(0, len(prompts), step):
                src, mask = self._src(prompts[i : i + step])
                groups += sample_decode(self.model, src, mask, self.bos, self.eos, n, temperature, max_len_a=0.0,
                                        max_len_b=max_new_tokens, generator=generator,
                                        vocab_size=self.tok.vocab_size)
        return [self._samples(g, self._limit(max_new_tokens)) for g in groups]

    def token_logprobs(self, prompts: Sequence[str], samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
        """log p(y_t | y_<t, x) of every sampled token (N, T) with gradient, dropout off; mask (N, T)."""
        src, src_mask = self._src(prompts)
        T = max(1, max(len(s.ids) for s in samples))
        device = src.device
        tgt_in = torch.full((len(samples), T), self.model.config.pad_id or 0, dtype=torch.long)  # (N, T)
        tgt = torch.zeros((len(samples), T), dtype=torch.long)  # (N, T)
        mask = torch.zeros((len(samples), T), dtype=torch.bool)  # (N, T)
        for i, s in enumerate(samples):
            tgt_in[i, : len(s.ids)] = torch.tensor([self.bos] + s.ids[:-1], dtype=torch.long)
            tgt[i, : len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
            mask[i, : len(s.ids)] = True
        with _no_dropout(self.model):
            logits = self.model(src, src_mask, tgt_in.to(device)).logits  # (N, T, V)
        logp = logits.float().log_softmax(dim=-1).gather(-1, tgt.to(device)[..., None]).squeeze(-1)  # (N, T)
        return logp, mask.to(device)


class GPTCompleter:
    """Prompt -> completion with a decoder-only transformer (`qkv.models.gpt.GPT`) and its tokenizer."""

    def __init__(self, model, tokenizer, eos_id: int):
        self.model, self.tok, self.eos = model, tokenizer, eos_id
        self.stops = {eos_id}  # ids that end a completion (kept as its last id)

    def prompt_ids(self, prompt: str, room: int) -> list[int]:
        """The prompt's ids, its last ones if the context could not also hold `room` new tokens."""
        ids = self.tok.encode(prompt)
        return ids[-max(1, self.model.config.max_seq_len - room):]

    def tool_ids(self, ids: list[int]) -> list[int]:
        """Ids a tool writes after a row's `ids` (fed to the model one per step instead of what it draws); none
        here. A chat model's calculator writes its result (`qkv.generation.calculator.ChatCompleter`)."""
        return []

    def text(self, ids: list[int]) -> str:
        """A completion's text (without its stop id)."""
        return self.tok.decode(ids[:-1] if ids and ids[-1] in self.stops else ids)

    @torch.no_grad()
    def _decode(self, prompt, n: int, temperature: float, max_new_tokens: int,
                generator: torch.Generator | None) -> list[Sample]:
        """`n` completions of one prompt, decoded side by side with a KV cache; temperature 0 is greedy. A row's
        tool ids (`tool_ids`) replace what it draws, one per step, and are marked forced."""
        ctx = self.model.config.max_seq_len
        ids = self.prompt_ids(prompt, max_new_tokens)
        steps = min(max_new_tokens, ctx - len(ids))
        device = self.model.tok_emb.weight.device
        cache = self.model.new_cache(n, len(ids) + steps)
        x = torch.tensor([ids] * n, dtype=torch.long, device=device)  # (n, S)
        out: list[list[int]] = [[] for _ in range(n)]
        forced: list[list[bool]] = [[] for _ in range(n)]
        pending: list[list[int]] = [[] for _ in range(n)]  # tool ids still to feed, per row
        done = [False] * n
        V = self.tok.vocab_size
        for _ in range(steps):
            logits = self.model(x, cache=cache, last_only=True)[0][:, -1].float()  # (n, V_model)
            logits[:, V:] = float("-inf")  # ids the tokenizer cannot decode
            if temperature == 0:
                drawn = logits.argmax(dim=-1)  # (n,)
            else:
                probs = (logits / temperature).softmax(dim=-1)  # (n, V_model)
                drawn = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (n,)
            nxt = drawn.tolist()
            for i in range(n):
                if done[i]:
                    continue
                by_tool = bool(pending[i])
                nxt[i] = pending[i].pop(0) if by_tool else nxt[i]
                out[i].append(nxt[i])
                forced[i].append(by_tool)
                if not by_tool:
                    pending[i] = self.tool_ids(out[i])
                    done[i] = nxt[i] in self.stops
            if all(done):
                break
            x = torch.tensor(nxt, dtype=torch.long, device=device)[:, None]  # (n, 1)
        return [Sample(r, self.text(r), tuple(f)) for r, f in zip(out, forced, strict=True)]

    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[Sample]:
        with _no_dropout(self.model):
            return [self._decode(p, 1, 0.0, max_new_tokens, None)[0] for p in prompts]

    def sample(self, prompts: Sequence[str], n: int, temperature: float, max_new_tokens: int,
               generator: torch.Generator | None = None) -> list[list[Sample]]:
        with _no_dropout(self.model):
            return [self._decode(p, n, temperature, max_new_tokens, generator) for p in prompts]

    def token_logprobs(self, prompts: Sequence[str], samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
        """log p of every sampled token (N, T) with gradient, dropout off, read off one pass over prompt +
        completion; mask (N, T)."""
        rows = [(self.prompt_ids(p, len(s.ids)), s.ids) for p, s in zip(prompts, samples, strict=True)]
        L = max(len(p) + len(c) for p, c in rows)
        T = max(1, max(len(c) for _, c in rows))
        idx = torch.zeros((len(rows), L), dtype=torch.long)  # (N, L): prompt + completion, right-padded
        pos = torch.zeros((len(rows), T), dtype=torch.long)  # (N, T): where each completion token is predicted
        tgt = torch.zeros((len(rows), T), dtype=torch.long)  # (N, T)
        mask = torch.zeros((len(rows), T), dtype=torch.bool)  # (N, T)
        for i, (p, c) in enumerate(rows):
            seq = p + c
            idx[i, : len(seq)] = torch.tensor(seq)
            pos[i, : len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
            tgt[i, : len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, : len(c)] = True
            if samples[i].forced:  # a tool's tokens are not the model's choice
                mask[i, : len(c)] = ~torch.tensor(samples[i].forced, dtype=torch.bool)
        device = self.model.tok_emb.weight.device
        with _no_dropout(self.model):
            logits = self.model(idx.to(device))[0]  # (N, L, V)
        logits = logits.gather(1, pos.to(device)[..., None].expand(-1, -1, logits.size(-1)))  # (N, T, V)
        logp = logits.float().log_softmax(dim=-1).gather(-1, tgt.to(device)[..., None]).squeeze(-1)  # (N, T)
        return logp, mask.to(device)
