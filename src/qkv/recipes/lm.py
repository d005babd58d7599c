"""Language modelling recipe: a text corpus -> tokenizer -> token ids on disk -> GPT -> Trainer.

``qkv train --config configs/shakespeare-char-cpu.toml`` ends up in `train_lm`. The run directory it
fills is self-contained: config.json, model.safetensors, tokenizer.json, data/{train,val}.bin,
trainer state, metrics.jsonl and loss.png.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from qkv.atomic import atomic_write_json
from qkv.config import from_dict, to_dict
from qkv.data.text import RandomWindows, full_pass_windows, load_corpus, read_tokens, split_ids, write_tokens
from qkv.errors import QKVError
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.io import save_run
from qkv.training import distributed
from qkv.training.config import TrainConfig
from qkv.training.trainer import Trainer


@dataclass
class TextDataConfig:
    source: str = "tinyshakespeare"  # a dataset name (`qkv data list`), a text file or a folder of text files
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 4096  # BPE only: size of the learned vocabulary
    val_fraction: float = 0.1  # the last 10% of tokens validate (nanoGPT's contiguous split)
    val_max_tokens: int | None = None  # cap the full-pass validation to the first N val tokens (None = all)
    max_chars: int | None = None  # read only the first N characters of the corpus (quick runs, tests)

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.vocab_size <= 4:
            raise ValueError(f"vocab_size must be > 4, got {self.vocab_size}")
        if self.max_chars is not None and self.max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")
        if self.val_max_tokens is not None and self.val_max_tokens <= 0:
            raise ValueError(f"val_max_tokens must be positive, got {self.val_max_tokens}")


@dataclass
class SampleConfig:
    """The sample printed when training ends (and the defaults of `qkv generate`)."""

    prompt: str = "\n"
    max_new_tokens: int = 300
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    seed: int = 1337


@dataclass
class LMRunConfig:
    task: Literal["lm"] = "lm"
    model: GPTConfig = field(default_factory=GPTConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


# ------------------------------------------------------------------------------------------- data
def prepare_data(cfg: TextDataConfig, data_dir: Path, tok=None):
    """Read the corpus, train the tokenizer (unless given one), write train/val token ids -> (tokenizer, meta)."""
    from qkv.tokenizers import train_bpe, train_char

    text = load_corpus(cfg.source, cfg.max_chars)
    if tok is None:
        tok = train_char(text) if cfg.tokenizer == "char" else train_bpe(text, vocab_size=cfg.vocab_size)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    cut = split_ids(len(ids), cfg.val_fraction)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_tokens(data_dir / "train.bin", ids[:cut], tok.vocab_size)
    write_tokens(data_dir / "val.bin", ids[cut:], tok.vocab_size)
    meta = {
        "source": cfg.source,
        "chars": len(text),
        "tokens": int(len(ids)),
        "train_tokens": int(cut),
        "val_tokens": int(len(ids) - cut),
        "chars_per_token": len(text) / max(1, len(ids)),
        "vocab_size": tok.vocab_size,
    }
    atomic_write_json(data_dir / "meta.json", meta)
    return tok, meta


def lm_loss(model, batch):
    x, y = batch
    _, loss = model(x, y)
    return loss, {"tokens": x.numel()}


@torch.no_grad()
def full_pass_loss(model: GPT, tokens: np.ndarray, block_size: int, max_tokens: int | None = None) -> float:
    """Mean next-token loss over non-overlapping windows covering the split once (deterministic)."""
    device = next(model.parameters()).device
    # ~4k tokens per forward (fastest on CPU), fewer if the logits would pass 128M floats
    batch = max(1, min(4096 // block_size, (1 << 27) // (block_size * model.config.vocab_size)))
    total, count = 0.0, 0
    for x, y in full_pass_windows(tokens, block_size, batch, max_tokens):
        logits, _ = model(x.to(device))
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten(), ignore_index=-100,
                                 reduction="sum").item()
        count += int((y != -100).sum())
    return total / max(1, count)


@torch.no_grad()
def sampled_loss(model: GPT, tokens: np.ndarray, block_size: int, batch_size: int, iters: int, seed: int) -> float:
    """nanoGPT's estimate_loss: the mean loss of `iters` random batches (noisy; for comparison)."""
    device = next(model.parameters()).device
    windows = RandomWindows(tokens, block_size, batch_size, seed)
    losses = [model(*(t.to(device) for t in windows.next_batch()))[1].item() for _ in range(iters)]
    return float(np.mean(losses))


