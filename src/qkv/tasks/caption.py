"""The captioning task (``task = "caption"``): images (or clips) -> ViT encoder -> the translation decoder -> words.

``qkv train --preset shapes-caption`` trains a captioner (`qkv.models.captioner`) on procedural
scenes, drawn fresh for every example (`qkv.data.captioning`); the ``shapes-clips-caption`` preset on clips;
``--data.source FOLDER`` on a folder of images with ``captions.jsonl``. The run directory holds config.json,
model.safetensors, tokenizer.json (a BPE of the captions, or of every phrase of the scene grammar), the trainer
state, metrics.jsonl and loss.png.

Logged at every evaluation: the validation loss (NLL per caption token, teacher-forced) and, on full
evaluations, the greedy exact match of the validation images (``val_exact``; procedural: fresh scenes of the
seen compositions, drawn from ``data.seed``).

Inference (`CaptionRun`): ``caption`` (images or files -> one caption each, greedy or beam search: the decoding
loops of translation, unchanged), ``attention`` (each word's cross-attention over the patches), ``evaluate``
(`qkv eval`: exact match, per-attribute accuracy, BLEU-4 and CIDEr-D; procedural runs report every test group —
seen compositions by object count, held-out colour–shape pairs, held-out counts — apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from qkv.data.captioning import (
    CaptionBatches,
    CaptionDataConfig,
    CaptionSet,
    encode_captions,
    load_caption_folder,
    procedural_set,
    read_clip,
    read_image,
    split_folder,
)
from qkv.data.scenes import COLOURS, DIRECTIONS, PLACES, SHAPES, SIZES, SceneSpec, evaluation_groups
from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.generation.seq2seq import SequenceDecoding, decode_batch
from qkv.models.captioner import Captioner, CaptionerConfig
from qkv.runs import TOKENIZER_FILE
from qkv.tasks.base import Run, State, Task, last_eval
from qkv.tasks.capabilities import Capability, SourceBatch, TrainingExample
from qkv.tokenizers.base import Tokenizer
from qkv.training.config import TrainConfig


@dataclass
class CaptionTrainConfig(TrainConfig):
    label_smoothing: float = 0.0  # ε of the label-smoothed cross-entropy (as translation's)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def _caption_decoding() -> SequenceDecoding:
    # a caption's length does not follow its input's: the limit is the context (a = 0, b = the most tokens)
    return SequenceDecoding(beam=1, length_penalty=0.6, max_len_a=0.0, max_len_b=128, batch_size=64)


@dataclass
class CaptionRunConfig:
    task: Literal["caption"] = "caption"
    model: CaptionerConfig = field(default_factory=CaptionerConfig)
    data: CaptionDataConfig = field(default_factory=CaptionDataConfig)
    train: CaptionTrainConfig = field(default_factory=lambda: CaptionTrainConfig(
        max_steps=3000, batch_size=64, lr=1e-3, min_lr=5e-5, warmup_steps=200, weight_decay=0.05, beta2=0.98,
        eval_interval=250, grad_clip=1.0))
    decode: SequenceDecoding = field(default_factory=_caption_decoding)


def grammar_phrases() -> list[str]:
    """Every phrase the scene grammar can say (every object at every cell and in every direction, and the joins):
    the text the procedural runs' tokenizer is learned from, so no word of a test caption is unknown."""
    objs = [f"a {s} {c} {sh}" for s in SIZES for c in COLOURS for sh in SHAPES]
    scenes = [f"{o} {p}, {o} {p} and" for o in objs for p in PLACES]
    return scenes + [f"{o} moves {d}" for o in objs for d in DIRECTIONS]


def caption_tokenizer(texts: list[str], kind: str, vocab_size: int):
    """A BPE (or character) tokenizer of the caption texts, with <pad>, <bos> and <eos>."""
    from qkv.data.captions import train_caption_tokenizer

    return train_caption_tokenizer(texts, kind, vocab_size, specials=("<pad>", "<bos>", "<eos>"))


