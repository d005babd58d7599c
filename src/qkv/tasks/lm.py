"""The language-model task (``task = "lm"``): a text corpus -> tokenizer -> token ids on disk -> GPT.

``qkv train --preset shakespeare-char-cpu``. The run directory is self-contained: config.json,
model.safetensors, tokenizer.json, data/{train,val}.bin and data/meta.json (the token ids, memory-mapped),
the trainer state, metrics.jsonl and loss.png (`qkv.runs`).

Evaluation: the full pass over the validation split (the headline: loss, perplexity, bits/char and, where the
meta has the split's UTF-8 bytes per token, bits/byte; `qkv.evaluation.perplexity`) and nanoGPT's sampled estimate
beside it. The data meta also holds the bigram baseline of the same split (`qkv.evaluation.bigram`; vocabularies
up to 8,192). ``init_from`` starts from another GPT run's weights and tokenizer (the model's shape comes from that
run); ``data.tokenizer_file`` takes a tokenizer as it is (a tokenizer stage's tokenizer.json).

The split: the last `val_fraction` of the tokens (nanoGPT's), or for ``english`` whole held-out documents
(`qkv.data.english`), each side encoded on its own. A BPE tokenizer learns from the training side only; a character
one from both (its vocabulary must hold every character it will encode).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from qkv.config import from_dict
from qkv.data.text import (
    RandomWindows,
    TextDataConfig,
    load_corpus,
    load_split,
    read_tokens,
    split_ids,
    write_tokens,
)
from qkv.errors import QKVError
from qkv.evaluation.bigram import MAX_VOCAB, bigram_loss
from qkv.evaluation.perplexity import bits_per_byte, bits_per_char, full_pass_loss, perplexity, sampled_loss
from qkv.generation.lm import TokenStream
from qkv.generation.sampling import TokenSampling
from qkv.models.gpt import GPT, GPTConfig
from qkv.runs import DATA_DIR, DATA_META_FILE, TOKENIZER_FILE, TOKENS_FILES, atomic_write_json, load_json, read_config
from qkv.tasks.base import Run, State, Task, last_eval
from qkv.tasks.capabilities import Capability, TextInput, TrainingExample
from qkv.tokenizers.base import Tokenizer
from qkv.training.config import TrainConfig

LESSON_TEXT = "ROMEO: But soft, what light"  # what a text-reading topic shows when the run's own prompt will not do
BIGRAM_ALPHA = 0.1  # the add-alpha smoothing of the bigram baseline in data/meta.json


@dataclass
class LMRunConfig:
    task: Literal["lm"] = "lm"
    model: GPTConfig = field(default_factory=GPTConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: TokenSampling = field(default_factory=lambda: TokenSampling(top_k=200))


def base_tokenizer(init_from: Path):
    """The tokenizer of a GPT run to start from; QKVError if the run is not a GPT run."""
    from qkv.tokenizers import load_tokenizer

    cfg = read_config(init_from)
    if cfg["model_type"] != "gpt":
        raise QKVError(f"init_from {init_from}: a {cfg['model_type']} run; this needs a GPT run")
    return load_tokenizer(init_from / TOKENIZER_FILE)


def tokenizer_from_file(path: str | Path) -> Tokenizer:
    """The tokenizer of ``data.tokenizer_file``: a tokenizer.json, or a folder holding one; QKVError if neither."""
    from qkv.tokenizers import load_tokenizer

    p = Path(path).expanduser()
    file = p / TOKENIZER_FILE if p.is_dir() else p
    if not file.is_file():
        raise QKVError(f"data.tokenizer_file {path}: no such file" + (f" ({p} holds no {TOKENIZER_FILE})"
                                                                      if p.is_dir() else ""))
    return load_tokenizer(file)


def base_model_config(init_from: Path) -> GPTConfig:
    from qkv.models.io import model_config_dict

    return from_dict(GPTConfig, model_config_dict("gpt", read_config(init_from)["model"]), prefix="model.")


@dataclass
class LMState(State):
    tok: Tokenizer | None = None
    train_ids: np.ndarray | None = None  # the token ids on disk, memory-mapped
    val_ids: np.ndarray | None = None


class LMTask(Task):
    name = "lm"
    config_class = LMRunConfig
    supports_init_from = True
    fitted_model_fields = ("vocab_size",)

    # ------------------------------------------------------------------------------------------ preparing
    def read_data(self) -> str | tuple[str, str] | None:
        """The corpus text, or (train, validation) texts for a corpus split by documents (main process of a fresh
        run; the others read the token ids the main one writes)."""
        if not self.ctx.resume and self.ctx.dist.is_main:
            d = self.cfg.data
            return load_split(d.source, d.val_fraction, d.max_chars) or load_corpus(d.source, d.max_chars)
        return None

    def tokenizer_for(self, text: str) -> Tokenizer:
        """The base run's tokenizer (init_from), data.tokenizer_file's, or one trained on `text`."""
        from qkv.tokenizers import train_bpe, train_char

        d = self.cfg.data
        if d.tokenizer_file is not None and self.ctx.init_from is not None:
            raise QKVError("data.tokenizer_file and init_from both give the tokenizer; keep one")
        if self.ctx.init_from is not None:
            return base_tokenizer(self.ctx.init_from)
        if d.tokenizer_file is not None:
            return tokenizer_from_file(d.tokenizer_file)
        return train_char(text) if d.tokenizer == "char" else train_bpe(text, vocab_size=d.vocab_size)

    def make_tokenizers(self, data: str | tuple[str, str]) -> Tokenizer:
        """Get the tokenizer, tokenize the corpus once, write the ids and meta (bytes per token of each side, the
        bigram baseline). A (train, val) pair of texts is encoded side by side; one text is cut by tokens."""
        d = self.cfg.data
        if isinstance(data, tuple):  # held-out documents
            train_text, val_text = data
            tok = self.tokenizer_for(train_text if d.tokenizer == "bpe" else train_text + "\n\n" + val_text)
            train_ids = np.asarray(tok.encode(train_text), dtype=np.int64)
            val_ids = np.asarray(tok.encode(val_text), dtype=np.int64)
            chars = len(train_text) + len(val_text)
            train_bytes, val_bytes = len(train_text.encode("utf-8")), len(val_text.encode("utf-8"))
        else:
            tok = self.tokenizer_for(data)
            ids = np.asarray(tok.encode(data), dtype=np.int64)
            cut = split_ids(len(ids), d.val_fraction)
            train_ids, val_ids, chars = ids[:cut], ids[cut:], len(data)
            val_bytes = len(tok.decode(val_ids.tolist()).encode("utf-8"))
            train_bytes = len(data.encode("utf-8")) - val_bytes
        n_train, n_val = len(train_ids), len(val_ids)
        data_dir = self.ctx.run_dir / DATA_DIR
        data_dir.mkdir(parents=True, exist_ok=True)
        write_tokens(data_dir / TOKENS_FILES["train"], train_ids, tok.vocab_size)
        write_tokens(data_dir / TOKENS_FILES["val"], val_ids, tok.vocab_size)
        meta = {"source": d.source, "chars": chars, "tokens": n_train + n_val, "train_tokens": n_train,
                "val_tokens": n_val, "chars_per_token": chars / max(1, n_train + n_val), "vocab_size": tok.vocab_size,
                "split": "documents" if isinstance(data, tuple) else "tokens",
                "bytes_per_token": val_bytes / max(1, n_val), "train_bytes_per_token": train_bytes / max(1, n_train)}
        if tok.vocab_size <= MAX_VOCAB and n_train >= 2 and n_val >= 2:
            meta["bigram_val_loss"] = bigram_loss(train_ids, val_ids, tok.vocab_size, BIGRAM_ALPHA)
            meta["bigram_alpha"] = BIGRAM_ALPHA
        atomic_write_json(data_dir / DATA_META_FILE, meta)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return tok

    def load_tokenizers(self, text: None) -> Tokenizer:
        from qkv.tokenizers import load_tokenizer

        return load_tokenizer(self.ctx.run_dir / TOKENIZER_FILE)

    def resolve(self, text: str | None, tok: Tokenizer) -> LMRunConfig:
        """The base run's model shape (init_from), or the vocabulary sized to the tokenizer."""
        cfg, ctx = self.cfg, self.ctx
        if ctx.init_from is not None:
            cfg = replace(cfg, model=base_model_config(ctx.init_from))
        elif ctx.fit_vocab and not ctx.resume:
            cfg = replace(cfg, model=replace(cfg.model, vocab_size=tok.vocab_size))
        if cfg.model.vocab_size < tok.vocab_size:
            raise QKVError(f"model.vocab_size {cfg.model.vocab_size} < tokenizer vocabulary {tok.vocab_size}")
        return cfg

    def prepare(self, cfg: LMRunConfig, text: str | None, tok: Tokenizer) -> LMState:
        """The token ids on disk (memory-mapped) and their meta."""
        data_dir = self.ctx.run_dir / DATA_DIR
        meta = load_json(data_dir / DATA_META_FILE)
        train_ids = read_tokens(data_dir / TOKENS_FILES["train"], meta["vocab_size"])
        val_ids = read_tokens(data_dir / TOKENS_FILES["val"], meta["vocab_size"])
        T = cfg.model.max_seq_len
        if len(val_ids) <= T + 1:
            raise QKVError(f"validation split has {len(val_ids)} tokens, fewer than the context {T} + 2; "
                           "use more data or a smaller max_seq_len")
        return LMState(cfg, meta, tok, train_ids, val_ids)

    def build_model(self, state: LMState) -> nn.Module:
        from qkv.models.io import load_model

        if self.ctx.resume:
            return load_model(self.ctx.run_dir)[0]
        if self.ctx.init_from is not None:
            return load_model(self.ctx.init_from)[0]
        return GPT(state.cfg.model)

    def batches(self, state: LMState, rows: int, rank: int, world: int):
        return RandomWindows(state.train_ids, state.cfg.model.max_seq_len, rows, seed=state.cfg.train.seed,
                             rank=rank, world_size=world)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, state: LMState, model, batch):
        _, loss = model(batch["idx"], batch["targets"])
        return loss, {"tokens": batch["idx"].numel()}

    def loss_terms(self, batch) -> int:
        return batch["targets"].numel()

    def evaluate(self, state: LMState, model, full: bool, train_means: dict) -> dict:
        cfg, T, out = state.cfg, state.cfg.model.max_seq_len, {}
        if cfg.train.eval_iters:
            rows = cfg.train.batch_size // cfg.train.grad_accum  # the global micro-batch, as training draws it
            out["train_loss_sampled"] = sampled_loss(model, state.train_ids, T, rows, cfg.train.eval_iters, 1337)
            out["val_loss_sampled"] = sampled_loss(model, state.val_ids, T, rows, cfg.train.eval_iters, 1338)
        if full:
            loss = full_pass_loss(model, state.val_ids, T, cfg.data.val_max_tokens)
            out["val_loss"] = loss
            out["val_ppl"] = perplexity(loss)
            out["val_bpc"] = bits_per_char(loss, state.meta["chars_per_token"])
            if state.meta.get("bytes_per_token"):  # runs made before it was recorded have no val_bpb
                out["val_bpb"] = bits_per_byte(loss, state.meta["bytes_per_token"])
        return out

    # ------------------------------------------------------------------------------------------ finishing
    def summary(self, state: LMState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last = last_eval(result, "val_loss")
        if last:
            bpb = f" | {last['val_bpb']:.3f} bits/byte" if "val_bpb" in last else ""
            lines.append(f"val loss {last['val_loss']:.4f} (full pass) | ppl {last['val_ppl']:.2f} | "
                         f"{last['val_bpc']:.3f} bits/char{bpb}")
        bigram = state.meta.get("bigram_val_loss")
        if bigram is not None:
            lines.append(f"bigram baseline (add-{state.meta['bigram_alpha']:g} counts of the training split): "
                         f"val loss {bigram:.4f}")
        return lines

    def samples(self, state: LMState, model) -> Iterator[str]:
        from qkv.generation.lm import stream_text

        s = state.cfg.sample
        model.eval()
        yield "--- sample " + "-" * 60 + "\n" + s.prompt
        yield from stream_text(model, state.tok, s.prompt, s.max_new_tokens, s, seed=s.seed)
        yield "\n" + "-" * 71 + "\n"

    def next_command(self) -> str:
        return f"generate more: qkv generate {self.ctx.run_dir} --prompt \"...\""


class LMRun(Run):
    """A trained GPT run: generate text, look at its attention, score it (`qkv.load_run`)."""

    task = "lm"
    config_class = LMRunConfig
    model_type = "gpt"

    def __init__(self, path, config, saved, model, tokenizer):
        super().__init__(path, config, saved, model)
        self.tokenizer = tokenizer
        self._decoders: dict = {}

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        from qkv.tokenizers import load_tokenizer

        model, saved, config = cls._load_model(path, device)
        return cls(path, config, saved, model, load_tokenizer(Path(path) / TOKENIZER_FILE))

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities | {Capability.CONTINUATION, Capability.TOKENS, Capability.TOKEN_INPUT,
                                       Capability.SELF_ATTENTION, Capability.TRAINING_EXAMPLES}

    # ------------------------------------------------------------------------------------------ generation
    def sampling(self, **changes) -> TokenSampling:
        """The run's [sample] settings with `changes` (None values ignored) on top; QKVError if invalid."""
        return self.settings(self.config.sample, changes, "sample.")

    def decoder(self, quantize: str | None = None, compile: bool = False) -> nn.Module:
        """The copy decoding runs on: the decode layout, or int8 or bf16 weights, its one-token step compiled
        if asked (`qkv.generation.inference.prepare_for_decoding`; made once, then kept)."""
        from qkv.generation.inference import prepare_for_decoding

        if (quantize, compile) not in self._decoders:
            self._decoders[quantize, compile] = prepare_for_decoding(self.model, quantize, compile)
        return self._decoders[quantize, compile]

    def token_stream(self, prompt: str | None = None, sampling: TokenSampling | None = None, *, stop=(),
                     stop_ids=(), top: int = 0, use_cache: bool = True, quantize: str | None = None,
                     compile: bool = False, **changes) -> TokenStream:
        """The continuation of `prompt` (default: the run's sample prompt) as a `TokenStream`: each token with its
        text (and, with `top`, the most likely tokens at that step), then why it ended. Sampling settings come
        from `sampling` (default the run's [sample]) with any `TokenSampling` field given as a keyword on top:
        ``run.token_stream("ROMEO:", temperature=0.8, max_new_tokens=10)``. A prompt longer than the context
        keeps its last tokens (`TokenStream.prompt_cut` says how many went)."""
        from qkv.generation.lm import TokenStream
        from qkv.generation.sampling import seeded_generator

        s = self.settings(sampling or self.config.sample, changes, "sample.") if changes else \
            (sampling or self.config.sample)
        prompt = s.prompt if prompt is None else prompt
        model = self.decoder(quantize, compile)
        return TokenStream(model, self.tokenizer, self.tokenizer.encode(prompt), s.max_new_tokens, s,
                           generator=seeded_generator(next(model.parameters()).device, s.seed), stop=stop,
                           stop_ids=stop_ids, top=top, use_cache=use_cache)

    def stream(self, prompt: str | None = None, sampling: TokenSampling | None = None, **kwargs) -> Iterator[str]:
        """The continuation of `prompt` as text pieces, as they come (`token_stream`'s arguments)."""
        return self.token_stream(prompt, sampling, **kwargs).texts()

    def generate(self, prompt: str | None = None, sampling: TokenSampling | None = None, **kwargs) -> str:
        """The whole continuation as one string (`token_stream`'s arguments):
        ``run.generate("ROMEO:", max_new_tokens=10)``."""
        return "".join(self.stream(prompt, sampling, **kwargs))

    # ------------------------------------------------------------------------------------------ looking inside
    def attention(self, text: str, layer: int = -1, head: int | None = None):
        """Causal self-attention of one layer over `text`: a head, or the mean of the heads."""
        return self.self_attention(text).pick(layer, head)

    def self_attention(self, text: str):
        """Every layer's and head's causal self-attention over `text` (an AttentionStack)."""
        from qkv.evaluation.attention import gpt_attention

        return gpt_attention(self.model, self.tokenizer, text)

    def text_tokenizer(self):
        return self.tokenizer, "text"

    def example_text(self) -> str:
        """The run's sample prompt when it is long enough to show something, else a line of the lesson (the first
        of the two that this tokenizer can encode)."""
        prompt = self.config.sample.prompt or ""
        for text in (prompt if len(prompt) >= 4 else "", LESSON_TEXT, prompt):
            if text:
                try:
                    self.tokenizer.encode(text)
                    return text
                except QKVError:
                    continue
        return LESSON_TEXT

    def text_input(self) -> TextInput:
        """Where this GPT reads a text: tok_emb, its positions, its causal blocks."""
        model, cfg = self.model, self.model.config
        device = model.tok_emb.weight.device

        def prepare(text: str, limit: int) -> tuple[list[int], int]:
            ids = self.tokenizer.encode(text)
            return ids[:limit], max(0, len(ids) - limit)

        def idx(ids):
            return torch.tensor([ids], device=device)  # (1, T)

        tied = model.lm_head.weight is model.tok_emb.weight
        return TextInput(
            "text", self.tokenizer, "tok_emb", model.tok_emb, 1.0, cfg.pos_encoding,
            getattr(model, "pos_emb", None), model.drop, model.blocks, "blocks", "layer", True, prepare,
            lambda ids: model.hidden_states(idx(ids)), lambda ids: model.attention_maps(idx(ids)), cfg,
            ["Tied: lm_head.weight is the same table, so it also turns the last hidden state into logits (topic "
             "output)." if tied else "Not tied: the output layer (lm_head) has its own V × d matrix."])

    def training_example(self, text: str | None = None, src: str | None = None, limit: int = 32) -> TrainingExample:
        """A block of text as `LMTask.loss` scores it: input = tokens 0…T−1, target = tokens 1…T, every position
        counting. `text`, or the first block of the run's training tokens."""
        from qkv.data.text import full_pass_windows

        tok, model = self.tokenizer, self.model
        if text is not None:
            tokens = np.asarray(tok.encode(text), dtype=np.int64)
            where = f"the text given ({len(tokens)} tokens)"
        else:
            folder = self.path / DATA_DIR
            path = folder / TOKENS_FILES["train"]
            if not path.is_file() or not (folder / DATA_META_FILE).is_file():
                raise QKVError(f"{self.path.name} has no training tokens on disk ({path}); give a text",
                               argument="text")
            tokens = read_tokens(path, load_json(folder / DATA_META_FILE)["vocab_size"])
            where = f"the first block of the run's training tokens ({DATA_DIR}/{path.name}); a text gives your own"
        if len(tokens) < 2:
            raise QKVError("a training block needs at least 2 tokens (an input and the token after it)")
        block = min(model.config.max_seq_len, limit, len(tokens) - 1)
        batch = next(full_pass_windows(tokens, block, 1))  # the validation windows: idx (1, T), targets (1, T)
        logits, loss = model(batch["idx"], batch["targets"])  # what LMTask.loss computes
        return TrainingExample(
            where, [f"block of {block} tokens (the model's context is {model.config.max_seq_len}): input = tokens "
                    f"0…{block - 1}, target = tokens 1…{block} — every position counts"],
            tok, batch["idx"][0], batch["targets"][0], logits[0], loss, "GPT(idx, targets) — LMTask.loss")

    @classmethod
    def table_of(cls, model: nn.Module, name: str):
        """The GPT's report: components, FLOPs per token and memory (`qkv.evaluation.params`)."""
        from qkv.evaluation.params import report_for_model

        return report_for_model(model, name)

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, data: str | None = None, max_tokens: int | None = None) -> dict:
        """Full-pass loss, perplexity, bits/char and bits/byte on the run's validation split, or on `data` (a dataset
        name, text file or folder, tokenized with the run's tokenizer); no bits/byte for the split of a run made
        before its bytes per token were recorded."""
        if data:
            text = load_corpus(data)
            tokens = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
            chars_per_token, source = len(text) / max(1, len(tokens)), data
            bytes_per_token = len(text.encode("utf-8")) / max(1, len(tokens))
        else:
            meta, val = self.meta, self.path / DATA_DIR / TOKENS_FILES["val"]
            if not meta or not val.is_file():
                raise QKVError(f"{self.path} has no validation split on disk; give the data to score (a text file, "
                               "folder or dataset name)")
            tokens = read_tokens(val, meta["vocab_size"])
            chars_per_token, source = meta["chars_per_token"], f"{meta['source']} (validation split)"
            bytes_per_token = meta.get("bytes_per_token")  # None in runs made before it was recorded
        if max_tokens is not None and max_tokens <= 0:
            raise QKVError(f"max_tokens must be positive, got {max_tokens}")
        if len(tokens) < 2:
            raise QKVError(f"{source}: fewer than 2 tokens to score")
        loss = full_pass_loss(self.model, tokens, self.model.config.max_seq_len, max_tokens)
        n = min(len(tokens) - 1, max_tokens or len(tokens))
        out = {"source": source, "tokens": n, "loss": loss, "perplexity": perplexity(loss),
               "bits_per_char": bits_per_char(loss, chars_per_token)}
        if bytes_per_token:
            out["bits_per_byte"] = bits_per_byte(loss, bytes_per_token)
        return out

    def report(self, r: dict) -> str:
        bpb = f" | {r['bits_per_byte']:.4f} bits/byte" if "bits_per_byte" in r else ""
        return (f"{r['source']}: {r['tokens']:,} tokens | loss {r['loss']:.4f} nats/token | perplexity "
                f"{r['perplexity']:.3f} | {r['bits_per_char']:.4f} bits/char{bpb}")


LMTask.run_class = LMRun
