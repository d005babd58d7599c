"""A run that turns a text into a text with an encoder–decoder: everything such a run can do, written once.

`TextToTextRun` offers the capabilities of any encoder–decoder whose source and target are text (`Seq2Seq`, a
source tokenizer and a target tokenizer, which may be the same object): source-to-text with a text source
(translate, n-best, cross-attention), its tokens, its token input and self-attention (the encoder), training
examples, and a default `evaluate` (sacreBLEU, chrF++, exact match and the teacher-forced loss of its reference
pairs). A task built on it supplies where its pairs come from (`reference_pairs`, `training_pairs`); translation
(`qkv.tasks.translate`) adds Multi30k, word alignments and its own evaluation, and a new "text -> text" task
gets every command, page and explain topic that fits by subclassing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from qkv.data.translation import collate, encode_lines, make_examples, source_ids, special_ids
from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import corpus_loss
from qkv.generation.seq2seq import SequenceDecoding, translate_lines
from qkv.runs import TGT_TOKENIZER_FILE, TOKENIZER_FILE
from qkv.tasks.base import Run, a_, get_task
from qkv.tasks.capabilities import Capability, SourceBatch, TextInput, TrainingExample
from qkv.training.losses import smoothed_loss


def load_tokenizers(run_dir: str | Path):
    """(source tokenizer, target tokenizer) of a text-to-text run; the same object for a joint vocabulary."""
    from qkv.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    src_tok = load_tokenizer(run_dir / TOKENIZER_FILE)
    tgt_path = run_dir / TGT_TOKENIZER_FILE
    return src_tok, (load_tokenizer(tgt_path) if tgt_path.is_file() else src_tok)


class TextToTextRun(Run):
    """An encoder–decoder run from text to text (module docstring). `config` has [decode] and [train] sections."""

    source_kind: ClassVar[str] = "text"

    def __init__(self, path, config, saved, model, src_tok, tgt_tok):
        super().__init__(path, config, saved, model)
        self.src_tokenizer, self.tgt_tokenizer = src_tok, tgt_tok

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        """The run's model (its `model_type`), typed config and tokenizer(s) (`load_tokenizers`)."""
        model, saved, config = cls._load_model(path, device)
        return cls(path, config, saved, model, *load_tokenizers(path))

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities | {Capability.SOURCE_TO_TEXT, Capability.TEXT_SOURCE, Capability.TOKENS,
                                       Capability.TOKEN_INPUT, Capability.SELF_ATTENTION,
                                       Capability.TRAINING_EXAMPLES}

    @property
    def target_tokenizer(self):
        return self.tgt_tokenizer

    # ------------------------------------------------------------------------------------------ where pairs are
    def reference_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        """(the first `n` held-out sources, their references, a name for them): a task supplies these."""
        raise QKVError(f"{self.path.name} has no reference pairs to show")

    def training_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        """(the first `n` training sources, their targets, a name for them): a task supplies these."""
        raise QKVError(f"{self.path.name} has no training pairs to show")

    def dataset_pairs(self, data: str, split: str | None = None) -> tuple[list[str], list[str], str]:
        """The pairs of a named dataset this run knows (none here: translation knows multi30k)."""
        raise QKVError(f"{self.path.name} knows no dataset named {data!r}; give a src file (and its ref file)")

    def example_text(self) -> str:
        """The first held-out source that fits the encoder's context (a page or topic that reads it whole needs one
        that does), else the first one cut to the context."""
        sources = self.example_sources(20)
        limit = self.model.config.max_seq_len - 1  # and its EOS
        for source in sources:
            if len(self.src_tokenizer.encode(source.strip())) <= limit:
                return source
        return self.src_tokenizer.decode(self.src_tokenizer.encode(sources[0].strip())[:limit])

    def example_sources(self, n: int = 1) -> list[str]:
        return self.reference_pairs(n)[0]

    # ------------------------------------------------------------------------------------------ text to text
    def decoding(self, **changes) -> SequenceDecoding:
        """The run's [decode] settings with `changes` (None values ignored) on top; QKVError if invalid."""
        return self.settings(self.config.decode, changes, "decode.")

    def translate(self, lines: list[str], decoding: SequenceDecoding | None = None, **changes
                  ) -> tuple[list[str], int]:
        """(outputs in input order, how many sources were cut to the context); decoding settings from `decoding`
        (default the run's [decode]) with any given as keywords on top: ``beam=4``."""
        dcfg = self.settings(decoding or self.config.decode, changes, "decode.") if changes else \
            (decoding or self.config.decode)
        return translate_lines(self.model, self.src_tokenizer, self.tgt_tokenizer, lines, dcfg)

    def read_source(self, source: str) -> tuple[str, str]:
        """A source sentence as the run takes it, and a note ("": a sentence needs no reading)."""
        return source, ""

    def to_text(self, sources: list[str], decoding: SequenceDecoding | None = None, **changes) -> list[str]:
        return self.translate(sources, decoding, **changes)[0]

    def n_best(self, source: str, decoding: SequenceDecoding | None = None, n: int = 5) -> list[dict]:
        from qkv.generation.seq2seq import translate_nbest

        return translate_nbest(self.model, self.src_tokenizer, self.tgt_tokenizer, source,
                               decoding or self.config.decode, n)

    def source_batch(self, sources: list[str]) -> SourceBatch:
        """Sources as the encoder reads them: tokens + EOS, cut to the context, padded to the longest."""
        from qkv.evaluation.attention import token_label

        if any(not s.strip() for s in sources):
            raise QKVError("the source sentence is empty")
        ids, cut = source_ids(self.src_tokenizer, [s.strip() for s in sources], self.model.config.max_seq_len)
        pad, S = self.tgt_tokenizer.pad_id, max(map(len, ids))
        src = torch.tensor([row + [pad] * (S - len(row)) for row in ids], device=self.model.lm_head.weight.device)
        mask = torch.tensor([[k < len(row) for k in range(S)] for row in ids], device=src.device)  # (B, S)
        return SourceBatch(src, mask, [[token_label(self.src_tokenizer, i) for i in row] for row in src.tolist()],
                           cut)

    def cross_attention(self, source: str, decoding: SequenceDecoding | None = None):
        """Every decoder layer's cross-attention while turning `source` into text (an AttentionStack)."""
        from qkv.evaluation.attention import seq2seq_attention

        return seq2seq_attention(self.model, self.src_tokenizer, self.tgt_tokenizer, source,
                                 decoding or self.config.decode)

    def attention(self, text: str, layer: int = -1, head: int | None = None, beam: int | None = None):
        """Cross-attention of one decoder layer while turning `text` into text (with the run's decoding, or
        `beam`): source tokens × produced tokens."""
        return self.cross_attention(text, self.decoding(beam=beam)).pick(layer, head)

    def reference_attention(self, source: str, layer: int = -1, head: int | None = None):
        """(a map over a reference output with its word links, or None; one line saying which): a task with
        reference word alignments supplies it (translation); here there are none."""
        return None, f"no reference alignment for {a_(self.task)} run; drawing the model's own output"

    def pair_batch(self, sources: list[str], targets: list[str]) -> dict:
        """Pairs as training batches them (`collate`): src, src_mask, tgt_in = BOS + target, tgt_out = target + EOS
        (-100 at padding)."""
        pad, bos, eos = special_ids(self.tgt_tokenizer)
        ex = make_examples(encode_lines(self.src_tokenizer, sources), encode_lines(self.tgt_tokenizer, targets),
                           self.model.config.max_seq_len, eos, skip_empty=False)
        return {k: v.to(self.model.lm_head.weight.device) for k, v in collate(ex.src, ex.tgt, pad, bos, eos).items()}

    def reference_loss(self, sources: list[str], targets: list[str]) -> tuple[float, int]:
        """The held-out loss (`corpus_loss`, NLL per target token) over these pairs, and its token count."""
        pad, bos, eos = special_ids(self.tgt_tokenizer)
        ex = make_examples(encode_lines(self.src_tokenizer, sources), encode_lines(self.tgt_tokenizer, targets),
                           self.model.config.max_seq_len, eos, skip_empty=False)
        return corpus_loss(self.model, ex, pad, bos, eos)

    # ------------------------------------------------------------------------------------------ looking inside
    def text_tokenizer(self):
        return self.src_tokenizer, "source"

    def text_input(self) -> TextInput:
        """Where this model reads a text: the encoder (src_emb·√d + positions, bidirectional self-attention)."""
        model, cfg = self.model, self.model.config
        device = model.lm_head.weight.device

        def prepare(text: str, limit: int) -> tuple[list[int], int]:
            (ids,), cut = source_ids(self.src_tokenizer, [text.strip()], limit)  # tokens + EOS, as the encoder
            return ids, (len(self.src_tokenizer.encode(text.strip())) + 1 - limit) if cut else 0  # reads them

        def src(ids):
            x = torch.tensor([ids], device=device)  # (1, S)
            return x, torch.ones_like(x, dtype=torch.bool)  # one sentence, nothing padded

        bos = torch.tensor([[self.tgt_tokenizer.bos_id]], device=device)  # (1, 1): attention_maps needs a target
        notes = ["Shared: the decoder's tgt_emb is this same table (one joint vocabulary)."
                 if model.tgt_emb is model.src_emb else "The decoder has its own table (tgt_emb)."]
        if cfg.scale_embeddings:
            notes.append(f"The encoder multiplies these rows by √d = {cfg.d_model ** 0.5:.3f} before adding positions "
                         "(topic positions).")
        notes.append("Tied: lm_head.weight is the target table, so it also turns the last hidden state into logits "
                     "(topic output)." if model.lm_head.weight is model.tgt_emb.weight else
                     "Not tied: the output layer (lm_head) has its own V × d matrix.")
        return TextInput(
            "source", self.src_tokenizer, "src_emb", model.src_emb,
            cfg.d_model ** 0.5 if cfg.scale_embeddings else 1.0, cfg.pos_encoding, model.pos_emb, model.drop,
            model.encoder, "encoder", "encoder layer", False, prepare, lambda ids: model.encode(*src(ids)),
            lambda ids: model.attention_maps(*src(ids), bos)["encoder"], cfg, notes)

    def self_attention(self, text: str):
        """Every encoder layer's self-attention over the source `text` (tokens + EOS; an AttentionStack)."""
        from qkv.evaluation.attention import AttentionStack, token_label

        ti = self.text_input()
        ids, cut = ti.prepare(text, self.model.config.max_seq_len)
        if cut:
            raise QKVError(f"the text is {len(ids) + cut} tokens with its EOS; the model's context is "
                           f"{self.model.config.max_seq_len}")
        with torch.no_grad():
            w = torch.cat(ti.maps(ids))  # L × (1, H, S, S) -> (L, H, S, S)
        labels = [token_label(self.src_tokenizer, i) for i in ids]
        return AttentionStack(w.float().cpu(), labels, labels, "self-attention", text, "source token read (key)",
                              "source token reading (query)", "the encoder's self-attention: both directions")

    def training_example(self, text: str | None = None, src: str | None = None, limit: int = 32) -> TrainingExample:
        """A sentence pair as training scores it: the encoder reads source + EOS, the decoder BOS + target and must
        produce target + EOS, label-smoothed. `src` and `text` (the target) together, or the first training pair."""
        from qkv.evaluation.attention import token_label

        model, src_tok, tgt_tok = self.model, self.src_tokenizer, self.tgt_tokenizer
        if (src is None) != (text is None):
            raise QKVError("a sentence pair needs both sides: src (the source) and text (the target)",
                           argument="src" if src is None else "text")
        if src is not None:
            if not src.strip() or not text.strip():
                raise QKVError("a sentence pair needs a non-empty source and target")
            src_text, tgt_text, where = src.strip(), text.strip(), "the pair given (src and text)"
        else:
            try:
                srcs, tgts, name = self.training_pairs(1)
            except QKVError as err:
                raise QKVError(f"the run's training pairs are not available ({err}); give a pair as src and text",
                               argument="src") from None
            src_text, tgt_text = srcs[0], tgts[0]
            where = f"the first training pair of the run's data ({name}); src and text give your own"
        pad, bos, eos = special_ids(tgt_tok)
        ex = make_examples(encode_lines(src_tok, [src_text]), encode_lines(tgt_tok, [tgt_text]),
                           model.config.max_seq_len, eos)
        if not ex.src:
            raise QKVError("a sentence pair needs a non-empty source and target")
        batch = collate(ex.src, ex.tgt, pad, bos, eos)  # src, src_mask, tgt_in = BOS + target, tgt_out = target + EOS
        src_ids = batch["src"][0].tolist()
        eps = self.config.train.label_smoothing
        logits = model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits  # (1, T, V), as the task's loss
        loss, nll, _ = smoothed_loss(logits, batch["tgt_out"], eps)
        lines = [f"source: {src_text!r}", f"target: {tgt_text!r}"]
        if ex.truncated:
            lines.append(f"(longer than the context: cut to {model.config.max_seq_len - 1} tokens + EOS, as in "
                         "training)")
        return TrainingExample(
            where, lines, tgt_tok, batch["tgt_in"][0], batch["tgt_out"][0], logits[0], nll,
            f"the NLL of smoothed_loss(logits, tgt_out, ε) — {get_task(self.task).__name__}.loss",
            source_rows=[[i, token_label(src_tok, t), t] for i, t in enumerate(src_ids[:limit])],
            source_note=f"encoder input: the source tokens + EOS ({len(src_ids)} tokens; the encoder sees them all at "
                        "once)",
            smoothing=eps, smoothed_loss=loss,
            data={"source": src_text, "target": tgt_text, "source_ids": src_ids, "label_smoothing": eps,
                  "smoothed_loss": loss})

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, beam: int | None = None, max_pairs: int | None = None) -> dict:
        """sacreBLEU, chrF++ and exact match of the outputs for the run's reference pairs, and the teacher-forced
        loss and perplexity of the references."""
        from qkv.evaluation.matching import exact_match
        from qkv.evaluation.translation import translation_scores

        if max_pairs is not None and max_pairs <= 0:
            raise QKVError(f"max_pairs must be positive, got {max_pairs}")
        srcs, refs, source = self.reference_pairs(max_pairs)
        if not srcs:
            raise QKVError(f"{source}: no pairs to score")
        dcfg = self.decoding(beam=beam)
        hyps = self.to_text(srcs, dcfg)
        loss, n_tok = self.reference_loss(srcs, refs)
        return {"source": source, "sentences": len(srcs), "beam": dcfg.beam, **translation_scores(hyps, refs),
                "exact_match": exact_match(hyps, [[r] for r in refs]), "loss": loss, "perplexity": perplexity(loss),
                "target_tokens": n_tok}

    def report(self, r: dict) -> str:
        decoding = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        return "\n".join([f"{r['source']}: {r['sentences']:,} sentences, {decoding}",
                          f"sacreBLEU {r['bleu']['score']:6.2f}  {r['bleu']['signature']}",
                          f"chrF++    {r['chrf++']['score']:6.2f}  {r['chrf++']['signature']}",
                          f"exact match {100 * r['exact_match']:.1f}%",
                          f"loss {r['loss']:.4f} nats/target token | perplexity {r['perplexity']:.3f} (references, "
                          f"teacher-forced, {r['target_tokens']:,} tokens)"])