# ------------------------------------------------------------------------------------------- train
def train_lm(cfg: LMRunConfig, run_dir: Path, *, resume: bool = False, init_from: Path | None = None,
             fit_vocab: bool = True, log=None):
    """Train (or resume) a GPT on a text corpus. Returns (TrainResult, model, tokenizer, is_main_process).

    fit_vocab: size the model's vocabulary to the tokenizer's (when the config didn't set vocab_size).
    """
    from qkv.tokenizers import load_tokenizer

    dist_info, device = distributed.setup(cfg.train.device)
    run_dir = Path(run_dir)
    data_dir = run_dir / "data"
    if resume:
        tok = load_tokenizer(run_dir / "tokenizer.json")
        meta = json.loads((data_dir / "meta.json").read_text())
    elif dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        base_tok = load_tokenizer(Path(init_from) / "tokenizer.json") if init_from is not None else None
        tok, meta = prepare_data(cfg.data, data_dir, base_tok)
        tok.save(run_dir / "tokenizer.json")
    distributed.barrier(dist_info)
    if not resume and not dist_info.is_main:
        tok = load_tokenizer(run_dir / "tokenizer.json")
        meta = json.loads((data_dir / "meta.json").read_text())

    if init_from is not None and not resume:
        from qkv.models.io import read_run_config

        cfg.model = from_dict(GPTConfig, read_run_config(init_from)["model"])  # the base model's shape
    elif fit_vocab and not resume:
        cfg.model = replace(cfg.model, vocab_size=tok.vocab_size)
    if cfg.model.vocab_size < tok.vocab_size:
        raise QKVError(f"model.vocab_size {cfg.model.vocab_size} < tokenizer vocabulary {tok.vocab_size}")
    train_ids = read_tokens(data_dir / "train.bin", meta["vocab_size"])
    val_ids = read_tokens(data_dir / "val.bin", meta["vocab_size"])
    T = cfg.model.max_seq_len
    if len(val_ids) <= T + 1:
        raise QKVError(f"validation split has {len(val_ids)} tokens, fewer than the context {T} + 2; "
                       "use more data or a smaller max_seq_len")
    if dist_info.enabled and cfg.train.threads is None and device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // dist_info.world_size))

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    if resume:
        from qkv.models.io import load_model

        model, _ = load_model(run_dir)
    elif init_from is not None:
        from qkv.models.io import load_model

        model, _ = load_model(init_from)
    else:
        model = GPT(cfg.model)

    micro = cfg.train.batch_size // cfg.train.grad_accum
    data = RandomWindows(train_ids, T, micro, seed=cfg.train.seed, rank=dist_info.rank,
                         world_size=dist_info.world_size)
    saved_config = {"task": "lm", "data": to_dict(cfg.data), "train": to_dict(cfg.train),
                    "sample": to_dict(cfg.sample), "data_meta": meta}

    def save_model(m, step):
        save_run(run_dir, m, tok, extra_config=saved_config, metadata={"step": str(step)})

    chars_per_token = meta["chars_per_token"]

    def evaluate(m, full: bool, train_means: dict) -> dict:
        out = {}
        if cfg.train.eval_iters:
            out["train_loss_sampled"] = sampled_loss(m, train_ids, T, micro, cfg.train.eval_iters, seed=1337)
            out["val_loss_sampled"] = sampled_loss(m, val_ids, T, micro, cfg.train.eval_iters, seed=1338)
        if full:
            loss = full_pass_loss(m, val_ids, T, cfg.data.val_max_tokens)
            out["val_loss"] = loss
            out["val_ppl"] = math.exp(min(loss, 50.0))
            out["val_bpc"] = loss / math.log(2) / chars_per_token
        return out

    trainer = Trainer(model, lm_loss, data, cfg.train, run_dir=run_dir, evaluate=evaluate, save_model=save_model,
                      resume=resume, dist_info=dist_info, device=device, log=log)
    try:
        result = trainer.fit()
    finally:
        distributed.teardown(dist_info)
    return result, model, tok, dist_info.is_main