def caption_ids(model, tok, images: torch.Tensor, cfg: SequenceDecoding) -> list[list[int]]:
    """The caption token ids (no BOS, no EOS) of images (N, C, H, W) or clips (N, F, C, H, W), greedy (beam 1) or
    by beam search, in batches: translation's decoding loops, with an all-True memory mask."""
    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    out: list[list[int]] = []
    for start in range(0, len(images), cfg.batch_size):
        x = images[start : start + cfg.batch_size].to(device)
        mask = model.memory_mask(len(x), device)  # (B, P) or (B, 1): every patch is real
        out += decode_batch(model, x, mask, tok.bos_id, tok.eos_id, cfg, tok.vocab_size)
    model.train(was_training)
    return out


def caption_images(model, tok, images: torch.Tensor, cfg: SequenceDecoding) -> list[str]:
    """One caption per image (N, C, H, W) or clip (N, F, C, H, W)."""
    return [tok.decode(ids).strip() for ids in caption_ids(model, tok, images, cfg)]


@dataclass
class CaptionData:
    """The images: procedural scenes (drawn fresh for every training example from `spec`; a fixed validation set)
    or a captioned folder split in two."""

    spec: SceneSpec | None  # procedural: what to draw; None for a folder
    train_set: CaptionSet | None  # a folder's training images; None when procedural
    val_set: CaptionSet
    source: str  # one line: where the images come from


@dataclass
class CaptionState(State):
    data: CaptionData | None = None
    tok: Tokenizer | None = None


