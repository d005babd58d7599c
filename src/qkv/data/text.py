"""Text corpora for language modelling: read, check, tokenize once, keep the ids in a memory map.

A corpus is a named dataset (see `qkv.data.registry`), a text file, or a folder of text files.
Bad input (missing, empty, binary or non-UTF-8) is a one-line `QKVError`. Token ids are written once
to ``<run_dir>/data/{train,val}.bin`` (uint16, or uint32 for vocabularies over 65,536) and read back
with ``np.memmap``; the split is nanoGPT's: the first 90% of tokens train, the last 10% validate — except for
``english`` (`qkv.data.english`), whose documents are split whole: ``val_fraction`` is then the share of
documents held out, and the two sides are read (`load_split`) and tokenized separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from qkv.data.batching import GeneratorBatches
from qkv.data.files import read_text
from qkv.data.registry import DATASETS, resolve, stdlib_files
from qkv.errors import QKVError
from qkv.runs import atomic_write_bytes


@dataclass
class TextDataConfig:
    """The ``[data]`` section of a language-model run."""

    source: str = "tinyshakespeare"  # a dataset name (`qkv data list`), a text file or a folder of text files
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 4096  # BPE only: size of the learned vocabulary
    # a tokenizer.json (or a folder holding one, e.g. a tokenizer stage's output) used as it is instead of training
    # one; `tokenizer` and `vocab_size` are then not used
    tokenizer_file: str | None = None
    # the last 10% of tokens validate (nanoGPT's contiguous split); english: the share of documents held out
    val_fraction: float = 0.1
    val_max_tokens: int | None = None  # cap the full-pass validation to the first N val tokens (None = all)
    # read only the first N characters of the corpus (quick runs, tests); english: N in all, each side its share
    max_chars: int | None = None

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.vocab_size <= 4:
            raise ValueError(f"vocab_size must be > 4, got {self.vocab_size}")
        if self.max_chars is not None and self.max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")
        if self.val_max_tokens is not None and self.val_max_tokens <= 0:
            raise ValueError(f"val_max_tokens must be positive, got {self.val_max_tokens}")
        if self.tokenizer_file is not None and not self.tokenizer_file.strip():
            raise ValueError("tokenizer_file must be a path (or left out), got an empty string")


TEXT_SUFFIXES = {".txt", ".py", ".md", ".rst", ".text", ".csv", ".tsv", ".json", ".jsonl", ".html", ".xml", ".c",
                 ".h", ".js", ".ts", ".java", ".go", ".rs", ".toml", ".yaml", ".yml", ".tex", ".sh"}


def _read_folder(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise QKVError(f"{folder}: no text files ({', '.join(sorted(TEXT_SUFFIXES)[:6])}, …) in this folder")
    return "\n\n".join(read_text(p) for p in files)


def _read_pystdlib() -> str:
    parts = []
    for p in stdlib_files():
        try:
            parts.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue  # a handful of legacy-encoded modules; the corpus is what decodes. Not `read_text`:
            # that refuses the empty __init__.py files, which this corpus has always kept (as "\n\n")
    return "\n\n".join(parts)


def load_corpus(source: str, max_chars: int | None = None) -> str:
    """The whole text of a dataset name, a file or a folder (optionally only its first `max_chars`)."""
    if source == "pystdlib":
        text = _read_pystdlib()
    elif source == DOCUMENT_SPLIT_SOURCE:
        from qkv.data.english import english_documents, join_documents

        text = join_documents(english_documents())
    elif source in DATASETS:
        text = read_text(resolve(source) / "input.txt")
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            text = _read_folder(path)
        elif path.is_file():
            text = read_text(path)
        else:
            raise QKVError(f"no dataset or file named {source!r}; datasets: {', '.join(DATASETS)}")
    if max_chars is not None:
        text = text[:max_chars]
    if not text.strip():
        raise QKVError(f"{source}: no text")
    return text


DOCUMENT_SPLIT_SOURCE = "english"  # the corpus split by documents (`qkv.data.english`), not by tokens


def load_split(source: str, val_fraction: float, max_chars: int | None = None) -> tuple[str, str] | None:
    """(train text, validation text) of a corpus split by documents (``english``; `max_chars` in all, each side its
    share), or None for a corpus split by tokens (`split_ids`)."""
    if source != DOCUMENT_SPLIT_SOURCE:
        return None
    from qkv.data.english import english_split

    return english_split(val_fraction, max_chars)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def write_tokens(path: Path, ids, vocab_size: int) -> None:
    atomic_write_bytes(path, np.asarray(ids, dtype=token_dtype(vocab_size)).tobytes())


def read_tokens(path: Path, vocab_size: int) -> np.ndarray:
    if not path.is_file():
        raise QKVError(f"token file missing: {path}")
    return np.memmap(path, dtype=token_dtype(vocab_size), mode="r")


def split_ids(n: int, val_fraction: float) -> int:
    """Index where validation starts: the first (1 - val_fraction) of the tokens train."""
    return int(n * (1.0 - val_fraction))


class RandomWindows(GeneratorBatches):
    """Batches of windows at random offsets: {"idx": x, "targets": y}, y = x shifted by one token (nanoGPT's
    get_batch).

    All randomness comes from one `torch.Generator`, whose state is the data position for exact resume.
    Every DDP rank draws the same global batch and keeps its own rows, so the global batch — and the
    loss — equals a single-process run's.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        if len(tokens) <= block_size + 1:
            raise QKVError(f"only {len(tokens)} tokens: need more than block_size + 1 = {block_size + 1}")
        if batch_size % world_size:
            raise QKVError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.rank, self.world_size = rank, world_size
        self._start(seed)

    def next_batch(self) -> dict:
        offsets = torch.randint(len(self.tokens) - self.block_size - 1, (self.batch_size,), generator=self.generator)
        share = self.batch_size // self.world_size
        offsets = offsets[self.rank * share : (self.rank + 1) * share].numpy()  # this rank's rows
        idx = offsets[:, None] + np.arange(self.block_size + 1)[None, :]  # (B, T+1)
        chunk = torch.from_numpy(self.tokens[idx].astype(np.int64))  # (B, T+1)
        return {"idx": chunk[:, :-1], "targets": chunk[:, 1:]}  # (B, T) each



def full_pass_windows(tokens: np.ndarray, block_size: int, batch_size: int, max_tokens: int | None = None):
    """Non-overlapping windows covering the split once (the last partial window included), as batches
    {"idx": (B, T), "targets": (B, T)} with -100 where a short window is padded."""
    n = len(tokens) - 1 if max_tokens is None else min(len(tokens) - 1, max_tokens)
    starts = list(range(0, n, block_size))
    for i in range(0, len(starts), batch_size):
        group = starts[i : i + batch_size]
        lengths = [min(block_size, n - s) for s in group]
        T = max(lengths)
        x = torch.zeros(len(group), T, dtype=torch.long)
        y = torch.full((len(group), T), -100, dtype=torch.long)  # -100: padding, ignored by the loss
        for r, (s, L) in enumerate(zip(group, lengths, strict=True)):
            chunk = torch.from_numpy(tokens[s : s + L + 1].astype(np.int64))
            x[r, :L], y[r, :L] = chunk[:-1], chunk[1:]
        yield {"idx": x, "targets": y}
