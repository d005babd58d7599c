"""Summarization (``task = "summarize"``): a document in, its one-sentence summary out, by the translation
encoder–decoder.

``qkv train --preset summarize-code`` (or ``summarize-text``). The notes put summarization among the
encoder–decoder's uses: "the encoder represents the original text, and the decoder generates the summary". Nothing
changes in the model or the loss from translation (`qkv.tasks.translate`: joint byte-level BPE, label-smoothed
cross-entropy, length-bucketed token batches); what changes is the data and how the output is judged:

    data        the standard library's docstrings as summaries people wrote (`qkv.data.summaries`): ``text`` (a
                docstring's body -> its first sentence) or ``code`` (a function's source without its docstring ->
                the docstring's first sentence), split by module; or your own line-aligned files (``--data.src
                documents.txt --data.tgt summaries.txt``, one document per line)
    judged by   ROUGE-1/2/L with bootstrap intervals, sacreBLEU and chrF++ (`qkv.evaluation.summarization`), beside
                three baselines: the lead sentence, the function's name in words, the nearest training summary

Logged: the training loss, the unsmoothed training NLL, the validation NLL and, on full evaluations, ROUGE-L,
sacreBLEU and chrF++ of greedy summaries of the first ``data.rouge_val_pairs`` validation documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from qkv.data.summaries import CORPORA, summary_pairs
from qkv.data.translation import TranslationDataConfig, check_pair_files, load_split
from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import corpus_loss
from qkv.generation.seq2seq import SequenceDecoding, translate_lines
from qkv.models.seq2seq import Seq2SeqConfig
from qkv.runs import atomic_write_bytes
from qkv.tasks.base import last_eval
from qkv.tasks.text_to_text import TextToTextRun
from qkv.tasks.translate import (
    TranslateState,
    TranslateTask,
    TranslateTrainConfig,
    TranslationData,
)


@dataclass
class SummarizeDataConfig:
    corpus: str = "code"  # the built-in corpus: text or code (used unless src/tgt files are given)
    src: str | None = None  # your documents, one per line (.gz or plain)
    tgt: str | None = None  # their summaries, line-aligned
    val_src: str | None = None  # validation files (default: the last val_fraction of the pairs)
    val_tgt: str | None = None
    val_fraction: float = 0.05
    vocab_size: int = 4000  # joint byte-level BPE learned on the training documents and summaries
    batch_tokens: int | None = 6000  # pairs × longest side ≤ this; None: train.batch_size pairs
    pool_batches: int = 100
    max_train_pairs: int | None = None
    max_val_pairs: int | None = None
    rouge_val_pairs: int = 200  # full evaluations summarize (greedy) the first N validation documents; 0 = off

    def __post_init__(self):
        check_pair_files(self)
        if self.src is None and self.corpus not in CORPORA:
            raise ValueError(f"unknown summary corpus {self.corpus!r}; known: {', '.join(CORPORA)} (or give "
                             "--data.src FILE --data.tgt FILE)")
        for name in ("batch_tokens", "max_train_pairs", "max_val_pairs"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if self.pool_batches <= 0 or self.rouge_val_pairs < 0:
            raise ValueError("pool_batches must be positive and rouge_val_pairs >= 0")


@dataclass
class SummarizeTrainConfig(TranslateTrainConfig):
    """Translation's training settings; its fine-tuning objectives (MRT, guided alignment) are translation's own."""

    def __post_init__(self):
        super().__post_init__()
        if self.objective != "xent" or self.alignment_weight:
            raise ValueError('summarize trains with objective = "xent" and alignment_weight = 0 (MRT and guided '
                             "alignment are translation's)")


@dataclass
class SummarizeRunConfig:
    task: Literal["summarize"] = "summarize"
    model: Seq2SeqConfig = field(default_factory=lambda: Seq2SeqConfig(max_seq_len=384))
    data: SummarizeDataConfig = field(default_factory=SummarizeDataConfig)
    train: SummarizeTrainConfig = field(default_factory=SummarizeTrainConfig)
    # a summary is one sentence, however long the document: a fixed limit
    decode: SequenceDecoding = field(default_factory=lambda: SequenceDecoding(beam=4, max_len_a=0.0, max_len_b=64))


def read_pairs(d: SummarizeDataConfig, split: str) -> tuple[list[str], list[str], list[str] | None, str]:
    """(documents, summaries, names or None, description) of a split: train, val or test (built-in corpora)."""
    if d.src is None:
        pairs = summary_pairs(d.corpus, split)
        limit = d.max_train_pairs if split == "train" else d.max_val_pairs
        pairs = pairs[:limit] if limit else pairs
        return [p.document for p in pairs], [p.summary for p in pairs], [p.name for p in pairs], \
            f"pydoc {d.corpus} {split}"
    if split == "test":
        raise QKVError("a run trained on your files has no test split; give --src FILE --ref FILE")
    files = TranslationDataConfig(src=d.src, tgt=d.tgt, val_src=d.val_src, val_tgt=d.val_tgt,
                                  val_fraction=d.val_fraction, max_train_pairs=d.max_train_pairs,
                                  max_val_pairs=d.max_val_pairs)
    docs, sums, name = load_split(files, split)
    return docs, sums, None, name


class SummarizeTask(TranslateTask):
    name = "summarize"
    config_class = SummarizeRunConfig
    supports_init_from = False
    data_option = "corpus"

    def read_data(self) -> TranslationData:
        train_docs, train_sums, _, train_name = read_pairs(self.cfg.data, "train")
        val_docs, val_sums, _, val_name = read_pairs(self.cfg.data, "val")
        if not train_docs:
            raise QKVError(f"{train_name}: no training pairs")
        return TranslationData(train_docs, train_sums, train_name, val_docs, val_sums, val_name)

    def evaluate(self, state: TranslateState, model, full: bool, train_means: dict) -> dict:
        from qkv.evaluation.summarization import summary_scores

        out = {}
        if "nll" in train_means:
            out["train_nll"] = train_means["nll"]
        out["val_loss"], _ = corpus_loss(model, state.val_ex, state.pad, state.bos, state.eos)
        out["val_ppl"] = perplexity(out["val_loss"])
        n, data = state.cfg.data.rouge_val_pairs, state.data
        if full and n and data.val_src:
            hyps, _ = translate_lines(model, state.src_tok, state.tgt_tok, data.val_src[:n],
                                      replace(state.cfg.decode, beam=1))
            s = summary_scores(hyps, data.val_tgt[:n], n_boot=1)
            out["val_rougeL"], out["val_bleu"], out["val_chrf++"] = s["rougeL"]["score"], s["bleu"], s["chrf++"]
        return out

    def summary(self, state: TranslateState, model, result) -> list[str]:
        lines = [f"trained {result.step} steps in {result.elapsed_s:.1f} s ({result.stopped_by})"]
        last, rouge = last_eval(result, "val_loss"), last_eval(result, "val_rougeL")
        if last:
            lines.append(f"val loss {last['val_loss']:.4f} (NLL per summary token) | ppl {last['val_ppl']:.2f}")
        if rouge:
            lines.append(f"val ROUGE-L {rouge['val_rougeL']:.2f} | BLEU {rouge['val_bleu']:.2f} | chrF++ "
                         f"{rouge['val_chrf++']:.2f} (greedy, first {state.cfg.data.rouge_val_pairs} validation "
                         "documents)")
        return lines

    def samples(self, state: TranslateState, model):
        data = state.data
        hyps, _ = translate_lines(model, state.src_tok, state.tgt_tok, data.val_src[:3], state.cfg.decode)
        yield "--- sample summaries (validation) " + "-" * 37 + "\n"
        for s, r, h in zip(data.val_src[:3], data.val_tgt[:3], hyps, strict=True):
            doc = s if len(s) <= 300 else s[:300] + " …"
            yield f"document:\n{doc}\nref: {r}\nout: {h}\n\n"
        yield "-" * 71 + "\n"

    def next_command(self) -> str:
        return f"summarize: qkv summarize {self.ctx.run_dir} --input document.txt"


class SummarizeRun(TextToTextRun):
    """A trained summarizer: summarize documents, score it against references and baselines (`qkv.load_run`)."""

    task = "summarize"
    config_class = SummarizeRunConfig
    model_type = "seq2seq"

    def reference_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        docs, sums, _, name = read_pairs(self.config.data, "val")
        return docs[:n], sums[:n], name

    def training_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        docs, sums, _, name = read_pairs(self.config.data, "train")
        return docs[:n], sums[:n], name

    def read_source(self, source: str) -> tuple[str, str]:
        """A document as the encoder reads it, and a note saying how much of a longer one was dropped."""
        if not source.strip():
            raise QKVError("the document is empty")
        n = len(self.src_tokenizer.encode(source.strip())) + 1
        over = n - self.model.config.max_seq_len
        return source.strip(), (f"the document is {n:,} tokens with its EOS; the model reads "
                                f"{self.model.config.max_seq_len}: the last {over:,} were dropped" if over > 0 else "")

    def summarize(self, documents: list[str], decoding: SequenceDecoding | None = None, **changes
                  ) -> tuple[list[str], list[str]]:
        """(a summary of each document, one note per document: "" or how much of it the context dropped)."""
        read = [self.read_source(d) for d in documents]
        return self.translate([r[0] for r in read], decoding, **changes)[0], [r[1] for r in read]

    def evaluate(self, split: str = "test", src: str | None = None, ref: str | None = None, beam: int | None = None,
                 max_pairs: int | None = None, hyps_out: str | None = None, n_boot: int = 1000) -> dict:
        """ROUGE-1/2/L (95% bootstrap intervals), sacreBLEU and chrF++ of the run's summaries of `split` (the
        built-in corpus: test or val, modules never trained on) or of `src` against `ref`, beside the baselines
        (lead, name, nearest training summary by TF-IDF) scored the same way."""
        from qkv.evaluation.summarization import baselines, summary_scores

        if (src is None) != (ref is None):
            raise QKVError("give both src and ref (line-aligned files), or neither")
        if max_pairs is not None and max_pairs <= 0:
            raise QKVError(f"max_pairs must be positive, got {max_pairs}")
        d = self.config.data
        if src is not None:
            from qkv.data.translation import read_parallel

            docs, refs = read_parallel(src, ref)
            names, source = None, f"{src} -> {ref}"
        else:
            if split not in ("val", "test"):
                raise QKVError(f"unknown split {split!r}; choose val or test")
            docs, refs, names, source = read_pairs(replace(d, max_val_pairs=None), split)
        if max_pairs:
            docs, refs, names = docs[:max_pairs], refs[:max_pairs], names[:max_pairs] if names else None
        if not docs:
            raise QKVError(f"{source}: no pairs to score")
        dcfg = self.decoding(beam=beam)
        hyps, cut = self.translate(docs, dcfg)
        if hyps_out:
            atomic_write_bytes(Path(hyps_out), "".join(h.replace("\n", " ") + "\n" for h in hyps).encode("utf-8"))
        train_docs, train_sums, _, _ = read_pairs(d, "train")
        corpus = d.corpus if d.src is None else "text"
        systems = {"model": hyps, **baselines(docs, names, corpus, train_docs, train_sums)}
        scores = {name: summary_scores(h, refs, n_boot=n_boot) for name, h in systems.items()}
        best = max((n for n in scores if n != "model"), key=lambda n: scores[n]["rougeL"]["score"])
        return {"source": source, "documents": len(docs), "beam": dcfg.beam, "truncated_documents": cut,
                "scores": scores, "best_baseline": best,
                "rougeL_over_best_baseline": scores["model"]["rougeL"]["score"] - scores[best]["rougeL"]["score"],
                "examples": [{"reference": r, "model": h} for r, h in zip(refs[:10], hyps[:10], strict=True)]}

    def report(self, r: dict) -> str:
        decoding = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        from qkv.evaluation.summarization import intervals_apart, score_table

        lines = [f"{r['source']}: {r['documents']:,} documents, {decoding}; ROUGE F1 ×100 (rouge-score, stemmed) "
                 "with 95% bootstrap intervals", *score_table(r["scores"])]
        m, b = r["scores"]["model"]["rougeL"], r["scores"][r["best_baseline"]]["rougeL"]
        apart = "the intervals do not overlap" if intervals_apart(m, b) else "the intervals overlap"
        lines.append(f"ROUGE-L over the best baseline ({r['best_baseline']}): {r['rougeL_over_best_baseline']:+.2f} "
                     f"({apart})")
        if r["truncated_documents"]:
            lines.append(f"note: {r['truncated_documents']} document(s) longer than the context "
                         f"({self.model.config.max_seq_len} tokens) were cut")
        return "\n".join(lines)


SummarizeTask.run_class = SummarizeRun
