"""Question answering (``task = "qa"``): ``question ; passage`` -> the answer, by two heads on one encoder.

``qkv train --preset qa-stories``. The reader (`qkv.models.reader`) is the translation encoder–decoder with a span
head on its encoder, and one loss trains both ways of answering:

    generative   the decoder writes the answer (T5): label-smoothed cross-entropy per answer token
    extractive   start and end logits over the encoder's states (BiDAF, BERT): cross-entropy of the gold start and
                 of the gold end among the passage's positions, for every example whose answer is a span

The step's loss is the mean over its terms: each answer token's NLL and, for each example with a span,
``span_weight · (CE_start + CE_end) / 2``, so a step's mean is the same however its rows are split between
micro-batches and processes. The tokens are byte-level BPE (``data.tokenizer = "bpe"``, learned on the training text)
or characters (``"char"``); the answer's characters map to the tokens that cover them by the tokenizer's offsets
(`qkv.data.qa.token_span`), and the extractive answer back to the characters of its tokens.

Data (`qkv.data.qa`): bAbI-style story families and questions about the standard library's documentation, built
on this machine, or your own "question ; passage" and answer files (``--data.src --data.tgt``).

Logged: the training loss; the validation answer NLL (``val_loss``); on full evaluations the exact match of both
heads on the first ``eval_pairs`` validation questions (``val_em``, ``val_span_em``).

A trained run answers (``qkv answer RUN --passage FILE "question?"``, `QARun.answer`), turns a source line into its
answer (``qkv translate``, the playground's source-to-text page), and scores itself per family with the SQuAD v1.1
rules (``qkv eval RUN``, `QARun.evaluate`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F

from qkv.data.qa import (
    EVAL_SETS,
    SEPARATOR,
    QADataConfig,
    QAItem,
    builtin_items,
    file_items,
    first_token_from,
    join,
    span_text,
    split_source,
    token_offsets,
    token_span,
)
from qkv.data.translation import (
    Examples,
    TranslationBatches,
    collate,
    encode_lines,
    make_examples,
    read_parallel,
    special_ids,
)
from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import corpus_loss
from qkv.generation.seq2seq import SequenceDecoding, translate_lines
from qkv.generation.spans import best_spans
from qkv.models.reader import Reader, ReaderConfig
from qkv.runs import TOKENIZER_FILE
from qkv.tasks.base import State, Task, last_eval
from qkv.tasks.capabilities import Capability, SpanScores
from qkv.tasks.text_to_text import TextToTextRun, load_tokenizers
from qkv.training.config import TrainConfig
from qkv.training.losses import smoothed_loss

Head = Literal["generative", "extractive"]
HEADS = ("generative", "extractive")


@dataclass
class QATrainConfig(TrainConfig):
    """`TrainConfig` plus the loss settings of this task."""

    label_smoothing: float = 0.0  # ε of the generative head's cross-entropy
    span_weight: float = 1.0  # weight of the extractive head's loss per example with a span; 0 = generative only
    eval_pairs: int = 300  # full evaluations answer the first N validation questions with both heads; 0 = off

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.span_weight < float("inf"):
            raise ValueError(f"span_weight must be a finite number >= 0, got {self.span_weight}")
        if self.eval_pairs < 0:
            raise ValueError(f"eval_pairs must be >= 0, got {self.eval_pairs}")


@dataclass
class QARunConfig:
    task: Literal["qa"] = "qa"
    model: ReaderConfig = field(default_factory=lambda: ReaderConfig(max_seq_len=320))
    data: QADataConfig = field(default_factory=QADataConfig)
    train: QATrainConfig = field(default_factory=QATrainConfig)
    # answers are short whatever the passage's length: a fixed limit, not one that grows with the source
    decode: SequenceDecoding = field(default_factory=lambda: SequenceDecoding(beam=1, max_len_a=0.0, max_len_b=64))


def qa_tokenizer(items: list[QAItem], kind: str = "char", vocab_size: int = 2000):
    """"bpe": byte-level BPE learned on the training sources and answers; "char": one id per character (printable
    ASCII and every character of the training text, <unk>), with <pad>/<bos>/<eos>."""
    from qkv.tokenizers import train_bpe, train_char

    if kind == "bpe":
        return train_bpe([it.source for it in items] + [a for it in items for a in it.answers], vocab_size=vocab_size)
    text = "".join(it.source + "".join(it.answers) for it in items)
    tok = train_char(text + string.printable, unk=True)
    tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
    return tok


@dataclass
class QAData:
    train: list[QAItem]
    val: list[QAItem]
    train_name: str
    val_name: str


@dataclass
class QAState(State):
    data: QAData | None = None
    tok: object = None
    pad: int = 0
    bos: int = 0
    eos: int = 0
    train_ex: Examples | None = None
    val_ex: Examples | None = None
    spans: list | None = None  # per training example: (passage start, start, end) or None (`span_targets`)


def read_items(d: QADataConfig, split: str, need_spans: bool) -> tuple[list[QAItem], str]:
    """(the items of "train" or "val", their name) of a data config: the built-in data or your files (whose errors
    name the line of the file)."""
    if d.src is None:
        return builtin_items(d, split), f"{d.dataset} {split}"
    if split == "val" and d.val_src is not None:
        return file_items(*read_parallel(d.val_src, d.val_tgt), d.val_src, need_spans), f"{d.val_src} -> {d.val_tgt}"
    items = file_items(*read_parallel(d.src, d.tgt), d.src, need_spans)
    name = f"{d.src} -> {d.tgt}"
    if d.val_src is not None:
        return items, name
    if len(items) < 2:
        raise QKVError(f"{d.src}: {len(items)} line(s); need at least 2 to hold out validation pairs")
    cut = len(items) - max(1, int(round(len(items) * d.val_fraction)))  # the last val_fraction validate
    return (items[:cut], f"{name} (train part)") if split == "train" else (items[cut:], f"{name} (val part)")


def spread(items: list, n: int | None) -> list:
    """`n` items taken at even steps through `items` (every family, not the first one's); all with n None."""
    return items[:: max(1, len(items) // n)][:n] if n else items


def span_targets(items: list[QAItem], ex: Examples, tok) -> list[tuple[int, int, int] | None]:
    """Per example: (the passage's first token, the answer's first token, its last token), or None where the answer
    has no span or its span was cut from the context."""
    out = []
    offsets = token_offsets(tok, [items[k].source for k in ex.index])
    for row, (k, off) in enumerate(zip(ex.index, offsets, strict=True)):
        it = items[k]
        S = len(ex.src[row]) - 1  # the real tokens the encoder reads, before its EOS
        at = first_token_from(off, len(it.question) + len(SEPARATOR))
        if it.span is None:
            out.append(None)
            continue
        first, last = token_span(off, it.span)
        out.append((at, first, last) if last < S else None)
    return out


class QABatches(TranslationBatches):
    """Translation's length-bucketed batches plus each row's passage start and gold span (-100: none)."""

    def __init__(self, ex: Examples, spans: list, *args, **kwargs):
        super().__init__(ex, *args, **kwargs)
        self.spans = spans

    def _collate(self, idx) -> dict:
        return qa_collate(self.ex, self.spans, list(idx), self.pad_id, self.bos_id, self.eos_id)


def qa_collate(ex: Examples, spans: list, idx: list[int], pad: int, bos: int, eos: int) -> dict:
    """`collate` of the rows `idx`, with passage_at (B,), start (B,) and end (B,) (-100 where there is no span)."""
    batch = collate([ex.src[i] for i in idx], [ex.tgt[i] for i in idx], pad, bos, eos)
    rows = [spans[i] or (0, -100, -100) for i in idx]
    for key, col in (("passage_at", 0), ("start", 1), ("end", 2)):
        batch[key] = torch.tensor([r[col] for r in rows])  # (B,)
    return batch


def passage_positions(src_mask: torch.Tensor, passage_at: torch.Tensor) -> torch.Tensor:
    """(B, S) True at the passage's tokens: from passage_at up to, not including, the EOS."""
    S = src_mask.size(1)
    pos = torch.arange(S, device=src_mask.device)[None, :]  # (1, S)
    length = src_mask.sum(dim=1, keepdim=True)  # (B, 1): real tokens, the EOS last
    return (pos >= passage_at[:, None]) & (pos < length - 1)


def reader_loss(model, batch: dict, eps: float, span_weight: float):
    """(the mean over answer tokens and span rows, info): see the module docstring."""
    out = model(batch["src"], batch["src_mask"], batch["tgt_in"], spans=span_weight > 0)
    smoothed, nll, n = smoothed_loss(out.logits, batch["tgt_out"], eps)  # means over the n answer tokens
    smoothed_total = smoothed * n
    info = {"tokens": int(batch["src_mask"].sum()) + n, "nll": (nll.item() * n, n)}
    if span_weight == 0:
        return smoothed_total / n, info
    has = batch["start"] >= 0  # (B,)
    rows = int(has.sum())
    if not rows:
        return smoothed_total / n, info
    allowed = passage_positions(batch["src_mask"], batch["passage_at"])[has]  # (R, S)
    start = out.start_logits[has].float().masked_fill(~allowed, float("-inf"))  # (R, S)
    end = out.end_logits[has].float().masked_fill(~allowed, float("-inf"))
    ce = F.cross_entropy(start, batch["start"][has], reduction="sum") + \
        F.cross_entropy(end, batch["end"][has], reduction="sum")
    info["span_ce"] = (ce.item() / 2, rows)
    return (smoothed_total + span_weight * ce / 2) / (n + rows), info


class QATask(Task):
    name = "qa"
    config_class = QARunConfig
    fitted_model_fields = ("vocab_size", "pad_id")
    data_option = "dataset"

    def read_data(self) -> QAData:
        d, need = self.cfg.data, self.cfg.train.span_weight > 0
        train, train_name = read_items(d, "train", need)
        val, val_name = read_items(d, "val", need)
        if not train:
            raise QKVError(f"{train_name}: no training questions")
        if not val:
            raise QKVError(f"{val_name}: no validation questions")
        return QAData(train, val, train_name, val_name)

    def make_tokenizers(self, data: QAData):
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tok = qa_tokenizer(data.train, self.cfg.data.tokenizer, self.cfg.data.vocab_size)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return tok

    def load_tokenizers(self, data: QAData):
        return load_tokenizers(self.ctx.run_dir)[0]  # one joint tokenizer

    def resolve(self, data: QAData, tok) -> QARunConfig:
        if self.ctx.resume:
            return self.cfg
        return replace(self.cfg, model=replace(self.cfg.model, vocab_size=tok.vocab_size, pad_id=tok.pad_id))

    def prepare(self, cfg: QARunConfig, data: QAData, tok) -> QAState:
        ctx, T = self.ctx, cfg.model.max_seq_len
        pad, bos, eos = special_ids(tok)
        exs = {}
        for name, items in (("training", data.train), ("validation", data.val)):
            ex = make_examples(encode_lines(tok, [it.source for it in items]),
                               encode_lines(tok, [it.answers[0] for it in items]), T, eos)
            spans = span_targets(items, ex, tok)
            lost = sum(it.span is not None for it in items) - sum(s is not None for s in spans)
            if ex.truncated:
                ctx.say(f"note: {ex.truncated:,} of {len(items):,} {name} questions are longer than the context "
                        f"({T} tokens) and were cut; {lost:,} of them lost the answer's span")
            exs[name] = (ex, spans)
        (train_ex, spans), (val_ex, _) = exs["training"], exs["validation"]
        if not any(s is not None for s in spans) and cfg.train.span_weight > 0:
            ctx.say("note: no training answer is a span of its passage: the extractive head will not learn")
        meta = {"train": data.train_name, "val": data.val_name, "train_pairs": len(train_ex.src),
                "val_pairs": len(val_ex.src), "train_spans": sum(s is not None for s in spans),
                "train_truncated": train_ex.truncated, "vocab_size": tok.vocab_size}
        return QAState(cfg, meta, data, tok, pad, bos, eos, train_ex, val_ex, spans)

    def build_model(self, state: QAState):
        from qkv.models.io import load_model

        return load_model(self.ctx.run_dir)[0] if self.ctx.resume else Reader(state.cfg.model)

    def batches(self, state: QAState, rows: int, rank: int, world: int):
        return QABatches(state.train_ex, state.spans, state.pad, state.bos, state.eos, batch_sentences=rows,
                         pool_batches=state.cfg.data.pool_batches, seed=state.cfg.train.seed, rank=rank,
                         world_size=world)

    def loss(self, state: QAState, model, batch):
        return reader_loss(model, batch, state.cfg.train.label_smoothing, state.cfg.train.span_weight)

    def loss_terms(self, batch) -> int:
        spans = int((batch["start"] >= 0).sum()) if self.cfg.train.span_weight > 0 else 0
        return int((batch["tgt_out"] != -100).sum()) + spans

    def evaluate(self, state: QAState, model, full: bool, train_means: dict) -> dict:
        out = {}
        if "nll" in train_means:
            out["train_nll"] = train_means["nll"]
        if "span_ce" in train_means:
            out["train_span_ce"] = train_means["span_ce"]
        out["val_loss"], _ = corpus_loss(model, state.val_ex, state.pad, state.bos, state.eos)
        out["val_ppl"] = perplexity(out["val_loss"])
        n = state.cfg.train.eval_pairs
        if full and n:
            items = spread(state.data.val, n)
            got = answer_items(model, state.tok, items, state.cfg, with_spans=state.cfg.train.span_weight > 0)
            scores = _family_scores(items, got)
            out["val_em"] = scores["generative"]["exact_match"]
            if "extractive" in scores:  # the questions whose answer is a span
                out["val_span_em"] = scores["extractive"]["exact_match"]
        return out

    def summary(self, state: QAState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last, em = last_eval(result, "val_loss"), last_eval(result, "val_em")
        if last:
            lines.append(f"val loss {last['val_loss']:.4f} (NLL per answer token)")
        if em:
            span = f" | extractive {em['val_span_em']:.1f}% (questions with a span)" if "val_span_em" in em else ""
            lines.append(f"val exact match: generative {em['val_em']:.1f}%{span}")
        return lines

    def samples(self, state: QAState, model):
        items = spread(state.data.val, 3)
        got = answer_items(model, state.tok, items, state.cfg, with_spans=state.cfg.train.span_weight > 0)
        yield "--- sample answers (validation) " + "-" * 39 + "\n"
        for k, it in enumerate(items):
            ext = f"  | extractive: {got['extractive'][k]}" if "extractive" in got else ""
            yield f"passage:  {it.passage}\nquestion: {it.question}\nref: {it.answers[0]}\nout: " \
                  f"{got['generative'][k]}{ext}\n\n"
        yield "-" * 71 + "\n"

    def next_command(self) -> str:
        return f'answer: qkv answer {self.ctx.run_dir} --passage passage.txt "Where is Mary?"'


# ------------------------------------------------------------------------------------------------ answering
@torch.no_grad()
def extract(model, tok, sources: list[str], max_answer_len: int, batch_size: int = 64) -> list[SpanScores]:
    """The extractive head's best span of each ``question ; passage`` source (cut to the context)."""
    from qkv.evaluation.attention import token_label

    was = model.training
    model.eval()
    device = model.lm_head.weight.device
    out = []
    for b in range(0, len(sources), batch_size):
        part = sources[b:b + batch_size]
        ids = [s[: model.config.max_seq_len - 1] + [tok.eos_id] for s in encode_lines(tok, part)]
        offsets = token_offsets(tok, part)
        S = max(map(len, ids))
        src = torch.tensor([r + [tok.pad_id] * (S - len(r)) for r in ids], device=device)  # (B, S)
        mask = torch.tensor([[k < len(r) for k in range(S)] for r in ids], device=device)  # (B, S)
        at = torch.tensor([first_token_from(off, len(split_source(s)[0]) + len(SEPARATOR))
                           for s, off in zip(part, offsets, strict=True)], device=device)  # (B,)
        memory = model.encode(src, mask)  # (B, S, C)
        start, end = model.span_logits(memory)  # (B, S), (B, S)
        # a span never starts or ends on a token that is only a space (BPE's "Ġ" before a name it splits up)
        words = torch.tensor([[bool(source[a:b].strip()) for a, b in off[:S]] + [False] * (S - len(off[:S]))
                              for source, off in zip(part, offsets, strict=True)], device=device)  # (B, S)
        allowed = passage_positions(mask, at) & words
        i, j, score = best_spans(start, end, allowed, max_answer_len)
        for r, source in enumerate(part):
            n = len(ids[r])
            text = span_text(source, offsets[r], int(i[r]), int(j[r])) if torch.isfinite(score[r]) else ""
            out.append(SpanScores(source, [token_label(tok, t) for t in ids[r]], start[r, :n].float().cpu(),
                                  end[r, :n].float().cpu(), allowed[r, :n].cpu(), int(i[r]), int(j[r]),
                                  float(score[r]), text))
    model.train(was)
    return out


def answer_items(model, tok, items: list[QAItem], cfg: QARunConfig, decoding: SequenceDecoding | None = None,
                 with_spans: bool = True) -> dict[str, list[str]]:
    """{"generative": answers, "extractive": answers (with_spans)} of the items, in order."""
    sources = [it.source for it in items]
    out = {"generative": translate_lines(model, tok, tok, sources, decoding or cfg.decode)[0]}
    if with_spans:
        out["extractive"] = [s.answer for s in extract(model, tok, sources, cfg.data.max_answer_len)]
    return out


def _family_scores(items: list[QAItem], got: dict[str, list[str]]) -> dict:
    """SQuAD EM and F1 (in %) per head, the share of generative answers that are spans of their passage, n."""
    from qkv.evaluation.squad import span_share, squad_scores

    golds = [list(it.answers) for it in items]
    out = {"n": len(items), "spans": sum(it.span is not None for it in items)}
    gen = squad_scores(got["generative"], golds)
    out["generative"] = {"exact_match": gen["exact_match"], "f1": gen["f1"]}
    out["generative_is_span"] = 100.0 * span_share(got["generative"], [it.passage for it in items])
    spanned = [k for k, it in enumerate(items) if it.span is not None]
    if "extractive" in got and spanned:
        ext = squad_scores([got["extractive"][k] for k in spanned], [golds[k] for k in spanned])
        out["extractive"] = {"exact_match": ext["exact_match"], "f1": ext["f1"]}
    return out


def first_of_each_family(items: list[QAItem], n: int) -> list[QAItem]:
    """The first `n` items of each family, in their order."""
    seen: dict[str, int] = {}
    out = []
    for it in items:
        seen[it.family] = seen.get(it.family, 0) + 1
        if seen[it.family] <= n:
            out.append(it)
    return out


class QARun(TextToTextRun):
    """A trained reader: answer questions about passages with either head, score both (`qkv.load_run`)."""

    task = "qa"
    config_class = QARunConfig
    model_type = "reader"

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities | {Capability.SPANS}

    def reference_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        items, name = self._items("val")
        items = spread(items, n)
        return [it.source for it in items], [it.answers[0] for it in items], name

    def training_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        items, name = self._items("train")
        return [it.source for it in items[:n]], [it.answers[0] for it in items[:n]], name

    def _items(self, split: str) -> tuple[list[QAItem], str]:
        return read_items(self.config.data, split, need_spans=False)

    # ------------------------------------------------------------------------------------------ answering
    def read_source(self, source: str) -> tuple[str, str]:
        """A ``question ; passage`` line as the encoder reads it (whitespace collapsed), and what was cut."""
        question, passage = split_source(source)
        line = join(question, passage)
        ctx = self.model.config.max_seq_len
        over = len(self.src_tokenizer.encode(line)) + 1 - ctx
        if over <= 0:
            return line, ""
        kept = token_offsets(self.src_tokenizer, [line])[0][ctx - 2][1]  # the last character the encoder reads
        return line, (f"the passage is longer than the context ({ctx} tokens with the question and EOS): its last "
                      f"{len(line) - kept:,} characters ({over:,} tokens) were dropped")

    def answer(self, questions: list[str], passages: list[str], head: Head = "generative",
               decoding: SequenceDecoding | None = None, **changes) -> tuple[list[str], list[str]]:
        """(the answers of `head` to each question about its passage, one note per question: "" or what was cut
        from a passage longer than the context)."""
        if head not in HEADS:
            raise QKVError(f"unknown head {head!r}; choose generative or extractive")
        if len(questions) != len(passages):
            raise QKVError(f"{len(questions)} question(s) but {len(passages)} passage(s)")
        lines, notes = zip(*(self.read_source(join(q, p)) for q, p in zip(questions, passages, strict=True)),
                           strict=True) if questions else ((), ())
        if head == "extractive":  # the lines are read already: no second read_source
            spans = extract(self.model, self.src_tokenizer, list(lines), self.config.data.max_answer_len)
            return [s.answer for s in spans], list(notes)
        return self.translate(list(lines), decoding, **changes)[0], list(notes)

    def spans(self, sources: list[str]) -> list[SpanScores]:
        """The extractive head's scores and best span for each ``question ; passage`` source."""
        lines = [self.read_source(s)[0] for s in sources]
        return extract(self.model, self.src_tokenizer, lines, self.config.data.max_answer_len)

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, split: str | None = None, src: str | None = None, ref: str | None = None,
                 beam: int | None = None, max_pairs: int | None = None, progress=None) -> dict:
        """SQuAD v1.1 exact match and F1 of both heads, per family, on the built-in held-out sets (`split`: test,
        paraphrase, pydoc, val; default every one the run's data has) or on `src`/`ref` files; and how often the
        generative answer is a span of its passage."""
        if (src is None) != (ref is None):
            raise QKVError("give both src and ref (line-aligned files), or neither")
        if max_pairs is not None and max_pairs <= 0:
            raise QKVError(f"max_pairs must be positive, got {max_pairs}")
        if src is not None:
            srcs, refs = read_parallel(src, ref)
            sets = {f"{src} -> {ref}": file_items(srcs, refs, src, need_spans=False)}
        else:
            d = self.config.data
            if d.src is not None:
                sets = {"val": self._items("val")[0]}
            else:
                names = [split] if split else [s for s in ("test", "paraphrase", "pydoc")
                                               if builtin_items(replace(d, eval_per_family=1), s)]
                if split and split not in EVAL_SETS:
                    raise QKVError(f"unknown QA set {split!r}; choose one of {', '.join(EVAL_SETS)}")
                sets = {name: builtin_items(d, name) for name in names}
        dcfg = self.decoding(beam=beam)
        with_spans = self.config.train.span_weight > 0
        out = {"beam": dcfg.beam, "sets": {}}
        for name, items in sets.items():
            if max_pairs:
                items = first_of_each_family(items, max_pairs)
            if not items:
                raise QKVError(f"{name}: no questions to score")
            if progress:
                progress(f"{name}: answering {len(items):,} questions with both heads ...")
            got = answer_items(self.model, self.src_tokenizer, items, self.config, dcfg, with_spans)
            families = sorted({it.family for it in items}, key=[it.family for it in items].index)
            out["sets"][name] = {
                "about": EVAL_SETS.get(name, name),
                "families": {f: _family_scores([it for it in items if it.family == f],
                                               {h: [a for a, it in zip(v, items, strict=True) if it.family == f]
                                                for h, v in got.items()}) for f in families},
                "all": _family_scores(items, got)}
        return out

    def report(self, r: dict) -> str:
        decoding = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines = [f"SQuAD v1.1 exact match / F1 (%), generative ({decoding}) and extractive heads; 'is span': the "
                 "share of generative answers found verbatim in their passage"]
        for name, s in r["sets"].items():
            lines += ["", f"{name} — {s['about']}",
                      f"  {'family':<16}{'n':>6}  {'generative EM':>13}  {'F1':>5}  {'extractive EM':>13}  {'F1':>5}"
                      f"  {'is span':>7}"]
            for fam, f in [*s["families"].items(), ("all", s["all"])]:
                ext = f["extractive"] if "extractive" in f else None
                ext_text = f"{ext['exact_match']:13.1f}  {ext['f1']:5.1f}" if ext else f"{'—':>13}  {'—':>5}"
                lines.append(f"  {fam:<16}{f['n']:>6}  {f['generative']['exact_match']:13.1f}  "
                             f"{f['generative']['f1']:5.1f}  {ext_text}  {f['generative_is_span']:7.1f}")
        lines.append("— : no answer of the family is a span of its passage (yes/no, counts, lists): only the "
                     "generative head can answer")
        return "\n".join(lines)


QATask.run_class = QARun
