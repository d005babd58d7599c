"""Parallel text for translation: read line-aligned files, encode, and batch by token count.

Sources of sentence pairs:
- a named dataset, ``multi30k`` (task 1: ``{train,val,test_2016_flickr}.{en,de,fr}.gz``) with a direction
  ``de-en``, ``fr-en``, ``en-de`` or ``en-fr``;
- any two line-aligned text files, gzipped (``.gz``) or plain: ``--data.src FILE --data.tgt FILE``
  (plus ``--data.val_src/--data.val_tgt``, else the last `val_fraction` of the pairs validate).

Bad input is a one-line `QKVError`: a missing, empty or non-UTF-8 file; two files whose line counts differ
(the message names both counts); an unknown language pair.

Examples. Source ids are the sentence's tokens + EOS; the decoder reads BOS + tokens and predicts
tokens + EOS. **Too long for the context**: a sentence with more than ``max_seq_len - 1`` tokens is
truncated to that many (then EOS is appended, so every example fits); pairs with an empty side are
skipped. Both are counted and reported once by the recipe, never an error: a few overlong captions
should not stop a run.

Batching (`TranslationBatches`): every epoch is a fresh random permutation, cut into pools of
`pool_batches` batches' worth of pairs; each pool is sorted by length and cut into batches of at most
`batch_tokens` padded tokens (or a fixed number of sentences), and the batch order is shuffled. Similar
lengths share a batch, so little compute goes to padding, while the order stays random. The plan of an
epoch is a pure function of (seed, epoch), so the sampler's state is two integers and resume is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qkv.data.batching import EpochBatches
from qkv.data.files import read_text
from qkv.errors import QKVError

DIRECTIONS = ("de-en", "fr-en", "en-de", "en-fr")
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")


@dataclass
class TranslationDataConfig:
    dataset: str = "multi30k"  # a named parallel dataset (used unless src/tgt files are given)
    direction: str = "de-en"  # source-target language pair of the dataset: de-en, fr-en, en-de, en-fr
    src: str | None = None  # training source file (.gz or plain text), one sentence per line
    tgt: str | None = None  # its line-aligned target file
    val_src: str | None = None  # validation files for src/tgt runs (default: hold out val_fraction)
    val_tgt: str | None = None
    val_fraction: float = 0.05  # src/tgt runs without val files: the last 5% of the pairs validate
    vocab_size: int = 8000  # joint BPE learned on the training source + target text
    # token-count batches: pairs × longest side (source, or target + 1) ≤ batch_tokens;
    # None: fixed batches of train.batch_size sentences
    batch_tokens: int | None = None
    pool_batches: int = 100  # length bucketing: sort random pools of this many batches' worth of pairs
    max_train_pairs: int | None = None  # use only the first N training pairs (quick runs, tests)
    max_val_pairs: int | None = None  # validation loss on the first N pairs (None = all)
    bleu_val_pairs: int = 200  # full evaluations decode (greedy) the first N validation pairs for BLEU; 0 = off

    def __post_init__(self):
        check_pair_files(self)
        if self.src is None:
            if self.dataset != "multi30k":
                raise ValueError(f"unknown parallel dataset {self.dataset!r}; known: multi30k "
                                 "(or give --data.src FILE --data.tgt FILE)")
            parse_direction(self.direction, ValueError)
        for name in ("batch_tokens", "max_train_pairs", "max_val_pairs"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.pool_batches <= 0 or self.bleu_val_pairs < 0:
            raise ValueError("pool_batches must be positive and bleu_val_pairs >= 0")


def check_pair_files(cfg) -> None:
    """The settings every "pairs from your files" data config shares (src, tgt, val_src, val_tgt, val_fraction,
    vocab_size), checked: ValueError naming the first one that is wrong."""
    if (cfg.src is None) != (cfg.tgt is None):
        raise ValueError("give both src and tgt files (line-aligned), or neither")
    if (cfg.val_src is None) != (cfg.val_tgt is None):
        raise ValueError("give both val_src and val_tgt files, or neither")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.vocab_size <= 260:
        raise ValueError(f"vocab_size must be > 260 (4 specials + 256 bytes), got {cfg.vocab_size}")


def parse_direction(direction: str, error: type[Exception] = QKVError) -> tuple[str, str]:
    """``"de-en"`` -> ``("de", "en")``; an unknown pair raises `error` listing the valid ones."""
    if direction not in DIRECTIONS:
        raise error(f"unknown language pair {direction!r}; valid: {', '.join(DIRECTIONS)}")
    src, tgt = direction.split("-")
    return src, tgt


# ------------------------------------------------------------------------------------------------ reading
def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, gzipped or not, without line endings or outer whitespace.

    Blank lines inside the file are kept (they hold a place in a line-aligned pair of files).
    """
    text = read_text(path)
    lines = text.split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()  # the final newline does not start another line
    return [ln.strip() for ln in lines]


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    """Two line-aligned files -> (source lines, target lines); different line counts are a QKVError."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise QKVError(f"parallel files differ in length: {src_path} has {len(src):,} lines but {tgt_path} has "
                       f"{len(tgt):,}; they must be line-aligned")
    return src, tgt


def multi30k_paths(direction: str, split: str) -> tuple[Path, Path]:
    """(source file, target file) of a Multi30k split; the dataset is found or fetched by the registry."""
    from qkv.data.registry import resolve

    s, t = parse_direction(direction)
    if split not in MULTI30K_SPLITS:
        raise QKVError(f"unknown multi30k split {split!r}; valid: {', '.join(MULTI30K_SPLITS)}")
    folder = resolve("multi30k")
    return folder / f"{split}.{s}.gz", folder / f"{split}.{t}.gz"


def load_split(cfg: TranslationDataConfig, split: str) -> tuple[list[str], list[str], str]:
    """(source lines, target lines, description) of the "train" or "val" split of a data config."""
    if cfg.src is None:
        src, tgt = read_parallel(*multi30k_paths(cfg.direction, split))
        name = f"multi30k {cfg.direction} {split}"
    elif split == "val" and cfg.val_src is not None:
        src, tgt = read_parallel(cfg.val_src, cfg.val_tgt)
        name = f"{cfg.val_src} -> {cfg.val_tgt}"
    else:
        src, tgt = read_parallel(cfg.src, cfg.tgt)
        name = f"{cfg.src} -> {cfg.tgt}"
        if cfg.val_src is None:  # hold out the last val_fraction of the pairs
            if len(src) < 2:
                raise QKVError(f"{cfg.src}: {len(src)} line(s); need at least 2 to hold out validation pairs")
            cut = len(src) - max(1, int(round(len(src) * cfg.val_fraction)))
            src, tgt = (src[:cut], tgt[:cut]) if split == "train" else (src[cut:], tgt[cut:])
            name += f" ({split} part)"
    limit = cfg.max_train_pairs if split == "train" else cfg.max_val_pairs
    if limit is not None:
        src, tgt = src[:limit], tgt[:limit]
    return src, tgt, name


# ------------------------------------------------------------------------------------------------ encoding
def encode_lines(tok, lines: list[str]) -> list[list[int]]:
    """Token ids of every line (the Rust batch encoder when the tokenizer has one)."""
    hf = getattr(tok, "hf_tokenizer", None)
    if hf is not None:
        return [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)]
    return [tok.encode(line) for line in lines]


@dataclass
class Examples:
    src: list[list[int]]  # source tokens + EOS, each ≤ max_seq_len
    tgt: list[list[int]]  # target tokens (no BOS/EOS), each ≤ max_seq_len - 1
    truncated: int  # pairs with a side cut to fit the context
    skipped: int  # pairs with an empty side, left out
    index: list[int] = field(default_factory=list)  # the input line of each example (skipped lines have none)
    # per example, (target position t, source position s) links that batches carry as "align" (guided
    # alignment, `qkv.tasks.guided_alignment`); None: batches carry none
    links: list[list[tuple[int, int]]] | None = None


def make_examples(src_ids: list[list[int]], tgt_ids: list[list[int]], max_seq_len: int, eos_id: int,
                  skip_empty: bool = True) -> Examples:
    """Fit encoded pairs to the context (see the module docstring). Example, max_seq_len 4, eos 2:
    src [7, 8, 9, 10, 11], tgt [5] -> src [7, 8, 9, 2], tgt [5] (truncated 1)."""
    keep = max_seq_len - 1
    out = Examples([], [], 0, 0)
    for k, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True)):
        if skip_empty and (not s or not t):
            out.skipped += 1
            continue
        if len(s) > keep or len(t) > keep:
            out.truncated += 1
        out.src.append(list(s[:keep]) + [eos_id])
        out.tgt.append(list(t[:keep]))
        out.index.append(k)
    return out


def special_ids(tok) -> tuple[int, int, int]:
    """(pad, bos, eos) ids of a target tokenizer; QKVError if it lacks one."""
    ids = (tok.pad_id, tok.bos_id, tok.eos_id)
    if None in ids:
        raise QKVError("the tokenizer needs <pad>, <bos> and <eos> tokens for translation")
    return ids


def source_ids(tok, lines: list[str], max_seq_len: int) -> tuple[list[list[int]], int]:
    """Encoder inputs for translating `lines`: tokens (cut to max_seq_len - 1) + EOS; and how many were cut."""
    ids = encode_lines(tok, lines)
    cut = sum(len(s) > max_seq_len - 1 for s in ids)
    return [s[: max_seq_len - 1] + [tok.eos_id] for s in ids], cut


def collate(src: list[list[int]], tgt: list[list[int]], pad_id: int, bos_id: int, eos_id: int,
            links: list[list[tuple[int, int]]] | None = None) -> dict:
    """Pad a batch. Returns src (B, S), src_mask (B, S) bool (True = real), tgt_in (B, T) = BOS + target
    (padded with pad_id), tgt_out (B, T) = target + EOS (padded with -100, which the loss ignores); with
    `links` (per pair, (target position t, source position s) pairs) also align (B, T, S) bool, True at the
    links: row t is the decoder query that predicts tgt_out[t], column s the source token src[s]."""
    B = len(src)
    S, T = max(len(s) for s in src), max(len(t) for t in tgt) + 1
    src_t = torch.full((B, S), pad_id, dtype=torch.long)
    src_mask = torch.zeros((B, S), dtype=torch.bool)
    tgt_in = torch.full((B, T), pad_id, dtype=torch.long)
    tgt_out = torch.full((B, T), -100, dtype=torch.long)
    for b, (s, t) in enumerate(zip(src, tgt, strict=True)):
        src_t[b, : len(s)] = torch.tensor(s)
        src_mask[b, : len(s)] = True
        tgt_in[b, : len(t) + 1] = torch.tensor([bos_id] + t)
        tgt_out[b, : len(t) + 1] = torch.tensor(t + [eos_id])
    batch = {"src": src_t, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out}
    if links is not None:
        align = torch.zeros((B, T, S), dtype=torch.bool)
        for b, pairs in enumerate(links):
            if pairs:
                t_pos, s_pos = zip(*pairs, strict=True)
                align[b, list(t_pos), list(s_pos)] = True
        batch["align"] = align  # (B, T, S)
    return batch


def _cut(order: np.ndarray, cost: np.ndarray, batch_tokens: int | None, batch_sentences: int | None
         ) -> list[np.ndarray]:
    """Split `order` (indices sorted by length) into consecutive batches: each holds `batch_sentences`
    pairs, or as many as keep (pairs × longest cost) ≤ batch_tokens (at least one)."""
    if batch_tokens is None:
        return [order[i : i + batch_sentences] for i in range(0, len(order), batch_sentences)]
    batches, start, longest = [], 0, 0
    for j, idx in enumerate(order):
        longest_with = max(longest, int(cost[idx]))
        if j > start and longest_with * (j - start + 1) > batch_tokens:
            batches.append(order[start:j])
            start, longest_with = j, int(cost[idx])
        longest = longest_with
    if start < len(order):
        batches.append(order[start:])
    return batches


class TranslationBatches(EpochBatches):
    """Endless, length-bucketed training batches (dicts from `collate`), resumable exactly.

    Give `batch_tokens` (token-count batches: pairs × max(source, target + 1) length ≤ batch_tokens) or
    `batch_sentences` (a fixed number of pairs): the global batch of a step. With `world_size` > 1 each
    rank takes its share of the rows of every batch (`EpochBatches`).
    """

    def __init__(self, ex: Examples, pad_id: int, bos_id: int, eos_id: int, *, batch_tokens: int | None = None,
                 batch_sentences: int | None = None, pool_batches: int = 100, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if (batch_tokens is None) == (batch_sentences is None):
            raise ValueError("give exactly one of batch_tokens and batch_sentences")
        if not ex.src:
            raise QKVError("no training pairs left (all empty?)")
        self.ex, self.pad_id, self.bos_id, self.eos_id = ex, pad_id, bos_id, eos_id
        self.batch_tokens, self.batch_sentences = batch_tokens, batch_sentences
        self.src_len = np.array([len(s) for s in ex.src])
        self.tgt_len = np.array([len(t) + 1 for t in ex.tgt])
        self.cost = np.maximum(self.src_len, self.tgt_len)  # padded positions per pair on the longer side
        if batch_tokens is not None and batch_tokens < self.cost.max():
            raise QKVError(f"batch_tokens {batch_tokens} is smaller than the longest pair ({self.cost.max()} tokens)")
        per_batch = batch_sentences or max(1, batch_tokens // max(1, int(self.cost.mean())))
        self.n_examples, self.pool = len(ex.src), pool_batches * per_batch
        self._start(seed, rank, world_size)

    def _pool_batches(self, pool: np.ndarray) -> list[np.ndarray]:
        pool = pool[np.lexsort((self.tgt_len[pool], self.src_len[pool]))]  # by source, then target length
        return _cut(pool, self.cost, self.batch_tokens, self.batch_sentences)

    def _collate(self, idx: np.ndarray) -> dict:
        links = [self.ex.links[i] for i in idx] if self.ex.links is not None else None
        return collate([self.ex.src[i] for i in idx], [self.ex.tgt[i] for i in idx], self.pad_id, self.bos_id,
                       self.eos_id, links)


def eval_batches(ex: Examples, pad_id: int, bos_id: int, eos_id: int, batch_tokens: int = 4000):
    """Deterministic batches covering every pair once (sorted by length), for validation loss."""
    cost = np.maximum(np.array([len(s) for s in ex.src]), np.array([len(t) + 1 for t in ex.tgt]))
    order = np.argsort(cost, kind="stable")
    for idx in _cut(order, cost, max(batch_tokens, int(cost.max())), None):
        yield collate([ex.src[i] for i in idx], [ex.tgt[i] for i in idx], pad_id, bos_id, eos_id)
