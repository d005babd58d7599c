"""Question answering data: a question and a passage in, an answer out, and where the answer lies in the passage.

The encoder reads one line, the question first::

    source   Where is the apple? ; Mary went to the kitchen. John got the apple. John went to the garden.
    answer   garden
    span     (77, 83): source[77:83] == "garden", the mention the extractive head must point at (None: no span)

Where the data comes from (`QADataConfig.dataset`):

    stories         the ten bAbI-style families of `qkv.data.stories`, `stories_per_family` each for training;
                    validation in the training world; test in held-out worlds; paraphrase in held-out wordings
    pydoc           questions about this Python's documentation (`qkv.data.pydoc_passages`), modules held out
    stories+pydoc   both (one model for all); pydoc's training questions repeated `pydoc_repeats` times
    src/tgt files   your own: one "question ; passage" per line in src, its answer in tgt (the first " ; " splits)

An answer's span is the supporting mention the generator recorded, or else (your files) the first place the answer
occurs in the passage; with the extractive head training (`span_weight > 0`) an answer that is nowhere in its
passage is an error for your files (the built-in families that answer yes/no, counts or lists have no span and
train only the generative head).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from functools import cached_property

from qkv.data.pydoc_passages import pydoc_examples
from qkv.data.stories import FAMILIES, NAMES, PLACES, story_examples
from qkv.data.translation import check_pair_files
from qkv.errors import QKVError

SEPARATOR = " ; "  # between the question and the passage
DATASETS = ("stories", "pydoc", "stories+pydoc")
# evaluation sets of the built-in data: name -> (where it comes from, split)
EVAL_SETS = {"val": "validation: training worlds and wordings", "test": "held-out worlds (new names and places)",
             "paraphrase": "held-out worlds and question wordings never trained on",
             "pydoc": "held-out standard-library modules"}


@dataclass
class QADataConfig:
    dataset: str = "stories+pydoc"  # stories, pydoc or stories+pydoc (used unless src/tgt files are given)
    stories_per_family: int = 2000  # training stories of each of the ten families
    eval_per_family: int = 100  # validation, test and paraphrase stories of each family
    pydoc_repeats: int = 3  # stories+pydoc: the pydoc training questions this many times per epoch
    # the share of training stories whose people and places are renamed with made-up words (`anonymize`), so that
    # a reader learns to find names it has never seen, not to recognise the training world's; 0 = off
    invented_names: float = 0.0
    src: str | None = None  # your own data: "question ; passage" per line (.gz or plain)
    tgt: str | None = None  # its answers, line-aligned
    val_src: str | None = None  # validation files for src/tgt runs (default: the last val_fraction of the pairs)
    val_tgt: str | None = None
    val_fraction: float = 0.05
    tokenizer: str = "bpe"  # "bpe": byte-level BPE learned on the training text; "char": one token per character
    vocab_size: int = 2000  # the BPE's vocabulary (specials + 256 bytes + merges)
    pool_batches: int = 100  # length bucketing: sort random pools of this many batches' worth of pairs
    max_answer_len: int = 40  # L: the longest span (in tokens) the extractive head may answer with
    seed: int = 0  # the stories drawn (the same seed always gives the same stories)

    def __post_init__(self):
        check_pair_files(self)
        if self.src is None and self.dataset not in DATASETS:
            raise ValueError(f"unknown QA dataset {self.dataset!r}; known: {', '.join(DATASETS)} (or give "
                             "--data.src FILE --data.tgt FILE)")
        if self.tokenizer not in ("bpe", "char"):
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}; choose bpe or char")
        if not 0.0 <= self.invented_names <= 1.0:
            raise ValueError(f"invented_names must be in [0, 1], got {self.invented_names}")
        for name in ("stories_per_family", "eval_per_family", "pydoc_repeats", "pool_batches", "max_answer_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class QAItem:
    """One question about one passage, as the encoder reads it."""

    question: str
    passage: str
    answers: tuple[str, ...]  # every right answer (SQuAD scores the best)
    family: str  # a story family, pydoc-<kind>, or "file"
    span: tuple[int, int] | None  # source[start:end] is the answer's mention; None: no span to point at

    @cached_property
    def source(self) -> str:  # read many times while preparing: joined once
        return join(self.question, self.passage)


def join(question: str, passage: str) -> str:
    """The encoder's line: ``question ; passage``; an empty question or passage is a QKVError."""
    question, passage = " ".join(question.split()), " ".join(passage.split())
    if not question:
        raise QKVError("the question is empty")
    if not passage:
        raise QKVError("the passage is empty")
    return f"{question}{SEPARATOR}{passage}"


def split_source(source: str) -> tuple[str, str]:
    """``question ; passage`` -> (question, passage), at the first separator, each stripped; QKVError if there is
    none or a side is empty."""
    if SEPARATOR not in source:
        raise QKVError(f"a QA source line is 'question{SEPARATOR}passage'; no '{SEPARATOR.strip()}' in "
                       f"{source[:60]!r}")
    question, passage = source.split(SEPARATOR, 1)
    join(question, passage)  # neither side empty
    return question.strip(), passage.strip()


SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def invented_word(rng: random.Random) -> str:
    """A made-up word of 2-3 syllables ("tavoki"): a name or a place no story world has."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def anonymize(ex, rng: random.Random):
    """The story `ex` with each of its training-world people and places renamed by a made-up word, the same one
    everywhere in the story (passage, question, answers), and its span moved with the text."""
    words = set(re.findall(r"[A-Za-z]+", ex.passage + " " + ex.question))
    mapping, used = {}, set()
    for word in sorted(words & (set(NAMES["train"]) | set(PLACES["train"]))):
        new = invented_word(rng)
        while new in used or new in words:
            new = invented_word(rng)
        used.add(new)
        mapping[word] = new.capitalize() if word[0].isupper() else new
    if not mapping:
        return ex
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")

    def sub(text: str) -> str:
        return pattern.sub(lambda m: mapping[m[1]], text)

    span = None
    if ex.span is not None:
        start = len(sub(ex.passage[:ex.span[0]]))
        span = (start, start + len(sub(ex.passage[ex.span[0]:ex.span[1]])))
    return replace(ex, passage=sub(ex.passage), question=sub(ex.question),
                   answers=tuple(sub(a) for a in ex.answers), span=span)


def _item(ex) -> QAItem:
    """A generated `Example` (passage offsets) as a QAItem (source offsets)."""
    question = " ".join(ex.question.split())
    span = None
    if ex.span is not None:
        at = len(question) + len(SEPARATOR)
        span = (ex.span[0] + at, ex.span[1] + at)
    item = QAItem(question, ex.passage, tuple(ex.answers), ex.family, span)
    if span is not None and item.source[span[0]:span[1]] != ex.passage[ex.span[0]:ex.span[1]]:
        raise AssertionError(f"span moved: {item.source!r} {span}")  # the passage must be read as generated
    return item


def builtin_items(cfg: QADataConfig, split: str) -> list[QAItem]:
    """The built-in data of one set: ``train``, ``val``, ``test``, ``paraphrase`` (stories) or ``pydoc`` (its test
    modules); a set the dataset lacks is empty."""
    stories, pydoc = "stories" in cfg.dataset, "pydoc" in cfg.dataset
    out: list[QAItem] = []
    if split not in ("train", *EVAL_SETS):
        raise QKVError(f"unknown QA set {split!r}; choose one of {', '.join(EVAL_SETS)}")
    if stories and split != "pydoc":
        n = cfg.stories_per_family if split == "train" else cfg.eval_per_family
        rng = random.Random(f"invented-{cfg.seed}")
        for family in FAMILIES:
            for ex in story_examples(family, split, n, cfg.seed):
                renamed = split == "train" and rng.random() < cfg.invented_names
                out.append(_item(anonymize(ex, rng) if renamed else ex))
    if pydoc and split in ("train", "val", "pydoc"):
        items = [_item(ex) for ex in pydoc_examples("test" if split == "pydoc" else split)]
        out += items * (cfg.pydoc_repeats if split == "train" and stories else 1)
    return out


def file_items(sources: list[str], answers: list[str], name: str, need_spans: bool) -> list[QAItem]:
    """Your own pairs: each source line split into question and passage, the answer's span its first occurrence in
    the passage (with `need_spans`, an answer that is not there is a QKVError naming the line)."""
    out = []
    for k, (src, ans) in enumerate(zip(sources, answers, strict=True), 1):
        try:
            question, passage = split_source(src)
        except QKVError as err:
            raise QKVError(f"{name}, line {k}: {err}") from None
        question, passage = " ".join(question.split()), " ".join(passage.split())  # as `join` writes the source
        ans = " ".join(ans.split())
        if not ans:
            raise QKVError(f"{name}, line {k}: the answer is empty")
        item = QAItem(question, passage, (ans,), "file", None)
        at = item.source.find(ans, len(question) + len(SEPARATOR))  # in the passage only
        if at < 0 and need_spans:
            raise QKVError(f"{name}, line {k}: the answer {ans[:40]!r} is not in the passage, so the extractive head "
                           "cannot point at it; set train.span_weight = 0 to train the generative head alone")
        if at >= 0:
            item = QAItem(question, passage, (ans,), "file", (at, at + len(ans)))
        out.append(item)
    return out


# ------------------------------------------------------------------------------------------------ tokens and spans
def token_offsets(tok, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Per text, the (start, end) characters of each of its tokens (a byte-level BPE token may take the space before
    a word with it); one token per character for a character tokenizer."""
    hf = getattr(tok, "hf_tokenizer", None)
    if hf is None:
        return [[(i, i + 1) for i in range(len(t))] for t in texts]
    return [list(e.offsets) for e in hf.encode_batch(texts, add_special_tokens=False)]


def first_token_from(offsets: list[tuple[int, int]], char: int) -> int:
    """The first token that reaches past character `char` (the passage's first token, when `char` is where the
    passage starts); len(offsets) if none does."""
    return next((k for k, (_, end) in enumerate(offsets) if end > char), len(offsets))


def token_span(offsets: list[tuple[int, int]], span: tuple[int, int]) -> tuple[int, int]:
    """Characters [start, end) -> the tokens (first, last inclusive) that cover them."""
    first = first_token_from(offsets, span[0])
    last = max(k for k, (start, _) in enumerate(offsets) if start < span[1])
    return first, last


def span_text(source: str, offsets: list[tuple[int, int]], first: int, last: int) -> str:
    """The text of tokens first..last of `source`, without the space a token carried before its word."""
    return source[offsets[first][0]:offsets[last][1]].strip()
