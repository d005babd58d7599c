"""Conversations for chat fine-tuning: read, validate, split by question, and batch with padding.

Sources (``data.source``):
- ``qa-skills`` and ``pydoc-qa``: built in, generated on this machine (`qkv.data.qa_skills`), no download;
- ``skills``: built in, every skill in many phrasings, with held-out phrasings (the test split) and held-out
  values (a fourth split, ``values``) (`qkv.data.skills`);
- a ``.jsonl`` file, one conversation per line in the format the ecosystem uses::

      {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."}]}

  (other keys on a line or a message are ignored);
- a ``.csv`` / ``.tsv`` file with two columns ``question,answer`` (one single-turn conversation per row;
  a first row that reads ``question,answer`` is a header and skipped).

Validation — every problem is a one-line `QKVError` that names the file and line, and nothing is skipped
silently: a malformed JSON line **fails** the run (``data.jsonl:7: malformed JSON (...)``); roles must be
an optional ``system`` message first, then ``user`` and ``assistant`` alternating, starting with ``user``
and ending with ``assistant``; user and assistant turns may not be empty (whitespace only counts as
empty); no content may contain a template token such as ``<|end|>``. A conversation longer than the
context is handled by the recipe after tokenizing: an error by default, or dropped and counted with
``data.too_long = "drop"``.

Splits are **by question**: a conversation goes to train, val or test by a hash of its key (the first
user message; for pydoc-qa the function's name), so every copy of a question lands in the same split and
test questions are unseen in training. The split of a key never depends on the order or size of the data.

Batching (`ChatBatches`): each epoch is a random permutation cut into pools; a pool is sorted by length and
cut into batches of `batch_size` conversations, padded to the longest one in the batch (not to the
context), and the batch order is shuffled. Inputs are padded with `pad_id`, targets with -100; padding
sits on the right, so under the causal mask it never changes a real position. The plan is a pure
function of (seed, epoch): the sampler's state is two integers and resume is exact.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from qkv.data.batching import EpochBatches
from qkv.data.chat_template import render, targets_from
from qkv.data.conversations import Conversation, conversation, split_of
from qkv.data.files import read_text
from qkv.errors import QKVError

BUILTIN_SOURCES = ("qa-skills", "pydoc-qa", "skills")
SPLITS = ("train", "val", "test")


@dataclass
class ChatDataConfig:
    source: str = "qa-skills"  # "qa-skills", "pydoc-qa", "skills", or a .jsonl / .csv / .tsv file of conversations
    val_source: str | None = None  # a file of validation conversations (default: hold out by question hash)
    test_source: str | None = None  # a file of test conversations for exact match (default: hold out too)
    val_fraction: float = 0.1  # share of the question space held out for validation (by hash of the question)
    test_fraction: float = 0.1  # ... and for the exact-match test
    seed: int = 0  # qa-skills: the generator's seed (the same seed gives the same conversations)
    train_size: int = 20000  # qa-skills: training conversations to generate
    val_size: int = 400  # qa-skills: validation conversations
    test_size: int = 400  # qa-skills: test conversations (distinct, unseen questions)
    followup_prob: float = 0.5  # qa-skills: share of conversations that go on with follow-up turns
    max_followups: int = 2  # qa-skills: follow-up turns per conversation, at most
    skills: tuple[str, ...] = ()  # qa-skills: first-question skills (add, sub, reverse, length, convert); skills:
    # arithmetic, compare, reverse, count, spell, explain; () = all
    values_size: int = 300  # skills: conversations of held-out values (training phrasings)
    rl_size: int = 0  # skills: reinforcement prompts with wider values (numbers to 999); 0 = the training split
    too_long: Literal["error", "drop"] = "error"  # a conversation longer than the context: fail, or drop + count
    pool_batches: int = 50  # length bucketing: sort random pools of this many batches' worth of conversations
    em_conversations: int = 200  # full evaluations decode the first N validation conversations for exact match

    def __post_init__(self):
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave some questions for training")
        if self.train_size <= 0 or self.val_size <= 0 or min(self.test_size, self.values_size, self.rl_size) < 0:
            raise ValueError("train_size and val_size must be positive, test_size, values_size and rl_size >= 0")
        if self.rl_size and self.source != "skills":
            raise ValueError("rl_size is for the skills source; a file's RL prompts are its training conversations")
        if not 0.0 <= self.followup_prob <= 1.0:
            raise ValueError(f"followup_prob must be in [0, 1], got {self.followup_prob}")
        from qkv.data.qa_skills import SKILLS as QA_SKILLS
        from qkv.data.skills import SKILLS as PHRASED_SKILLS

        valid = PHRASED_SKILLS if self.source == "skills" else QA_SKILLS
        if any(s not in valid for s in self.skills):
            raise ValueError(f"unknown skill in {list(self.skills)}; valid: {', '.join(valid)}")
        if self.max_followups < 0 or self.pool_batches <= 0 or self.em_conversations < 0:
            raise ValueError("max_followups and em_conversations must be >= 0, pool_batches positive")
        if self.source not in BUILTIN_SOURCES:
            _file_kind(self.source, ValueError)
        elif self.val_source or self.test_source:
            raise ValueError(f"val_source/test_source are for file sources; {self.source} makes its own splits")
        for name in ("val_source", "test_source"):
            if getattr(self, name):
                _file_kind(getattr(self, name), ValueError)


# ------------------------------------------------------------------------------------------- reading
def _file_kind(source: str, error: type[Exception] = QKVError) -> str:
    suffix = Path(source).suffix.lower()
    if suffix not in (".jsonl", ".csv", ".tsv"):
        raise error(f"chat data source {source!r} is neither a built-in set ({', '.join(BUILTIN_SOURCES)}) "
                    "nor a .jsonl, .csv or .tsv file")
    return suffix[1:]


def read_jsonl(path: str | Path) -> list[Conversation]:
    """Conversations of a JSONL file; the first bad line fails with its line number. Blank lines are skipped."""
    path = Path(path).expanduser()
    out = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise QKVError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict) or "messages" not in record:
            raise QKVError(f'{where}: expected an object {{"messages": [...]}}')
        out.append(conversation(record["messages"], where))
    if not out:
        raise QKVError(f"{path}: no conversations")
    return out


def read_qa_table(path: str | Path) -> list[Conversation]:
    """Single-turn conversations from a two-column ``question,answer`` CSV (or TSV) file."""
    path = Path(path).expanduser()
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(read_text(path)), delimiter=delimiter)
    out = []
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row or not any(c.strip() for c in row):
                continue
            if not out and [c.strip().lower() for c in row] == ["question", "answer"]:
                continue  # header
            if len(row) != 2:
                raise QKVError(f"{where}: expected 2 columns (question{delimiter!r}answer), got {len(row)}")
            msgs = [{"role": "user", "content": row[0].strip()}, {"role": "assistant", "content": row[1].strip()}]
            out.append(conversation(msgs, where))
    except csv.Error as e:
        raise QKVError(f"{path}:{reader.line_num}: malformed {path.suffix[1:].upper()} ({e})") from None
    if not out:
        raise QKVError(f"{path}: no question/answer rows")
    return out


def read_conversations(source: str) -> list[Conversation]:
    """Conversations of a .jsonl, .csv or .tsv file."""
    kind = _file_kind(source)
    return read_jsonl(source) if kind == "jsonl" else read_qa_table(source)


# ------------------------------------------------------------------------------------------- splits
def load_chat_splits(cfg: ChatDataConfig) -> dict[str, list[Conversation]]:
    """{"train": [...], "val": [...], "test": [...]} for a data config (test may be empty; the skills source adds
    "values")."""
    if cfg.source == "qa-skills":
        from qkv.data.qa_skills import qa_skills

        sizes = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}
        return {s: qa_skills(s, sizes[s], seed=cfg.seed, val_fraction=cfg.val_fraction,
                             test_fraction=cfg.test_fraction, followup_prob=cfg.followup_prob,
                             max_followups=cfg.max_followups, skills=cfg.skills) for s in SPLITS}
    if cfg.source == "skills":
        from qkv.data.skills import SKILLS, skill_conversations

        sizes = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size, "values": cfg.values_size,
                 **({"rl": cfg.rl_size} if cfg.rl_size else {})}
        return {s: skill_conversations(s, n, seed=cfg.seed, skills=cfg.skills or SKILLS) for s, n in sizes.items()}
    if cfg.source == "pydoc-qa":
        from qkv.data.qa_skills import pydoc_qa

        return {s: pydoc_qa(s, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction) for s in SPLITS}
    given = {"val": cfg.val_source, "test": cfg.test_source}
    fractions = {s: (0.0 if given[s] else getattr(cfg, f"{s}_fraction")) for s in ("val", "test")}
    out: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    for c in read_conversations(cfg.source):
        out[split_of(c.key, fractions["val"], fractions["test"])].append(c)
    for s, path in given.items():
        if path:
            out[s] = read_conversations(path)
    for s in ("train", "val"):
        if not out[s]:
            raise QKVError(f"{cfg.source}: no {s} conversations after splitting by question "
                           f"(give more data, or data.{s}_source FILE)" if s == "val" else
                           f"{cfg.source}: every question went to val/test; lower the fractions")
    return out


# ------------------------------------------------------------------------------------------- batches
def collate_chat(inputs: list[list[int]], targets: list[list[int]], pad_id: int) -> dict:
    """Right-pad a batch to its longest member: idx (B, L) with pad_id, targets (B, L) with -100, and mask
    (B, L), True at the real (unpadded) input tokens."""
    B, L = len(inputs), max(len(x) for x in inputs)
    idx = torch.full((B, L), pad_id, dtype=torch.long)
    tgt = torch.full((B, L), -100, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.bool)
    for b, (x, y) in enumerate(zip(inputs, targets, strict=True)):
        idx[b, : len(x)] = torch.tensor(x, dtype=torch.long)
        tgt[b, : len(y)] = torch.tensor(y, dtype=torch.long)
        mask[b, : len(x)] = True
    return {"idx": idx, "targets": tgt, "mask": mask}


class ChatBatches(EpochBatches):
    """Endless, length-bucketed, padded training batches (dicts from `collate_chat`); resumable exactly.

    With `world_size` > 1 each rank takes its share of the rows of every batch (`EpochBatches`).
    """

    def __init__(self, inputs: list[list[int]], targets: list[list[int]], batch_size: int, pad_id: int, *,
                 pool_batches: int = 50, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not inputs:
            raise QKVError("no training conversations")
        self.inputs, self.targets, self.batch_size, self.pad_id = inputs, targets, batch_size, pad_id
        self.lengths = np.array([len(x) for x in inputs])
        self.n_examples, self.pool = len(inputs), pool_batches * batch_size
        self._start(seed, rank, world_size)

    def _pool_batches(self, pool: np.ndarray) -> list[np.ndarray]:
        pool = pool[np.argsort(self.lengths[pool], kind="stable")]
        return [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]

    def _collate(self, idx: np.ndarray) -> dict:
        return collate_chat([self.inputs[i] for i in idx], [self.targets[i] for i in idx], self.pad_id)


def eval_chat_batches(inputs: list[list[int]], targets: list[list[int]], pad_id: int, batch_size: int = 64):
    """Deterministic padded batches covering every conversation once (sorted by length)."""
    order = np.argsort(np.array([len(x) for x in inputs]), kind="stable")
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield collate_chat([inputs[j] for j in idx], [targets[j] for j in idx], pad_id)


# ------------------------------------------------------------------------------------------- encoding
@dataclass
class ChatExamples:
    inputs: list[list[int]]  # rendered conversation minus its last token, each ≤ max_seq_len
    targets: list[list[int]]  # next tokens, -100 where there is no loss
    conversations: list[Conversation]  # the conversations kept, in the same order
    dropped: int  # conversations longer than the context, left out (data.too_long = "drop")


def encode_conversations(convs: list[Conversation], tok, max_seq_len: int, *, answer_only: bool = True,
                         too_long: str = "error") -> ChatExamples:
    """Render and encode conversations for next-token training; too long: QKVError or drop (see config)."""
    out = ChatExamples([], [], [], 0)
    for c in convs:
        try:
            ids, mask = render(c.messages, tok)
        except QKVError as e:
            raise QKVError(f"{c.where}: {e}") from None
        if len(ids) - 1 > max_seq_len:
            if too_long == "drop":
                out.dropped += 1
                continue
            raise QKVError(f"{c.where}: the conversation is {len(ids)} tokens, longer than the context "
                           f"(model.max_seq_len {max_seq_len} + 1); raise max_seq_len or set data.too_long = \"drop\"")
        x, y = targets_from(ids, mask, answer_only)
        out.inputs.append(x)
        out.targets.append(y)
        out.conversations.append(c)
    return out