class CaptionTask(Task):
    name = "caption"
    config_class = CaptionRunConfig
    fitted_model_fields = ("image_size", "channels", "frames", "vocab_size", "pad_id")

    # ------------------------------------------------------------------------------------------ preparing
    def read_data(self) -> CaptionData:
        d = self.cfg.data
        p = self.cfg.model.patch_size
        if d.image_size % p:  # first: nothing is written before this is known
            raise QKVError(f"data.image_size {d.image_size} is not a multiple of model.patch_size {p}: choose a patch "
                           f"size that divides it, or an image size such as {max(p, d.image_size // p * p)}")
        if d.procedural:
            spec = d.scene_spec()
            return CaptionData(spec, None, procedural_set(spec, d.val_scenes, [d.seed, 1]),
                               f"{d.source} (procedural, drawn fresh for every example)")
        everything = load_caption_folder(d.source, d.image_size, d.channels)
        train_set, val_set = split_folder(everything, d.val_fraction, d.seed)
        return CaptionData(None, train_set, val_set, f"{d.source} ({len(everything):,} images)")

    def make_tokenizers(self, data: CaptionData) -> Tokenizer:
        d = self.cfg.data
        texts = grammar_phrases() if d.procedural else [r for refs in data.train_set.refs for r in refs]
        tok = caption_tokenizer(texts, d.tokenizer, d.vocab_size)
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return tok

    def load_tokenizers(self, data: CaptionData) -> Tokenizer:
        from qkv.tokenizers import load_tokenizer

        return load_tokenizer(self.ctx.run_dir / TOKENIZER_FILE)

    def resolve(self, data: CaptionData, tok: Tokenizer) -> CaptionRunConfig:
        """The model sized to the images (size, channels, frames) and to the caption tokenizer."""
        cfg, d = self.cfg, self.cfg.data
        if self.ctx.resume:
            return cfg
        return replace(cfg, model=replace(cfg.model, image_size=d.image_size, channels=d.channels if not d.procedural
                                          else 3, frames=d.input_frames, vocab_size=tok.vocab_size,
                                          pad_id=tok.pad_id))

    def prepare(self, cfg: CaptionRunConfig, data: CaptionData, tok: Tokenizer) -> CaptionState:
        """Every caption checked against the context; the data meta."""
        T = cfg.model.max_seq_len
        longest = max((r for refs in data.val_set.refs for r in refs), key=lambda r: len(tok.encode(r)))
        encode_captions(tok, [longest], T, tok.pad_id, tok.bos_id, tok.eos_id, where="validation caption")
        if data.train_set is not None:
            for refs in data.train_set.refs:
                encode_captions(tok, refs, T, tok.pad_id, tok.bos_id, tok.eos_id, where="training caption")
        meta = {"source": data.source, "val_images": len(data.val_set), "vocab_size": tok.vocab_size,
                "patches": cfg.model.n_patches, "memory": cfg.model.memory}
        if data.train_set is not None:
            meta["train_images"] = len(data.train_set)
        return CaptionState(cfg, meta, data, tok)

    def build_model(self, state: CaptionState):
        from qkv.models.io import load_model

        model = load_model(self.ctx.run_dir)[0] if self.ctx.resume else Captioner(state.cfg.model)
        m = model.config
        self.ctx.say(f"captioner: {model.num_params():,} parameters; {m.frames} frame(s) of {m.image_size}×"
                     f"{m.image_size} -> {m.n_patches} patches of {m.patch_size}×{m.patch_size} px; decoder attends "
                     f"to {'every patch' if m.memory == 'patches' else 'one pooled vector'}")
        return model

    def batches(self, state: CaptionState, rows: int, rank: int, world: int):
        return CaptionBatches(state.tok, state.cfg.model.max_seq_len, rows, seed=state.cfg.train.seed, rank=rank,
                              world_size=world, spec=state.data.spec, data=state.data.train_set)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, state: CaptionState, model, batch):
        from qkv.training.losses import smoothed_loss

        logits = model(batch["images"], None, batch["tgt_in"]).logits
        loss, nll, n = smoothed_loss(logits, batch["tgt_out"], state.cfg.train.label_smoothing)
        return loss, {"tokens": n, "nll": (nll.item() * n, n)}

    def loss_terms(self, batch) -> int:
        return int((batch["tgt_out"] != -100).sum())

    def evaluate(self, state: CaptionState, model, full: bool, train_means: dict) -> dict:
        from qkv.evaluation.captioning import caption_loss
        from qkv.evaluation.matching import exact_match

        val = state.data.val_set
        out = {}
        if "nll" in train_means:
            out["train_nll"] = train_means["nll"]
        out["val_loss"] = caption_loss(model, state.tok, val)
        out["val_ppl"] = perplexity(out["val_loss"])
        if full:
            hyps = caption_images(model, state.tok, val.images, replace(state.cfg.decode, beam=1))
            out["val_exact"] = exact_match(hyps, val.refs)
        return out

    # ------------------------------------------------------------------------------------------ finishing
    def summary(self, state: CaptionState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last, em = last_eval(result, "val_loss"), last_eval(result, "val_exact")
        if last:
            lines.append(f"val loss {last['val_loss']:.4f} (NLL per caption token) | ppl {last['val_ppl']:.3f}")
        if em:
            lines.append(f"val exact match {100 * em['val_exact']:.1f}% (greedy, {len(state.data.val_set):,} "
                         "validation images)")
        return lines

    def samples(self, state: CaptionState, model):
        from qkv.evaluation.matching import exact_match

        val = state.data.val_set
        hyps = caption_images(model, state.tok, val.images[:3], state.cfg.decode)
        yield "--- sample captions (validation) " + "-" * 38 + "\n"
        for refs, h in zip(val.refs[:3], hyps, strict=True):
            mark = "=" if exact_match([h], [refs]) else "≠"
            yield f"ref: {refs[0]}\nout: {h}  ({mark})\n\n"
        yield "-" * 71 + "\n"

    def next_command(self) -> str:
        return f"evaluate it: qkv eval {self.ctx.run_dir}   caption an image: qkv caption {self.ctx.run_dir} image.png"


class CaptionRun(Run):
    """A trained captioner: caption images, draw where each word looked, score it (`qkv.load_run`).

    A source is an image file's path, its bytes (an upload) or an image tensor (C, H, W) in [-1, 1] (a clip run:
    a strip of its frames side by side, or (F, C, H, W))."""

    task = "caption"
    config_class = CaptionRunConfig
    model_type = "captioner"
    source_kind = "image"

    def __init__(self, path, config, saved, model, tok):
        super().__init__(path, config, saved, model)
        self.tokenizer = tok
        self._validation: CaptionSet | None = None

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        from qkv.tokenizers import load_tokenizer

        model, saved, config = cls._load_model(path, device)
        return cls(path, config, saved, model, load_tokenizer(Path(path) / TOKENIZER_FILE))

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities | {Capability.SOURCE_TO_TEXT, Capability.TOKENS, Capability.TRAINING_EXAMPLES}

    @property
    def target_tokenizer(self):
        return self.tokenizer

    def decoding(self, **changes) -> SequenceDecoding:
        """The run's [decode] settings with `changes` (None values ignored) on top; QKVError if invalid."""
        return self.settings(self.config.decode, changes, "decode.")

    # ------------------------------------------------------------------------------------------ reading images
    def read(self, path: str | Path | bytes) -> tuple[torch.Tensor, str]:
        """An image file or its bytes (for a clip run, a strip of its frames side by side) as the model's input,
        and a note when it had to be resized ("" if not). QKVError if it is missing or not a readable image."""
        m = self.model.config
        if m.frames > 1:
            x, (w, h) = read_clip(path, m.frames, m.image_size, m.channels)
            size = f"{w}×{h} strip"
            resized = h != m.image_size
        else:
            x, (w, h) = read_image(path, m.image_size, m.channels)
            size = f"{w}×{h}"
            resized = (w, h) != (m.image_size, m.image_size)
        where = "the image" if isinstance(path, bytes) else path
        note = f"{where}: {size} resized to {m.image_size}×{m.image_size}{' per frame' * (m.frames > 1)}" \
            if resized else ""
        return x, note

    def read_source(self, source) -> tuple[torch.Tensor, str]:
        """`read` for a path or bytes; a tensor is checked and taken as it is."""
        return (self.image(source), "") if isinstance(source, torch.Tensor) else self.read(source)

    def image(self, source) -> torch.Tensor:
        """A source (path, bytes or tensor) as the model's input, (C, H, W) or (F, C, H, W) in [-1, 1]."""
        if isinstance(source, torch.Tensor):
            m = self.model.config
            want = (m.channels, m.image_size, m.image_size) if m.frames == 1 else \
                (m.frames, m.channels, m.image_size, m.image_size)
            if tuple(source.shape) != want:
                raise QKVError(f"an image tensor for this run is {' × '.join(map(str, want))}, got "
                               f"{' × '.join(map(str, source.shape))}")
            return source.float().clamp(-1, 1)
        return self.read(source)[0]

    def patch_labels(self) -> list[str]:
        """One label per memory position: the patch's row and column (and frame), or "image" when pooled."""
        m = self.model.config
        if m.memory == "pooled":
            return ["image"]
        frame = [f"f{f}·" if m.frames > 1 else "" for f in range(m.frames)]
        return [f"{frame[f]}r{r}c{c}" for f in range(m.frames) for r in range(m.grid) for c in range(m.grid)]

    # ------------------------------------------------------------------------------------------ captioning
    def caption(self, images: torch.Tensor, decoding: SequenceDecoding | None = None, **changes) -> list[str]:
        """One caption per image (N, C, H, W) or clip (N, F, C, H, W), in [-1, 1] at the model's size; decoding
        from `decoding` (default the run's [decode]) with any setting given as a keyword on top: ``beam=4``."""
        dcfg = self.settings(decoding or self.config.decode, changes, "decode.") if changes else \
            (decoding or self.config.decode)
        return caption_images(self.model, self.tokenizer, images, dcfg)

    def caption_files(self, paths: list[str], decoding: SequenceDecoding | None = None, **changes
                      ) -> tuple[list[str], list[str]]:
        """(one caption per image file, the notes of files that were resized)."""
        read = [self.read(p) for p in paths]
        return self.caption(torch.stack([x for x, _ in read]), decoding, **changes), [n for _, n in read if n]

    def to_text(self, sources: list, decoding: SequenceDecoding | None = None, **changes) -> list[str]:
        return self.caption(torch.stack([self.image(s) for s in sources]), decoding, **changes)

    def n_best(self, source, decoding: SequenceDecoding | None = None, n: int = 5) -> list[dict]:
        from qkv.generation.seq2seq import nbest

        x = self.image(source)[None].to(self.model.lm_head.weight.device)  # (1, ...)
        return nbest(self.model, x, self.model.source_mask(x), self.tokenizer, decoding or self.config.decode, n)

    def source_batch(self, sources: list) -> SourceBatch:
        """Images as the encoder reads them: stacked, every patch real."""
        x = torch.stack([self.image(s) for s in sources]).to(self.model.lm_head.weight.device)  # (B, ...)
        return SourceBatch(x, self.model.source_mask(x), [self.patch_labels()] * len(sources))

    def cross_attention(self, source, decoding: SequenceDecoding | None = None):
        """Caption the image, then every decoder layer's cross-attention of each caption token over the patches (an
        AttentionStack with the image and its patch grid, for drawing the weights on it)."""
        from qkv.evaluation.attention import source_attention

        x = self.image(source)
        batch = self.source_batch([x])
        stack = source_attention(self.model, batch.src, batch.src_mask, batch.labels[0], self.tokenizer,
                                 decoding or self.config.decode)
        m = self.model.config
        stack.xlabel, stack.note = "image patches", f"caption: {stack.text}"
        stack.image, stack.grid, stack.frames = x.cpu(), (m.grid if m.memory == "patches" else None), m.frames
        return stack

    def attention(self, image: str, layer: int = -1, head: int | None = None, beam: int | None = None):
        """Caption the image file, then read each caption word's cross-attention over the patches (layer, head)."""
        from qkv.evaluation.captioning import caption_attention

        x, _ = self.read(image)
        (ids,) = caption_ids(self.model, self.tokenizer, x[None], self.decoding(beam=beam))
        return caption_attention(self.model, self.tokenizer, x, ids, layer, head)

    def validation(self) -> CaptionSet:
        """The run's validation images (procedural: the same fresh scenes training scored; a folder: its split)."""
        if self._validation is None:
            d = self.config.data
            if d.procedural:
                self._validation = procedural_set(d.scene_spec(), d.val_scenes, [d.seed, 1])
            else:
                m = self.model.config
                _, self._validation = split_folder(load_caption_folder(d.source, m.image_size, m.channels),
                                                   d.val_fraction, d.seed)
        return self._validation

    def example_sources(self, n: int = 1) -> list[torch.Tensor]:
        return list(self.validation().images[:n])

    def reference_pairs(self, n: int | None = None) -> tuple[list[torch.Tensor], list[str], str]:
        val = self.validation()
        k = len(val) if n is None else min(n, len(val))
        return list(val.images[:k]), [refs[0] for refs in val.refs[:k]], f"{self.config.data.source} (validation)"

    def dataset_pairs(self, data: str, split: str | None = None) -> tuple[list[torch.Tensor], list[str], str]:
        """Images and their first reference: the run's own fresh test scenes of the seen compositions (`data` names
        its procedural source: shapes or clips; `split` is a seed, default data.seed), or every image a folder's
        captions.jsonl lists."""
        d, m = self.config.data, self.model.config
        if d.procedural and data == d.source:
            seed = d.seed if split is None else int(split) if split.isdigit() else None
            if seed is None:
                raise QKVError(f"split for procedural scenes is a seed (an integer), got {split!r}")
            name, counts, pairs = evaluation_groups(d.scene_spec(), d.test_scenes)[0]
            cs = procedural_set(d.scene_spec(), d.test_scenes, [seed, 2, 0], counts, pairs)
            where = f"{d.source}: fresh test scenes (seed {seed}), {name}"
        else:
            if data in ("shapes", "clips"):
                raise QKVError(f"{self.path.name} was not trained on {data}; give a folder with captions.jsonl")
            cs = load_caption_folder(data, m.image_size, m.channels)
            where = f"{data} (every image listed)"
        return list(cs.images), [refs[0] for refs in cs.refs], where

    def pair_batch(self, sources: list, targets: list[str]) -> dict:
        """Images and captions as training batches them: src (the images), src_mask (every patch real), tgt_in =
        BOS + caption, tgt_out = caption + EOS (-100 at padding)."""
        tok = self.tokenizer
        x = torch.stack([self.image(s) for s in sources]).to(self.model.lm_head.weight.device)
        tgt_in, tgt_out = encode_captions(tok, list(targets), self.model.config.max_seq_len, tok.pad_id, tok.bos_id,
                                          tok.eos_id)
        return {"src": x, "src_mask": self.model.source_mask(x), "tgt_in": tgt_in.to(x.device),
                "tgt_out": tgt_out.to(x.device)}

    def reference_loss(self, sources: list, targets: list[str]) -> tuple[float, int]:
        """The run's validation loss (`caption_loss`, NLL per caption token) over these pairs, and its token count."""
        from qkv.evaluation.captioning import caption_loss

        data = CaptionSet(torch.stack([self.image(s) for s in sources]), [[t] for t in targets],
                          [f"image {i}" for i in range(len(sources))])
        tok = self.tokenizer
        _, tgt_out = encode_captions(tok, list(targets), self.model.config.max_seq_len, tok.pad_id, tok.bos_id,
                                     tok.eos_id)
        return caption_loss(self.model, tok, data), int((tgt_out != -100).sum())

    # ------------------------------------------------------------------------------------------ looking inside
    def text_tokenizer(self):
        return self.tokenizer, "caption"

    def example_text(self) -> str:
        return self.validation().refs[0][0]

    def training_example(self, text: str | None = None, src=None, limit: int = 32) -> TrainingExample:
        """An image and its caption as `CaptionTask.loss` scores them: the encoder reads the patches, the decoder BOS
        + caption and must produce caption + EOS. `src` (an image) and `text` (its caption) together, or the first
        validation image and its reference."""
        from qkv.training.losses import smoothed_loss

        if (src is None) != (text is None):
            raise QKVError("an image-caption pair needs both: src (the image) and text (its caption)",
                           argument="src" if src is None else "text")
        if src is None:
            val = self.validation()
            src, text = val.images[0], val.refs[0][0]
            where = f"the first validation image of the run's data ({self.config.data.source}) and its reference"
        else:
            where = "the image and caption given"
        if not text.strip():
            raise QKVError("the caption is empty")
        batch = self.pair_batch([src], [text.strip()])
        eps = self.config.train.label_smoothing
        logits = self.model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits  # (1, T, V), as the task's
        loss, nll, _ = smoothed_loss(logits, batch["tgt_out"], eps)  # loss
        m = self.model.config
        return TrainingExample(
            where, [f"caption: {text.strip()!r}"], self.tokenizer, batch["tgt_in"][0], batch["tgt_out"][0],
            logits[0], nll, "the NLL of smoothed_loss(logits, tgt_out, ε) — CaptionTask.loss",
            source_note=f"encoder input: the image as {m.n_patches} patches of {m.patch_size}×{m.patch_size} px (the "
                        "encoder sees them all at once; no tokens)",
            smoothing=eps, smoothed_loss=loss if eps else None, data={"caption": text.strip()})

    def evaluate(self, data: str | None = None, n: int | None = None, beam: int | None = None,
                 seed: int | None = None, hyps_out: str | None = None, progress=None) -> dict:
        """Exact match, BLEU-4, CIDEr-D (and per-attribute accuracy for procedural scenes) of the captions of each
        test group: procedural runs draw `n` (data.test_scenes) fresh scenes per group from `seed` (data.seed);
        folder runs score their validation images, or every image of the folder `data`."""
        from qkv.evaluation.captioning import caption_scores

        d = self.config.data
        dcfg = self.decoding(beam=beam)
        if n is not None and n < 1:
            raise QKVError(f"n must be at least 1, got {n}")
        groups: list[tuple[str, CaptionSet, bool]] = []
        if data is None and d.procedural:
            spec, seed = d.scene_spec(), d.seed if seed is None else seed
            for k, (name, counts, pairs) in enumerate(evaluation_groups(spec, n or d.test_scenes)):
                groups.append((name, procedural_set(spec, n or d.test_scenes, [seed, 2, k], counts, pairs), True))
            source = f"{d.source}: fresh test scenes (seed {seed}), {n or d.test_scenes} per group"
        elif data is None:
            everything = load_caption_folder(d.source, self.model.config.image_size, self.model.config.channels)
            _, val = split_folder(everything, d.val_fraction, d.seed)
            groups.append(("validation images", val.subset(list(range(min(len(val), n or len(val))))), False))
            source = f"{d.source} (the run's validation images)"
        else:
            if data in ("shapes", "clips"):
                raise QKVError(f"data = {data!r}: give a folder with captions.jsonl (a procedural run scores its own "
                               "test scenes without data)")
            folder = load_caption_folder(data, self.model.config.image_size, self.model.config.channels)
            groups.append((f"{data}", folder.subset(list(range(min(len(folder), n or len(folder))))), False))
            source = f"{data} (every image listed)"
        results, lines = [], []
        for name, cs, grammar in groups:
            if progress:
                progress(f"captioning {name}: {len(cs)} images")
            hyps = self.caption(cs.images, dcfg)
            lines += [h + "\n" for h in hyps]
            results.append({"group": name, **caption_scores(hyps, cs.refs, grammar),
                            "examples": [{"ref": r[0], "out": h} for r, h in zip(cs.refs[:2], hyps[:2], strict=True)]})
        if hyps_out:
            from qkv.runs import atomic_write_bytes

            atomic_write_bytes(Path(hyps_out), "".join(lines).encode("utf-8"))
        return {"source": source, "beam": dcfg.beam, "memory": self.model.config.memory, "groups": results}

    def report(self, r: dict) -> str:
        from qkv.data.scenes import ATTRIBUTES

        decoding = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines = [f"{r['source']}; {decoding}; decoder attends to "
                 f"{'every patch' if r['memory'] == 'patches' else 'one pooled vector'}"]
        grammar = any("attributes" in g for g in r["groups"])
        head = f"{'group':<58} {'images':>6} {'exact':>6} {'BLEU-4':>6} {'CIDEr-D':>7}"
        if grammar:
            head += "  " + " ".join(f"{a:>8}" for a in ATTRIBUTES)
        lines += [head, "-" * len(head)]
        for g in r["groups"]:
            row = (f"{g['group'][:58]:<58} {g['images']:>6} {100 * g['exact_match']:>5.1f}% "
                   f"{g['bleu4']['score']:>6.2f} {g['cider_d']:>7.3f}")
            if "attributes" in g:
                row += "  " + " ".join(f"{100 * g['attributes'][a]:>7.1f}%" for a in ATTRIBUTES)
            lines.append(row)
        lines.append("exact: the caption equals a reference; BLEU-4: sacreBLEU against every reference ("
                     f"{r['groups'][0]['bleu4']['signature']}); CIDEr-D: pycocoevalcap, pre-tokenised")
        if grammar:
            lines.append("attributes: read with the scene grammar; count per scene, the others per object (qkv eval "
                         "--json has the unparsed captions and examples)")
        return "\n".join(lines)


CaptionTask.run_class = CaptionRun
