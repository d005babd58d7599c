"""The language-model task (``task = "lm"``): a text corpus -> tokenizer -> token ids on disk -> GPT.

``qkv train --config configs/shakespeare-char-cpu.toml``. The run directory is self-contained: config.json,
model.safetensors, tokenizer.json, data/{train,val}.bin and data/meta.json (the token ids, memory-mapped),
the trainer state, metrics.jsonl and loss.png (`qkv.runs`).

Evaluation: the full pass over the validation split (the headline: loss, perplexity, bits/char;
`qkv.evaluation.perplexity`) and nanoGPT's sampled estimate beside it. ``init_from`` starts from another
GPT run's weights and tokenizer (the model's shape comes from that run).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from torch import nn

from qkv.config import from_dict
from qkv.data.text import RandomWindows, TextDataConfig, load_corpus, read_tokens, split_ids, write_tokens
from qkv.errors import QKVError
from qkv.evaluation.perplexity import bits_per_char, full_pass_loss, perplexity, sampled_loss
from qkv.generation.sampling import TokenSampling
from qkv.models.gpt import GPT, GPTConfig
from qkv.runs import DATA_DIR, DATA_META_FILE, TOKENIZER_FILE, TOKENS_FILES, atomic_write_json, load_json, read_config
from qkv.tasks.base import Run, State, Task, last_eval
from qkv.tokenizers.base import Tokenizer
from qkv.training.config import TrainConfig


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
    def read_data(self) -> str | None:
        """The corpus text (main process of a fresh run; the others read the token ids the main one writes)."""
        if not self.ctx.resume and self.ctx.dist.is_main:
            return load_corpus(self.cfg.data.source, self.cfg.data.max_chars)
        return None

    def make_tokenizers(self, text: str) -> Tokenizer:
        """Train the tokenizer (or take the base run's), tokenize the corpus once, write the ids and meta."""
        from qkv.tokenizers import train_bpe, train_char

        d = self.cfg.data
        if self.ctx.init_from is not None:
            tok = base_tokenizer(self.ctx.init_from)
        else:
            tok = train_char(text) if d.tokenizer == "char" else train_bpe(text, vocab_size=d.vocab_size)
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        cut = split_ids(len(ids), d.val_fraction)
        data_dir = self.ctx.run_dir / DATA_DIR
        data_dir.mkdir(parents=True, exist_ok=True)
        write_tokens(data_dir / TOKENS_FILES["train"], ids[:cut], tok.vocab_size)
        write_tokens(data_dir / TOKENS_FILES["val"], ids[cut:], tok.vocab_size)
        atomic_write_json(data_dir / DATA_META_FILE, {
            "source": d.source, "chars": len(text), "tokens": int(len(ids)), "train_tokens": int(cut),
            "val_tokens": int(len(ids) - cut), "chars_per_token": len(text) / max(1, len(ids)),
            "vocab_size": tok.vocab_size})
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
        return out

    # ------------------------------------------------------------------------------------------ finishing
    def summary(self, state: LMState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last = last_eval(result, "val_loss")
        if last:
            lines.append(f"val loss {last['val_loss']:.4f} (full pass) | ppl {last['val_ppl']:.2f} | "
                         f"{last['val_bpc']:.3f} bits/char")
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
    attention_input = "text"

    def __init__(self, path, config, saved, model, tokenizer):
        super().__init__(path, config, saved, model)
        self.tokenizer = tokenizer
        self._decoders: dict = {}

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        from qkv.tokenizers import load_tokenizer

        model, saved, config = cls._load_model(path, device)
        return cls(path, config, saved, model, load_tokenizer(Path(path) / TOKENIZER_FILE))

    # ------------------------------------------------------------------------------------------ generation
    def sampling(self, **changes) -> TokenSampling:
        """The run's [sample] settings with `changes` (None values ignored) on top; QKVError if invalid."""
        from qkv.config import to_dict

        values = to_dict(self.config.sample) | {k: v for k, v in changes.items() if v is not None}
        return from_dict(TokenSampling, values, prefix="sample.")

    def decoder(self, quantize: str | None = None, compile: bool = False) -> nn.Module:
        """The copy decoding runs on: the decode layout, or int8 or bf16 weights, its one-token step compiled
        if asked (`qkv.generation.inference.prepare_for_decoding`; made once, then kept)."""
        from qkv.generation.inference import prepare_for_decoding

        if (quantize, compile) not in self._decoders:
            self._decoders[quantize, compile] = prepare_for_decoding(self.model, quantize, compile)
        return self._decoders[quantize, compile]

    def stream(self, prompt: str | None = None, sampling: TokenSampling | None = None, *, stop=(),
               use_cache: bool = True, quantize: str | None = None, compile: bool = False) -> Iterator[str]:
        """The continuation of `prompt` (default: the run's sample prompt) as text pieces, as they come."""
        from qkv.generation.lm import stream_text

        s = sampling or self.config.sample
        prompt = s.prompt if prompt is None else prompt
        if prompt == "":
            raise QKVError("the prompt is empty; give at least one character")
        return stream_text(self.decoder(quantize, compile), self.tokenizer, prompt, s.max_new_tokens, s, seed=s.seed,
                           stop=stop, use_cache=use_cache)

    def generate(self, prompt: str | None = None, sampling: TokenSampling | None = None, **kwargs) -> str:
        """The whole continuation as one string (see `stream`)."""
        return "".join(self.stream(prompt, sampling, **kwargs))

    def attention(self, text: str, layer: int = -1, head: int | None = None):
        """Causal self-attention of one layer over `text`: a head, or the mean of the heads."""
        from qkv.evaluation.attention import gpt_self_attention

        return gpt_self_attention(self.model, self.tokenizer, text, layer, head)

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, data: str | None = None, max_tokens: int | None = None) -> dict:
        """Full-pass loss, perplexity and bits/char on the run's validation split, or on `data` (a dataset
        name, text file or folder, tokenized with the run's tokenizer)."""
        if data:
            text = load_corpus(data)
            tokens = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
            chars_per_token, source = len(text) / max(1, len(tokens)), data
        else:
            meta, val = self.meta, self.path / DATA_DIR / TOKENS_FILES["val"]
            if not meta or not val.is_file():
                raise QKVError(f"{self.path} has no validation split on disk; give the data to score (a text file, "
                               "folder or dataset name)")
            tokens = read_tokens(val, meta["vocab_size"])
            chars_per_token, source = meta["chars_per_token"], f"{meta['source']} (validation split)"
        if max_tokens is not None and max_tokens <= 0:
            raise QKVError(f"max_tokens must be positive, got {max_tokens}")
        if len(tokens) < 2:
            raise QKVError(f"{source}: fewer than 2 tokens to score")
        loss = full_pass_loss(self.model, tokens, self.model.config.max_seq_len, max_tokens)
        n = min(len(tokens) - 1, max_tokens or len(tokens))
        return {"source": source, "tokens": n, "loss": loss, "perplexity": perplexity(loss),
                "bits_per_char": bits_per_char(loss, chars_per_token)}

    def report(self, r: dict) -> str:
        return (f"{r['source']}: {r['tokens']:,} tokens | loss {r['loss']:.4f} nats/token | perplexity "
                f"{r['perplexity']:.3f} | {r['bits_per_char']:.4f} bits/char")


LMTask.run_class = LMRun
