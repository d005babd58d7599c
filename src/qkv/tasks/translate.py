"""The translation task (``task = "translate"``): parallel text -> joint BPE -> encoder–decoder, label-smoothed.

``qkv train --preset multi30k-de-en``. The run directory holds config.json (model, data, train
and decode sections), model.safetensors, tokenizer.json (the joint BPE; with separate vocabularies also
tokenizer_tgt.json), the trainer state, metrics.jsonl and loss.png. The training pairs are re-read and
re-encoded from the configured files on resume (deterministic).

Logged: the training loss is the label-smoothed cross-entropy that is optimised; every evaluation also logs
the unsmoothed training NLL and perplexity since the previous evaluation (``train_nll``, ``train_ppl``), the
validation NLL and perplexity (``val_loss``, ``val_ppl``) and, on full evaluations, sacreBLEU and chrF++ of
greedy translations of the first ``data.bleu_val_pairs`` validation sentences.

Batches are token-count batches (``data.batch_tokens``: pairs × longest side ≤ the budget) or
``train.batch_size`` sentences, per step: under torchrun the processes share each batch's rows, and the
loss is the mean over every target token of the step, however the rows are split.

``--init-from RUN`` starts from a trained translation run: its weights, its tokenizer file(s) (copied) and
its model shape (``[model]`` is ignored); the run's tokenizers must fit its model. ``train.objective = "mrt"``
(minimum risk training on sentence BLEU or chrF++, `qkv.tasks.mrt`, the ``[mrt]`` section) fine-tunes such a
run and needs ``--init-from``; its evaluations also log the expected risk, the mean candidate metric and the
distinct candidates per source since the previous evaluation (``train_risk``, ``train_cand_bleu`` or
``train_cand_chrf++``, ``train_candidates``).

``train.alignment_weight = w > 0`` adds guided alignment (Garg et al. 2019, `qkv.tasks.guided_alignment`): one
cross-attention head (``train.alignment_layer``, ``train.alignment_head``) is trained toward the reference word
alignment of the training pairs (eflomal's, cached, or ``train.alignment_file``); its evaluations also log the
alignment cross-entropy since the previous one (``train_align_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from qkv.data.alignment import Alignments
from qkv.data.translation import (
    Examples,
    TranslationBatches,
    TranslationDataConfig,
    encode_lines,
    load_split,
    make_examples,
    multi30k_paths,
    read_parallel,
    special_ids,
)
from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import TOK_LC_LABEL, chrf_pp, corpus_loss, sacre_bleu, translation_scores
from qkv.generation.seq2seq import SequenceDecoding, translate_lines
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.runs import CONFIG_FILE, TGT_TOKENIZER_FILE, TOKENIZER_FILE, atomic_write_bytes, read_config
from qkv.tasks.base import State, Task, a_, fine_tunes, last_eval, task_of
from qkv.tasks.guided_alignment import Guide, attach_links, guide_of, guided_loss, training_alignments
from qkv.tasks.mrt import LOGGED as MRT_LOGGED
from qkv.tasks.mrt import MRTConfig, mrt_loss
from qkv.tasks.text_to_text import TextToTextRun, load_tokenizers
from qkv.tokenizers.base import Tokenizer
from qkv.training.config import TrainConfig
from qkv.training.losses import smoothed_loss

DEFAULT_SOURCE = "Ein Mann fährt Fahrrad."  # what a topic reads when no source is given


@dataclass
class TranslateTrainConfig(TrainConfig):
    """`TrainConfig` plus the loss setting of this task."""

    label_smoothing: float = 0.1  # ε: the target gets 1 - ε (+ ε/V), every token ε/V (Szegedy et al. 2016)
    # "xent": the label-smoothed cross-entropy; "mrt": minimum risk training ([mrt], needs --init-from)
    objective: Literal["xent", "mrt"] = "xent"
    # guided alignment (`qkv.tasks.guided_alignment`): L = translation loss + w · cross-entropy of one
    # cross-attention head against the reference word alignment; 0 = off
    alignment_weight: float = 0.0
    alignment_layer: int | None = None  # guided decoder layer; None: the penultimate (Garg et al.), or the only one
    alignment_head: int = 0  # the guided head of that layer
    alignment_file: str | None = None  # Pharaoh links of the training corpus; None: eflomal's, computed and cached

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.alignment_weight < float("inf"):
            raise ValueError(f"alignment_weight must be a finite number >= 0, got {self.alignment_weight}")
        if self.alignment_weight > 0 and self.objective == "mrt":
            raise ValueError('alignment_weight > 0 (guided alignment) cannot be combined with objective = "mrt"; '
                             "set one of them")


@dataclass
class TranslateRunConfig:
    task: Literal["translate"] = "translate"
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    data: TranslationDataConfig = field(default_factory=TranslationDataConfig)
    train: TranslateTrainConfig = field(default_factory=TranslateTrainConfig)
    decode: SequenceDecoding = field(default_factory=SequenceDecoding)
    mrt: MRTConfig = field(default_factory=MRTConfig)  # minimum risk training (train.objective = "mrt")


def base_translation_run(init_from: Path) -> dict:
    """config.json of a translation run to start from; QKVError if it is not one."""
    if init_from.is_dir() and not (init_from / CONFIG_FILE).is_file():
        raise QKVError(f"init_from {init_from}: not a run directory (no {CONFIG_FILE}); give a translation run")
    saved = read_config(init_from)
    if task_of(saved) != "translate":
        raise QKVError(f"init_from {init_from}: {a_(task_of(saved))} run; the translate task starts only from a "
                       "translation run")
    return saved


@dataclass
class TranslationData:
    """The training and validation pairs, and the reference word links of the training pairs (guided alignment,
    main process: the others read them from the cache the main one filled)."""

    train_src: list[str]
    train_tgt: list[str]
    train_name: str
    val_src: list[str]
    val_tgt: list[str]
    val_name: str
    alignments: Alignments | None = None


@dataclass
class TranslationTokenizers:
    src: Tokenizer
    tgt: Tokenizer  # the same object as src with a joint vocabulary


@dataclass
class TranslateState(State):
    data: TranslationData | None = None
    src_tok: Tokenizer | None = None
    tgt_tok: Tokenizer | None = None
    pad: int = 0
    bos: int = 0
    eos: int = 0
    train_ex: Examples | None = None  # encoded and cut to the context; with guided alignment, carrying links
    val_ex: Examples | None = None
    guide: Guide | None = None  # the guided head, or None


class TranslateTask(Task):
    name = "translate"
    config_class = TranslateRunConfig
    supports_init_from = True
    fitted_model_fields = ("vocab_size", "src_vocab_size", "tgt_vocab_size", "pad_id")
    data_option = "dataset"

    # ------------------------------------------------------------------------------------------ preparing
    def read_data(self) -> TranslationData:
        cfg, ctx = self.cfg, self.ctx
        if cfg.train.objective == "mrt":
            fine_tunes(ctx, "mrt", "translation")
        model_cfg = self._base(ctx.init_from)[0] if ctx.init_from is not None else cfg.model
        data = TranslationData(*load_split(cfg.data, "train"), *load_split(cfg.data, "val"))
        if guide_of(cfg.train, model_cfg) is not None and ctx.dist.is_main:  # first, and once: the others read
            data.alignments = training_alignments(cfg.data, cfg.train.alignment_file, ctx.say)  # the cache later
        return data

    def _base(self, init_from: Path) -> tuple[Seq2SeqConfig, int]:
        """The base run's model shape and tokenizer size; QKVError if it is no translation run, or was trained on
        Multi30k in another direction."""
        from qkv.config import from_dict
        from qkv.models.io import model_config_dict

        d, base = self.cfg.data, base_translation_run(init_from)
        data = base.get("data") or {}
        direction = data.get("direction", d.direction)
        if data.get("src") is None and d.src is None and direction != d.direction:
            raise QKVError(f"init_from {init_from}: trained on multi30k {direction}, but data.direction is "
                           f"{d.direction}")
        model = from_dict(Seq2SeqConfig, model_config_dict("seq2seq", base["model"]), prefix="model.")
        return model, data.get("vocab_size", d.vocab_size)

    def make_tokenizers(self, data: TranslationData) -> TranslationTokenizers:
        from qkv.tokenizers import train_bpe

        run_dir, d = self.ctx.run_dir, self.cfg.data
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx.init_from is not None:  # the base run's tokenizer file(s), byte for byte
            for name in (TOKENIZER_FILE, TGT_TOKENIZER_FILE):
                if (self.ctx.init_from / name).is_file():
                    atomic_write_bytes(run_dir / name, (self.ctx.init_from / name).read_bytes())
            return self.load_tokenizers(data)
        if self.cfg.model.separate_vocabs:
            src_tok = train_bpe(data.train_src, vocab_size=d.vocab_size)
            tgt_tok = train_bpe(data.train_tgt, vocab_size=d.vocab_size)
            tgt_tok.save(run_dir / TGT_TOKENIZER_FILE)
        else:
            src_tok = tgt_tok = train_bpe(data.train_src + data.train_tgt, vocab_size=d.vocab_size)
        src_tok.save(run_dir / TOKENIZER_FILE)
        return TranslationTokenizers(src_tok, tgt_tok)

    def load_tokenizers(self, data: TranslationData) -> TranslationTokenizers:
        return TranslationTokenizers(*load_tokenizers(self.ctx.run_dir))

    def resolve(self, data: TranslationData, toks: TranslationTokenizers) -> TranslateRunConfig:
        """The base run's model shape and tokenizer size (init_from; its tokenizers must fit its model), or the
        model sized to the tokenizer(s) with their pad id."""
        cfg, ctx = self.cfg, self.ctx
        if ctx.init_from is not None:
            model, vocab_size = self._base(ctx.init_from)
            cfg = replace(cfg, model=model, data=replace(cfg.data, vocab_size=vocab_size))
            if fit_model_config(cfg.model, toks) != cfg.model:
                raise QKVError(f"init_from {ctx.init_from}: its tokenizer(s) do not match its model (vocabulary sizes "
                               "or <pad> id differ)")
        elif not ctx.resume:
            cfg = replace(cfg, model=fit_model_config(cfg.model, toks))
        return cfg

    def prepare(self, cfg: TranslateRunConfig, data: TranslationData, toks: TranslationTokenizers) -> TranslateState:
        """Both splits encoded and cut to the context (what was cut or skipped said once), the data meta, and with
        guided alignment every training example's reference links."""
        ctx = self.ctx
        pad, bos, eos = special_ids(toks.tgt)
        T = cfg.model.max_seq_len
        train_ex = make_examples(encode_lines(toks.src, data.train_src), encode_lines(toks.tgt, data.train_tgt), T,
                                 eos)
        val_ex = make_examples(encode_lines(toks.src, data.val_src), encode_lines(toks.tgt, data.val_tgt), T, eos)
        if not val_ex.src:
            raise QKVError(f"{data.val_name}: no validation pairs")
        for name, ex, total in (("training", train_ex, len(data.train_src)),
                                ("validation", val_ex, len(data.val_src))):
            if ex.truncated:
                ctx.say(f"note: {ex.truncated:,} of {total:,} {name} pairs are longer than the context ({T} tokens) "
                        "and were truncated")
            if ex.skipped:
                ctx.say(f"note: {ex.skipped:,} of {total:,} {name} pairs have an empty side and were skipped")
        meta = {"train": data.train_name, "val": data.val_name, "train_pairs": len(train_ex.src),
                "val_pairs": len(val_ex.src), "train_truncated": train_ex.truncated,
                "src_vocab_size": toks.src.vocab_size, "tgt_vocab_size": toks.tgt.vocab_size,
                "src_tokens": int(sum(map(len, train_ex.src))), "tgt_tokens": int(sum(map(len, train_ex.tgt)))}
        init_from = (read_config(ctx.run_dir).get("data_meta") or {}).get("init_from") if ctx.resume else ctx.init_from
        if init_from is not None:  # the run this one fine-tunes
            meta["init_from"] = str(init_from)
        guide = guide_of(cfg.train, cfg.model)
        if guide is not None:  # every training example's reference links, which its batches carry
            ref = data.alignments or training_alignments(cfg.data, cfg.train.alignment_file, ctx.say)
            meta["alignment"] = attach_links(train_ex, ref, data.train_src, data.train_tgt, toks.src, toks.tgt, guide,
                                             ctx.say)
        return TranslateState(cfg, meta, data, toks.src, toks.tgt, pad, bos, eos, train_ex, val_ex, guide)

    def build_model(self, state: TranslateState):
        from qkv.models.io import load_model

        if self.ctx.resume:
            return load_model(self.ctx.run_dir)[0]
        return load_model(self.ctx.init_from)[0] if self.ctx.init_from is not None else Seq2Seq(state.cfg.model)

    def batches(self, state: TranslateState, rows: int, rank: int, world: int):
        d = state.cfg.data
        return TranslationBatches(state.train_ex, state.pad, state.bos, state.eos, batch_tokens=d.batch_tokens,
                                  batch_sentences=None if d.batch_tokens else rows, pool_batches=d.pool_batches,
                                  seed=state.cfg.train.seed, rank=rank, world_size=world)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, state: TranslateState, model, batch):
        cfg = state.cfg
        eps = cfg.train.label_smoothing
        if cfg.train.objective == "mrt":
            return mrt_loss(model, batch, cfg.mrt, state.tgt_tok, cfg.decode,
                            lambda logits, targets: smoothed_loss(logits, targets, eps))
        if state.guide is not None:
            return guided_loss(model, batch, state.guide, lambda logits, targets: smoothed_loss(logits, targets, eps))
        logits = model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits
        loss, nll, n = smoothed_loss(logits, batch["tgt_out"], eps)
        # (total, count): the Trainer keeps the unsmoothed NLL's running mean until the next evaluation
        return loss, {"tokens": int(batch["src_mask"].sum()) + n, "nll": (nll.item() * n, n)}

    def loss_terms(self, batch) -> int:
        return int((batch["tgt_out"] != -100).sum())

    def evaluate(self, state: TranslateState, model, full: bool, train_means: dict) -> dict:
        out = {}
        if "nll" in train_means:
            out["train_nll"] = train_means["nll"]
            out["train_ppl"] = perplexity(out["train_nll"])
        out.update({f"train_{k}": train_means[k] for k in MRT_LOGGED if k in train_means})
        if "align_loss" in train_means:
            out["train_align_loss"] = train_means["align_loss"]
        out["val_loss"], _ = corpus_loss(model, state.val_ex, state.pad, state.bos, state.eos)
        out["val_ppl"] = perplexity(out["val_loss"])
        n, data = state.cfg.data.bleu_val_pairs, state.data
        if full and n and data.val_src:
            hyps, _ = translate_lines(model, state.src_tok, state.tgt_tok, data.val_src[:n],
                                      replace(state.cfg.decode, beam=1))
            out["val_bleu"] = sacre_bleu(hyps, data.val_tgt[:n]).score
            out["val_chrf++"] = chrf_pp(hyps, data.val_tgt[:n]).score
        return out

    # ------------------------------------------------------------------------------------------ finishing
    def summary(self, state: TranslateState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last, bleu = last_eval(result, "val_loss"), last_eval(result, "val_bleu")
        if last:
            lines.append(f"val loss {last['val_loss']:.4f} (NLL per target token) | ppl {last['val_ppl']:.2f}")
        if bleu:
            lines.append(f"val BLEU {bleu['val_bleu']:.2f} | chrF++ {bleu['val_chrf++']:.2f} "
                         f"(sacreBLEU, greedy, first {state.cfg.data.bleu_val_pairs} validation sentences)")
        return lines

    def samples(self, state: TranslateState, model):
        data = state.data
        hyps, _ = translate_lines(model, state.src_tok, state.tgt_tok, data.val_src[:3], state.cfg.decode)
        yield "--- sample translations (validation) " + "-" * 34 + "\n"
        for s, r, h in zip(data.val_src[:3], data.val_tgt[:3], hyps, strict=True):
            yield f"src: {s}\nref: {r}\nout: {h}\n\n"
        yield "-" * 71 + "\n"

    def next_command(self) -> str:
        return f"translate: qkv translate {self.ctx.run_dir} --beam {self.cfg.decode.beam} < sentences.txt"


def fit_model_config(cfg: Seq2SeqConfig, toks: TranslationTokenizers) -> Seq2SeqConfig:
    """The model config sized to the tokenizer(s), with their pad id."""
    pad = toks.tgt.pad_id
    if cfg.separate_vocabs:
        if toks.src.pad_id != pad:
            raise QKVError("source and target tokenizers disagree on the <pad> id")
        return replace(cfg, src_vocab_size=toks.src.vocab_size, tgt_vocab_size=toks.tgt.vocab_size, pad_id=pad)
    return replace(cfg, vocab_size=toks.src.vocab_size, pad_id=pad)


class TranslationRun(TextToTextRun):
    """A trained encoder–decoder: translate, draw its cross-attention, score it (`qkv.load_run`)."""

    task = "translate"
    config_class = TranslateRunConfig
    model_type = "seq2seq"

    def example_text(self) -> str:
        return DEFAULT_SOURCE

    def example_sources(self, n: int = 1) -> list[str]:
        return [DEFAULT_SOURCE, *self.reference_pairs(n - 1)[0]][:n] if n > 1 else [DEFAULT_SOURCE]

    def reference_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        """The first `n` validation pairs of the run's data with both sides non-empty, and their name."""
        return self._pairs("val", n)

    def training_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        return self._pairs("train", n)

    def dataset_pairs(self, data: str, split: str | None = None) -> tuple[list[str], list[str], str]:
        """The pairs of a named parallel dataset in this run's direction: ``multi30k`` and a split (default
        test_2016_flickr)."""
        if data != "multi30k":
            raise QKVError(f"unknown parallel dataset {data!r}; use multi30k, or a src file (and its ref file)")
        direction, split = self.config.data.direction, split or "test_2016_flickr"
        srcs, refs = read_parallel(*multi30k_paths(direction, split))
        return srcs, refs, f"multi30k {direction} {split}"

    def _pairs(self, split: str, n: int | None) -> tuple[list[str], list[str], str]:
        """Pairs of a split of the run's data; only a copy of a named dataset already on this machine is read, never
        a download."""
        d = self.config.data
        if d.src is None:
            from qkv.data.registry import resolve

            resolve(d.dataset, download=False)
        srcs, refs, name = load_split(d, split)
        pairs = [(s, r) for s, r in zip(srcs, refs, strict=True) if s.strip() and r.strip()][:n]
        return [s for s, _ in pairs], [r for _, r in pairs], name

    def reference_attention(self, source: str, layer: int = -1, head: int | None = None):
        """(the cross-attention map over the reference translation, read teacher-forced, with its word links as
        boxes, or None; one line saying which) when a cached reference alignment of the run's training data holds
        `source` (`qkv data alignments`, `qkv eval RUN --alignment`)."""
        from qkv.data.alignment import find_reference, training_description
        from qkv.evaluation.alignment import reference_attention

        train = training_description(self.config.data)
        found = find_reference(train, source)
        if found is None:
            return None, (f"no reference alignment: the sentence is in no cached alignment of {train} (qkv data "
                          "alignments, qkv eval RUN --alignment); drawing the model's own translation")
        al, k = found
        amap = reference_attention(self.model, self.src_tokenizer, self.tgt_tokenizer, al.src[k], al.tgt[k],
                                   al.sure[k], layer, head)
        return amap, (f"reference alignment: {len(al.sure[k])} word links from {al.path}, outlined in red; rows are "
                      "the reference translation, read teacher-forced")

    def _eval_pairs(self, data: str | None, split: str, src: str | None, ref: str | None,
                    max_pairs: int | None) -> tuple[list[str], list[str], str, str]:
        """(source lines, reference lines, description, part name) of what `evaluate` scores."""
        if (src is None) != (ref is None):
            raise QKVError("give both src and ref (line-aligned files), or neither")
        if max_pairs is not None and max_pairs <= 0:
            raise QKVError(f"max_pairs must be positive, got {max_pairs}")
        if src:
            src_path, ref_path, source, part = src, ref, f"{src} -> {ref}", "eval"
        else:
            dataset = data or self.config.data.dataset
            if dataset != "multi30k":
                raise QKVError(f"unknown parallel dataset {dataset!r}; use multi30k, or src and ref files")
            direction = self.config.data.direction
            src_path, ref_path = multi30k_paths(direction, split)
            source, part = f"multi30k {direction} {split}", split
        srcs, refs = read_parallel(src_path, ref_path)
        return srcs, refs, source, part

    def alignment_scores(self, data: str | None = None, split: str = "test_2016_flickr", src: str | None = None,
                         ref: str | None = None, max_pairs: int | None = None, ref_alignment: str | None = None,
                         progress=None) -> dict:
        """AER, precision and recall of the word alignments read off every decoder layer × head (and each layer's
        head mean) on `split` (Multi30k) or `src`/`ref`, against `ref_alignment` (a Pharaoh link file, line-aligned
        with the pairs) or else eflomal's reference alignments, computed once together with the run's training
        pairs and cached (`qkv.data.alignment`, `qkv.evaluation.alignment`)."""
        from qkv.data.alignment import read_alignment_file, reference_alignments
        from qkv.evaluation.alignment import alignment_scores

        srcs, refs, source, part = self._eval_pairs(data, split, src, ref, max_pairs)
        if ref_alignment:
            gold = read_alignment_file(ref_alignment, srcs, refs)
        else:
            gold = reference_alignments(self.config.data, part, srcs, refs, source, progress=progress)
        if max_pairs:
            gold = gold.take(max_pairs)
        scores = alignment_scores(self.model, self.src_tokenizer, self.tgt_tokenizer, gold, progress=progress)
        return {"source": source, **scores}

    def evaluate(self, data: str | None = None, split: str = "test_2016_flickr", src: str | None = None,
                 ref: str | None = None, beam: int | None = None, length_penalty: float | None = None,
                 max_pairs: int | None = None, hyps_out: str | None = None, alignment: bool = False,
                 ref_alignment: str | None = None, progress=None) -> dict:
        """sacreBLEU, chrF++ and the tokenized lower-cased BLEU of the translations of `split` (Multi30k) or of
        `src` against `ref`, with the teacher-forced loss and perplexity of the references; with `alignment` (or a
        `ref_alignment` file) also the word-alignment scores of `alignment_scores` under "alignment"."""
        aligned = None
        if alignment or ref_alignment:  # first: a missing aligner or a bad link file fails before translating
            aligned = self.alignment_scores(data, split, src, ref, max_pairs, ref_alignment, progress)
        srcs, refs, source, _ = self._eval_pairs(data, split, src, ref, max_pairs)
        if max_pairs:
            srcs, refs = srcs[:max_pairs], refs[:max_pairs]
        dcfg = self.decoding(beam=beam, length_penalty=length_penalty)
        hyps, cut = self.translate(srcs, dcfg)
        if hyps_out:
            atomic_write_bytes(Path(hyps_out), "".join(h.replace("\n", " ") + "\n" for h in hyps).encode("utf-8"))
        pad, bos, eos = special_ids(self.tgt_tokenizer)
        ex = make_examples(encode_lines(self.src_tokenizer, srcs), encode_lines(self.tgt_tokenizer, refs),
                           self.model.config.max_seq_len, eos, skip_empty=False)
        loss, n_tok = corpus_loss(self.model, ex, pad, bos, eos)
        scores = translation_scores(hyps, refs)
        scores["bleu_tok_lc"]["label"] = TOK_LC_LABEL
        out = {"source": source, "sentences": len(srcs), "beam": dcfg.beam, "length_penalty": dcfg.length_penalty,
               "length_norm": dcfg.length_norm, **scores, "loss": loss, "perplexity": perplexity(loss),
               "target_tokens": n_tok, "truncated_sources": cut}
        return out | ({"alignment": aligned} if aligned is not None else {})

    def report(self, r: dict) -> str:
        decoding = "greedy" if r["beam"] == 1 else \
            f"beam {r['beam']}, {r['length_norm']} length penalty {r['length_penalty']}"
        lines = [f"{r['source']}: {r['sentences']:,} sentences, {decoding}",
                 f"sacreBLEU {r['bleu']['score']:6.2f}  {r['bleu']['signature']}",
                 f"chrF++    {r['chrf++']['score']:6.2f}  {r['chrf++']['signature']}",
                 f"{TOK_LC_LABEL}: {r['bleu_tok_lc']['score']:.2f}  {r['bleu_tok_lc']['signature']}",
                 f"loss {r['loss']:.4f} nats/target token | perplexity {r['perplexity']:.3f} "
                 f"(references, teacher-forced, {r['target_tokens']:,} tokens)"]
        if r["truncated_sources"]:
            lines.append(f"note: {r['truncated_sources']} source sentence(s) longer than the context "
                         f"({self.model.config.max_seq_len} tokens) were truncated")
        if "alignment" in r:
            from qkv.evaluation.alignment import alignment_report

            lines += alignment_report(r["alignment"])
        return "\n".join(lines)


TranslateTask.run_class = TranslationRun
