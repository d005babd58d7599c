"""The speech recognition task (``task = "speech"``): recordings -> log-mel -> conv stem + encoder -> text.

``qkv train --preset fsdd-digits`` trains a transcriber (`qkv.models.transcriber`) on the Free Spoken Digit
Dataset; ``--preset speech-commands`` on espeak-ng command sentences and connected FSDD digits;
``--data.source FOLDER`` on your own recordings (``audio/*.wav`` + ``transcripts.jsonl``, `qkv.data.speech`). The
run directory holds config.json, model.safetensors, tokenizer.json (the characters of the texts), the trainer
state, metrics.jsonl and loss.png.

Logged at every evaluation: the validation loss (attention head: NLL per character, teacher-forced; CTC head: the
CTC loss per character) and, on full evaluations, the greedy word and character error rates of the validation
recordings (``val_wer``, ``val_cer``) and the share transcribed exactly (``val_exact``).

Inference (`SpeechRun`): ``transcribe`` (WAV files, their bytes or waveforms -> text, greedy or beam search: the
decoding loops of translation, unchanged; greedy CTC for a CTC run), ``cross_attention`` (each character's
attention over the encoder states, drawn over the spectrogram), ``evaluate`` (`qkv eval`: WER and CER per test
group, per speaker and per voice, a digit confusion matrix, the real-time factor).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from qkv.data.audio import HOP, SAMPLE_RATE, log_mel, read_wav
from qkv.data.transcribing import (
    ClipPool,
    ConnectedPool,
    Recording,
    SpeechBatches,
    SpeechDataConfig,
    SpeechSet,
    collate,
    commands_set,
    connected_set,
    describe_sets,
    folder_recordings,
    fsdd_recordings,
    fsdd_takes,
    set_batches,
    split_folder,
)
from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.generation.seq2seq import SequenceDecoding, decode_batch
from qkv.models.transcriber import Transcriber, TranscriberConfig
from qkv.runs import TOKENIZER_FILE
from qkv.tasks.base import Run, State, Task, last_eval
from qkv.tasks.capabilities import Capability, SourceBatch, TrainingExample
from qkv.tokenizers.base import Tokenizer
from qkv.training.config import TrainConfig


@dataclass
class SpeechTrainConfig(TrainConfig):
    label_smoothing: float = 0.0  # ε of the label-smoothed cross-entropy (attention head)
    # attention head: λ of the joint loss (1 − λ)·cross-entropy + λ·CTC of the encoder states (Watanabe et al. 2017);
    # the CTC term makes the encoder's states line up with the letters early, which the decoder's attention then finds
    ctc_weight: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {self.ctc_weight}")


@dataclass
class SpeechDecoding(SequenceDecoding):
    """Translation's decoding settings (`SequenceDecoding`), and one of speech's own: ``ctc_weight`` λ > 0 rescores
    the decoder's candidates (the beam's hypotheses, or the greedy transcript) and the CTC head's greedy transcript
    by (1 − λ)·log P_att + λ·log P_ctc (`qkv.generation.joint_ctc`); it needs a run trained with
    ``train.ctc_weight`` > 0, whose encoder states were trained to be read by CTC."""

    ctc_weight: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")


def _speech_decoding() -> SpeechDecoding:
    # a transcript's length follows the audio: at most 0.5 characters per encoder state (25 a second) + 10. The
    # fastest speech of FSDD and the espeak-ng commands says 0.67 characters per state with nothing added (a 180 ms
    # "three"), 0.41 over a sentence (tests/unit/tasks/test_speech.py); without the limit, a model that loses its
    # place repeats words up to the context's end and one recording's insertions can outweigh a test set's errors
    return SpeechDecoding(beam=1, length_penalty=0.6, max_len_a=0.5, max_len_b=10, batch_size=64)


@dataclass
class SpeechRunConfig:
    task: Literal["speech"] = "speech"
    model: TranscriberConfig = field(default_factory=TranscriberConfig)
    data: SpeechDataConfig = field(default_factory=SpeechDataConfig)
    train: SpeechTrainConfig = field(default_factory=lambda: SpeechTrainConfig(
        max_steps=3000, batch_size=32, lr=1e-3, min_lr=5e-5, warmup_steps=200, weight_decay=0.05, beta2=0.98,
        eval_interval=250, grad_clip=1.0))
    decode: SpeechDecoding = field(default_factory=_speech_decoding)


def no_ctc_rescoring(model: TranscriberConfig, trained_ctc_weight: float) -> str | None:
    """Why a run cannot rescore with CTC (``decode.ctc_weight`` > 0), or None if it can: the one rule behind both the
    conversion said at training and the refusal at decoding."""
    if model.head == "ctc":
        return "a CTC run decodes by CTC alone"
    if trained_ctc_weight == 0:
        return ("train.ctc_weight is 0: rescoring needs a run trained with train.ctc_weight > 0 (no CTC reading of the "
                "encoder was trained)")
    return None


def speech_tokenizer(texts: list[str]):
    """A character tokenizer of the texts, with <pad> (also the CTC blank), <bos> and <eos>."""
    from qkv.data.captions import train_caption_tokenizer

    return train_caption_tokenizer(texts, "char", 0, specials=("<pad>", "<bos>", "<eos>"))


# ---------------------------------------------------------------------------------------------- transcribing
def transcribe_mels(model, tok, mels: list[torch.Tensor], cfg: SequenceDecoding) -> list[str]:
    """One transcript per log-mel (M, F): greedy or beam search over the decoder (rescored with the CTC head when
    cfg.ctc_weight > 0), or greedy CTC, in batches."""
    from qkv.generation.ctc import ctc_greedy
    from qkv.generation.joint_ctc import joint_decode

    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    out: list[str] = []
    with torch.no_grad():
        for start in range(0, len(mels), cfg.batch_size):
            batch = collate(mels[start : start + cfg.batch_size])
            mel, frames = batch["mel"].to(device), batch["frames"].to(device)
            mask = model.memory_mask(frames, mel.size(-1))  # (B, S)
            if model.config.head == "ctc":
                ids = ctc_greedy(model.ctc_logits(mel, mask), mask.sum(1), tok.pad_id)
            elif getattr(cfg, "ctc_weight", 0.0) > 0:
                ids = joint_decode(model, mel, mask, tok.bos_id, tok.eos_id, tok.pad_id, cfg, cfg.ctc_weight,
                                   tok.vocab_size)
            else:
                ids = decode_batch(model, mel, mask, tok.bos_id, tok.eos_id, cfg, tok.vocab_size)
            out += [tok.decode(i).strip() for i in ids]
    model.train(was_training)
    return out


def set_loss(model, tok, data: SpeechSet) -> float:
    """The validation loss of a set: NLL per character (attention) or CTC loss per character (CTC), teacher-forced
    and unaugmented."""
    from qkv.training.losses import ctc_loss

    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    cfg = model.config
    device = model.lm_head.weight.device
    with torch.no_grad():
        for batch in set_batches(data, tok, cfg.max_seq_len, cfg.max_frames):
            mel, frames = batch["mel"].to(device), batch["frames"].to(device)
            tgt_in, tgt_out = batch["tgt_in"].to(device), batch["tgt_out"].to(device)
            mask = model.memory_mask(frames, mel.size(-1))
            if cfg.head == "ctc":
                loss, k = ctc_loss(model.ctc_logits(mel, mask), mask.sum(1), tgt_out, tok.pad_id, tok.eos_id)
            else:
                logits = model(mel, mask, tgt_in).logits
                k = int((tgt_out != -100).sum())
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=-100)
            total, n = total + loss.item() * k, n + k
    model.train(was_training)
    return total / max(1, n)


@dataclass
class SpeechData:
    """Training pools (one per source), fixed validation sets, and a line saying where it all came from."""

    pools: list
    val_sets: list[SpeechSet]
    source: str
    train_texts: list[str]


@dataclass
class SpeechState(State):
    data: SpeechData | None = None
    tok: Tokenizer | None = None


def read_speech_data(d: SpeechDataConfig, log=None) -> SpeechData:
    """Every source of `d` as a training pool and a validation set."""
    from qkv.data.speech import DIGIT_WORDS

    pools, vals, texts, where = [], [], list(DIGIT_WORDS), []
    for k, part in enumerate(d.parts):
        if part == "fsdd-digits":
            train = fsdd_recordings(fsdd_takes("train", d))
            pools.append(ClipPool(train, d.length_buckets))
            vals.append(SpeechSet("fsdd-digits (validation takes)", fsdd_recordings(fsdd_takes("val", d))))
            where.append(f"FSDD single digits ({len(train):,} training clips)")
        elif part == "fsdd-connected":
            clips = fsdd_takes("train", d)
            pools.append(ConnectedPool(clips, d))
            vals.append(SpeechSet("fsdd-connected (validation takes)",
                                  connected_set(fsdd_takes("val", d), d.val_size, d, [d.seed, 1, k])))
            where.append(f"FSDD connected digits from {len(clips):,} clips (fresh strings)")
        elif part == "commands":
            if log:
                log(f"speaking {d.commands_train + d.val_size:,} command sentences with espeak-ng ...")
            train = commands_set("train", d.commands_train, [d.seed, 3])
            pools.append(ClipPool(train, d.length_buckets))
            texts += [r.text for r in train]
            vals.append(SpeechSet("commands (validation)", commands_set("train", d.val_size, [d.seed, 4])))
            where.append(f"espeak-ng commands ({len(train):,} sentences)")
        else:
            everything = folder_recordings(part)
            train, val = split_folder(everything, d.val_fraction, d.seed)
            pools.append(ClipPool(train, d.length_buckets))
            texts += [r.text for r in everything]
            vals.append(SpeechSet(f"{part} (validation)", val))
            where.append(f"{part} ({len(everything):,} recordings)")
    if d.leave_out:
        where.append(f"speaker {d.leave_out} left out")
    texts += [t for v in vals for t in v.texts]
    return SpeechData(pools, vals, "; ".join(where), texts)


class SpeechTask(Task):
    name = "speech"
    config_class = SpeechRunConfig
    fitted_model_fields = ("vocab_size", "pad_id")

    # ------------------------------------------------------------------------------------------ preparing
    def read_data(self) -> SpeechData:
        return read_speech_data(self.cfg.data, self.ctx.say)

    def make_tokenizers(self, data: SpeechData) -> Tokenizer:
        tok = speech_tokenizer(data.train_texts)
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return tok

    def load_tokenizers(self, data: SpeechData) -> Tokenizer:
        from qkv.tokenizers import load_tokenizer

        return load_tokenizer(self.ctx.run_dir / TOKENIZER_FILE)

    def resolve(self, data: SpeechData, tok: Tokenizer) -> SpeechRunConfig:
        cfg = self.cfg
        if self.ctx.resume:
            return cfg
        why = no_ctc_rescoring(cfg.model, cfg.train.ctc_weight)
        if cfg.decode.ctc_weight > 0 and why:
            self.ctx.say(f"decode.ctc_weight {cfg.decode.ctc_weight:g} -> 0: {why}")
            cfg = replace(cfg, decode=replace(cfg.decode, ctc_weight=0.0))
        if cfg.model.head == "ctc" and cfg.decode.beam > 1:
            self.ctx.say(f"decode.beam {cfg.decode.beam} -> 1: a CTC run decodes greedily")
            cfg = replace(cfg, decode=replace(cfg.decode, beam=1))
        return replace(cfg, model=replace(cfg.model, vocab_size=tok.vocab_size, pad_id=tok.pad_id))

    def prepare(self, cfg: SpeechRunConfig, data: SpeechData, tok: Tokenizer) -> SpeechState:
        from qkv.data.captioning import encode_captions

        T = cfg.model.max_seq_len
        longest = max(data.train_texts, key=len)
        encode_captions(tok, [longest], T, tok.pad_id, tok.bos_id, tok.eos_id, where="transcript")
        meta = {"source": data.source, "validation": describe_sets(data.val_sets), "vocab_size": tok.vocab_size,
                "head": cfg.model.head}
        return SpeechState(cfg, meta, data, tok)

    def build_model(self, state: SpeechState):
        from qkv.models.io import load_model

        model = load_model(self.ctx.run_dir)[0] if self.ctx.resume else Transcriber(state.cfg.model)
        m = model.config
        head = (f"a {m.n_decoder_layers}-layer decoder writes characters" if m.head == "attention"
                else "a CTC head reads every encoder state (no decoder)")
        self.ctx.say(f"transcriber: {model.num_params():,} parameters; {m.n_mels} mel bins every 10 ms -> conv stem "
                     f"(stride 2) -> {m.n_encoder_layers} encoder layers, {m.d_model} wide; {head}")
        return model

    def batches(self, state: SpeechState, rows: int, rank: int, world: int):
        m = state.cfg.model
        return SpeechBatches(state.data.pools, state.cfg.data, state.tok, m.max_seq_len, m.max_frames, rows,
                             seed=state.cfg.train.seed, rank=rank, world_size=world)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, state: SpeechState, model, batch):
        from qkv.training.losses import ctc_loss, smoothed_loss

        mel = batch["mel"]
        mask = Transcriber.memory_mask(batch["frames"], mel.size(-1))  # (B, S)
        if state.cfg.model.head == "ctc":
            logits = model(mel, mask, batch["tgt_in"]).logits  # (B, S, V): one distribution per encoder state
            loss, n = ctc_loss(logits, mask.sum(1), batch["tgt_out"], state.tok.pad_id, state.tok.eos_id)
            return loss, {"chars": n, "ctc": (loss.item() * n, n)}
        lam = state.cfg.train.ctc_weight
        if lam == 0:
            logits = model(mel, mask, batch["tgt_in"]).logits
            loss, nll, n = smoothed_loss(logits, batch["tgt_out"], state.cfg.train.label_smoothing)
            return loss, {"tokens": n, "nll": (nll.item() * n, n)}
        out = model(mel, mask, batch["tgt_in"], encoder_ctc=True)  # the decoder's logits and the encoder's CTC logits
        ce, nll, n = smoothed_loss(out.logits, batch["tgt_out"], state.cfg.train.label_smoothing)
        ctc, chars = ctc_loss(out.ctc_logits, mask.sum(1), batch["tgt_out"], state.tok.pad_id, state.tok.eos_id)
        return (1 - lam) * ce + lam * ctc, {"tokens": n, "nll": (nll.item() * n, n), "ctc": (ctc.item() * chars, chars)}

    def loss_terms(self, batch) -> int:
        return int((batch["tgt_out"] != -100).sum())

    def evaluate(self, state: SpeechState, model, full: bool, train_means: dict) -> dict:
        from qkv.evaluation.transcription import error_rates

        val = state.data.val_sets
        out = {}
        for key in ("nll", "ctc"):
            if key in train_means:
                out[f"train_{key}"] = train_means[key]
        out["val_loss"] = sum(set_loss(model, state.tok, v) for v in val) / len(val)
        if state.cfg.model.head == "attention":
            out["val_ppl"] = perplexity(out["val_loss"])
        if full:
            m = model.config
            items = [r for v in val for r in v.items]
            hyps = transcribe_mels(model, state.tok, [log_mel(r.wave)[:, : m.max_frames] for r in items],
                                   replace(state.cfg.decode, beam=1, ctc_weight=0.0))
            rates = error_rates(hyps, [r.text for r in items])
            out.update(val_wer=rates["wer"], val_cer=rates["cer"], val_exact=rates["exact"])
        return out

    # ------------------------------------------------------------------------------------------ finishing
    def summary(self, state: SpeechState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last, wer = last_eval(result, "val_loss"), last_eval(result, "val_wer")
        if last:
            lines.append(f"val loss {last['val_loss']:.4f} (per character)")
        if wer:
            n = sum(len(v) for v in state.data.val_sets)
            lines.append(f"val WER {100 * wer['val_wer']:.2f}% | CER {100 * wer['val_cer']:.2f}% | exact "
                         f"{100 * wer['val_exact']:.1f}% (greedy, {n:,} validation recordings)")
        return lines

    def samples(self, state: SpeechState, model):
        items = [v.items[0] for v in state.data.val_sets] + state.data.val_sets[0].items[1:3]
        m = model.config
        hyps = transcribe_mels(model, state.tok, [log_mel(r.wave)[:, : m.max_frames] for r in items],
                               replace(state.cfg.decode, beam=1, ctc_weight=0.0))
        yield "--- sample transcripts (validation) " + "-" * 35 + "\n"
        for r, h in zip(items, hyps, strict=True):
            yield f"ref: {r.text}\nout: {h}  ({'=' if h == r.text else '≠'})\n\n"
        yield "-" * 71 + "\n"

    def next_command(self) -> str:
        return f"evaluate it: qkv eval {self.ctx.run_dir}   transcribe: qkv transcribe {self.ctx.run_dir} file.wav"


class SpeechRun(Run):
    """A trained transcriber: transcribe recordings, draw where each character listened, score it (`qkv.load_run`).

    A source is a WAV file's path, its bytes (an upload) or a waveform tensor (N,) at 16 kHz in [-1, 1]."""

    task = "speech"
    config_class = SpeechRunConfig
    model_type = "transcriber"
    source_kind = "audio"

    def __init__(self, path, config, saved, model, tok):
        super().__init__(path, config, saved, model)
        self.tokenizer = tok
        self._validation: list[SpeechSet] | None = None

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        from qkv.tokenizers import load_tokenizer

        model, saved, config = cls._load_model(path, device)
        return cls(path, config, saved, model, load_tokenizer(Path(path) / TOKENIZER_FILE))

    @property
    def capabilities(self) -> frozenset[Capability]:
        """A CTC run has no decoder: no teacher-forced example to show position by position."""
        extra = set() if self.ctc else {Capability.TRAINING_EXAMPLES}
        return super().capabilities | {Capability.SOURCE_TO_TEXT, Capability.TOKENS} | extra

    @property
    def target_tokenizer(self):
        return self.tokenizer

    @property
    def ctc(self) -> bool:
        return self.model.config.head == "ctc"

    def decoding(self, **changes) -> SpeechDecoding:
        """The run's [decode] settings with `changes` (None values ignored) on top; QKVError if invalid (a CTC run
        decodes greedily: beam > 1 is refused; ctc_weight > 0 needs an attention run trained with a CTC term)."""
        dcfg = self.settings(self.config.decode, changes, "decode.")
        if self.ctc and dcfg.beam > 1:
            raise QKVError(f"{self.path.name} is a CTC run: it decodes greedily (beam 1), got beam {dcfg.beam}",
                           argument="beam")
        why = no_ctc_rescoring(self.model.config, self.config.train.ctc_weight)
        if dcfg.ctc_weight > 0 and why:
            raise QKVError(f"{self.path.name}: decode.ctc_weight {dcfg.ctc_weight:g}: {why}", argument="ctc_weight")
        return dcfg

    # ------------------------------------------------------------------------------------------ reading audio
    def read(self, source: str | Path | bytes) -> tuple[torch.Tensor, str]:
        """A WAV file or its bytes -> (the waveform (N,) at 16 kHz, the notes of every conversion and of a cut, "" if
        none). QKVError if it is missing, not a WAV, empty or shorter than one frame."""
        wave, notes = read_wav(source, name="the upload" if isinstance(source, bytes) else None)
        most = self.model.config.max_frames * HOP
        if len(wave) > most:
            where = "the upload" if isinstance(source, bytes) else str(source)
            notes.append(f"{where}: {len(wave) / SAMPLE_RATE:.1f} s is longer than the model's "
                         f"{most / SAMPLE_RATE:.1f} s; transcribed the first {most / SAMPLE_RATE:.1f} s")
            wave = wave[:most]
        return wave, "; ".join(notes)

    def read_source(self, source) -> tuple[torch.Tensor, str]:
        return (self.wave(source), "") if isinstance(source, torch.Tensor) else self.read(source)

    def wave(self, source) -> torch.Tensor:
        """A source (path, bytes or waveform) as a waveform (N,) at 16 kHz, cut to the model's frames."""
        if isinstance(source, torch.Tensor):
            if source.dim() != 1 or len(source) < 400:
                raise QKVError(f"a waveform for this run is one channel of at least 400 samples (25 ms at 16 kHz), "
                               f"got shape {' × '.join(map(str, source.shape))}")
            return source.float().clamp(-1, 1)[: self.model.config.max_frames * HOP]
        return self.read(source)[0]

    def mel(self, source) -> torch.Tensor:
        """A source as the encoder's input: log-mel (M, F)."""
        return log_mel(self.wave(source))[:, : self.model.config.max_frames]

    def state_labels(self, n: int) -> list[str]:
        """One label per encoder state: its time in the recording (20 ms apart)."""
        return [f"{0.02 * s:.2f}s" for s in range(n)]

    # ------------------------------------------------------------------------------------------ transcribing
    def transcribe(self, sources: list, decoding: SequenceDecoding | None = None, **changes) -> list[str]:
        """One transcript per source (WAV path, bytes or waveform); decoding from `decoding` (default the run's
        [decode]) with any setting given as a keyword on top: ``beam=4``."""
        dcfg = self.decoding(**changes) if changes or decoding is None else decoding
        if decoding is not None and changes:
            dcfg = self.settings(decoding, changes, "decode.")
        return transcribe_mels(self.model, self.tokenizer, [self.mel(s) for s in sources], dcfg)

    def to_text(self, sources: list, decoding: SequenceDecoding | None = None, **changes) -> list[str]:
        return self.transcribe(sources, decoding, **changes)

    def n_best(self, source, decoding: SequenceDecoding | None = None, n: int = 5) -> list[dict]:
        """The n best transcripts with their log-probabilities (a CTC run: its one greedy transcript). Rescored with
        CTC (decoding.ctc_weight > 0): the candidates by their joint score (``score``), ``logprob`` the decoder's and
        ``ctc_logprob`` the CTC head's; the first is what `transcribe` gives."""
        from qkv.generation.seq2seq import nbest

        if self.ctc:
            return [{"text": self.transcribe([source])[0], "logprob": None}]
        dcfg = decoding or self.config.decode
        batch = self.source_batch([source])
        if getattr(dcfg, "ctc_weight", 0.0) > 0:
            return self._rescored(batch, dcfg)[:n]
        return nbest(self.model, batch.src, batch.src_mask, self.tokenizer, dcfg, n)

    def _rescored(self, batch: SourceBatch, dcfg: SpeechDecoding) -> list[dict]:
        """One recording's candidates, best joint score first (`joint_nbest`), with their texts."""
        from qkv.generation.joint_ctc import joint_nbest

        tok = self.tokenizer
        self.model.eval()
        (ranked,) = joint_nbest(self.model, batch.src, batch.src_mask, tok.bos_id, tok.eos_id, tok.pad_id, dcfg,
                                dcfg.ctc_weight, tok.vocab_size)
        return [{"text": tok.decode(h["tokens"]), **h, "finished": True} for h in ranked]

    def source_batch(self, sources: list) -> SourceBatch:
        """Recordings as the encoder reads them: log-mel frames, zero-padded, and the mask of real states."""
        b = collate([self.mel(s) for s in sources])
        device = self.model.lm_head.weight.device
        mel, frames = b["mel"].to(device), b["frames"].to(device)
        mask = self.model.memory_mask(frames, mel.size(-1))  # (B, S)
        return SourceBatch(mel, mask, [self.state_labels(int(k)) for k in mask.sum(1)])

    def cross_attention(self, source, decoding: SequenceDecoding | None = None):
        """Transcribe the recording, then every decoder layer's cross-attention of each character over the encoder
        states (an AttentionStack with the log-mel, for drawing the weights over the spectrogram)."""
        from qkv.evaluation.attention import source_attention

        if self.ctc:
            raise QKVError(f"{self.path.name} is a CTC run: it has no decoder, so no cross-attention")
        dcfg = decoding or self.config.decode
        batch = self.source_batch([source])
        decoded = None
        if getattr(dcfg, "ctc_weight", 0.0) > 0:  # the transcript `transcribe` gives: rescored with CTC
            decoded = self._rescored(batch, dcfg)[0]["tokens"]
        stack = source_attention(self.model, batch.src, batch.src_mask, batch.labels[0], self.tokenizer, dcfg,
                                 decoded=decoded)
        stack.xlabel, stack.note = "encoder states (20 ms each)", f"transcript: {stack.text}"
        stack.spectrogram = batch.src[0].cpu()  # (M, F)
        return stack

    # ------------------------------------------------------------------------------------------ data
    def validation(self) -> list[SpeechSet]:
        if self._validation is None:
            self._validation = read_speech_data(self.config.data).val_sets
        return self._validation

    def example_sources(self, n: int = 1) -> list[torch.Tensor]:
        return [r.wave for r in self.validation()[0].items[:n]]

    def reference_pairs(self, n: int | None = None) -> tuple[list[torch.Tensor], list[str], str]:
        val = self.validation()[0]
        k = len(val) if n is None else min(n, len(val))
        return [r.wave for r in val.items[:k]], val.texts[:k], val.name

    def test_sets(self, n: int | None = None, seed: int | None = None) -> list[SpeechSet]:
        """The run's test groups: FSDD test takes (single digits as they are, connected strings joined from them;
        with leave_out, the speaker left out), held-out espeak-ng voices and templates; a folder: its validation."""
        d = self.config.data
        seed = d.seed if seed is None else seed
        sets = []
        for k, part in enumerate(d.parts):
            who = f"speaker {d.leave_out} (left out)" if d.leave_out else "test takes 0-4"
            if part == "fsdd-digits":
                rec = fsdd_recordings(fsdd_takes("test", d))
                if n and n < len(rec):  # evenly spaced, so every speaker and digit is in a small sample
                    rec = [rec[round(i * len(rec) / n)] for i in range(n)]
                sets.append(SpeechSet(f"fsdd single digits, {who}", rec))
            elif part == "fsdd-connected":
                sets.append(SpeechSet(f"fsdd connected digits, {who}",
                                      connected_set(fsdd_takes("test", d), n or d.test_size, d, [seed, 2, k])))
            elif part == "commands":
                sets.append(SpeechSet("commands, held-out voices and templates",
                                      commands_set("test", n or d.test_size, [seed, 5])))
            else:
                _, val = split_folder(folder_recordings(part), d.val_fraction, d.seed)
                sets.append(SpeechSet(f"{part} (the run's validation recordings)", val[: n or len(val)]))
        return sets

    def dataset_pairs(self, data: str, split: str | None = None) -> tuple[list[torch.Tensor], list[str], str]:
        """Waveforms and transcripts of a speech folder (every recording listed)."""
        rec = folder_recordings(data)
        return [r.wave for r in rec], [r.text for r in rec], f"{data} (every recording listed)"

    def pair_batch(self, sources: list, targets: list[str]) -> dict:
        """Recordings and transcripts as training batches them: src (log-mel), src_mask (real states), tgt_in = BOS
        + text, tgt_out = text + EOS (-100 at padding)."""
        b = collate([self.mel(s) for s in sources], list(targets), self.tokenizer, self.model.config.max_seq_len)
        device = self.model.lm_head.weight.device
        mel, frames = b["mel"].to(device), b["frames"].to(device)
        return {"src": mel, "src_mask": self.model.memory_mask(frames, mel.size(-1)),
                "tgt_in": b["tgt_in"].to(device), "tgt_out": b["tgt_out"].to(device)}

    def reference_loss(self, sources: list, targets: list[str]) -> tuple[float, int]:
        data = SpeechSet("given", [Recording(self.wave(s), t) for s, t in zip(sources, targets, strict=True)])
        n = sum(len(self.tokenizer.encode(t)) + 1 for t in targets)
        return set_loss(self.model, self.tokenizer, data), n

    # ------------------------------------------------------------------------------------------ tokens
    def text_tokenizer(self):
        return self.tokenizer, "transcript"

    def example_text(self) -> str:
        return self.validation()[0].texts[0]

    def training_example(self, text: str | None = None, src=None, limit: int = 32) -> TrainingExample:
        """A recording and its transcript as `SpeechTask.loss` scores them: the encoder reads the log-mel frames, the
        decoder BOS + transcript and must produce transcript + EOS. `src` (a recording) and `text` (its transcript)
        together, or the first validation recording and its transcript."""
        from qkv.training.losses import smoothed_loss

        if (src is None) != (text is None):
            raise QKVError("a recording-transcript pair needs both: src (the recording) and text (its transcript)",
                           argument="src" if src is None else "text")
        if src is None:
            val = self.validation()[0]
            src, text = val.items[0].wave, val.items[0].text
            where = f"the first validation recording of the run's data ({val.name}) and its transcript"
        else:
            where = "the recording and transcript given"
        if not text.strip():
            raise QKVError("the transcript is empty")
        batch = self.pair_batch([src], [text.strip()])
        eps = self.config.train.label_smoothing
        logits = self.model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits  # (1, T, V), as the task's
        loss, nll, _ = smoothed_loss(logits, batch["tgt_out"], eps)  # loss
        frames, states = batch["src"].size(-1), int(batch["src_mask"].sum())
        return TrainingExample(
            where, [f"transcript: {text.strip()!r}"], self.tokenizer, batch["tgt_in"][0], batch["tgt_out"][0],
            logits[0], nll, "the NLL of smoothed_loss(logits, tgt_out, ε) — SpeechTask.loss",
            source_note=f"encoder input: {frames} log-mel frames of 10 ms -> {states} encoder states of 20 ms (the "
                        "encoder hears them all at once; no tokens)",
            smoothing=eps, smoothed_loss=loss if eps else None, data={"transcript": text.strip()})

    # ------------------------------------------------------------------------------------------ evaluating
    def evaluate(self, data: str | None = None, n: int | None = None, beam: int | None = None,
                 seed: int | None = None, hyps_out: str | None = None, confusion: str | None = None,
                 ctc_weight: float | None = None, progress=None) -> dict:
        """WER, CER and exact match of each test group (`test_sets`, or every recording of the folder `data`), per
        speaker and per voice; the digit confusion matrix of single digits (a PNG at `confusion`); the real-time
        factor (seconds of compute per second of audio, greedy, this process's threads)."""
        from qkv.evaluation.transcription import digit_confusion, error_rates, plot_confusion, rates_by

        if n is not None and n < 1:
            raise QKVError(f"n must be at least 1, got {n}")
        dcfg = self.decoding(beam=beam, ctc_weight=ctc_weight)
        if data is None:
            sets = self.test_sets(n, seed)
            source = f"{self.config.data.source} (test sets, seed {self.config.data.seed if seed is None else seed})"
        else:
            rec = folder_recordings(data)
            sets, source = [SpeechSet(data, rec[: n or len(rec)])], f"{data} (every recording listed)"
        results, lines, confusion_total = [], [], None
        audio_s = compute_s = 0.0
        for s in sets:
            if progress:
                progress(f"transcribing {s.name}: {len(s)} recordings")
            t0 = time.perf_counter()
            hyps = transcribe_mels(self.model, self.tokenizer,
                                   [log_mel(r.wave)[:, : self.model.config.max_frames] for r in s.items], dcfg)
            compute_s += time.perf_counter() - t0
            audio_s += sum(r.seconds for r in s.items)
            lines += [h + "\n" for h in hyps]
            metas = [r.meta for r in s.items]
            group = {"group": s.name, **error_rates(hyps, s.texts), "by_speaker": rates_by(hyps, s.texts, metas,
                     "speaker"), "by_voice": rates_by(hyps, s.texts, metas, "voice"),
                     "examples": [{"ref": r, "out": h} for r, h in zip(s.texts[:3], hyps[:3], strict=True)],
                     "accents": {m["speaker"]: m["accent"] for m in metas if m.get("speaker") and m.get("accent")}}
            cm = digit_confusion(hyps, s.texts)
            if cm.sum() == len(s):  # single digits: the confusion matrix
                group["confusion"] = cm.tolist()
                confusion_total = cm if confusion_total is None else confusion_total + cm
            results.append(group)
        if hyps_out:
            from qkv.runs import atomic_write_bytes

            atomic_write_bytes(Path(hyps_out), "".join(lines).encode("utf-8"))
        out = {"source": source, "beam": dcfg.beam, "ctc_weight": dcfg.ctc_weight, "head": self.model.config.head,
               "groups": results,
               "rtf": compute_s / max(audio_s, 1e-9), "audio_s": audio_s, "threads": torch.get_num_threads()}
        if confusion and confusion_total is not None:
            out["confusion_png"] = str(plot_confusion(confusion_total, confusion))
        return out

    def report(self, r: dict) -> str:
        decoding = "greedy CTC" if r["head"] == "ctc" else "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        if r.get("ctc_weight"):
            decoding += f", rescored with CTC (weight {r['ctc_weight']:g})"
        lines = [f"{r['source']}; {decoding}"]
        head = f"{'group':<52} {'n':>5} {'WER':>7} {'CER':>7} {'exact':>7}"
        lines += [head, "-" * len(head)]
        for g in r["groups"]:
            lines.append(f"{g['group'][:52]:<52} {g['n']:>5} {100 * g['wer']:>6.2f}% {100 * g['cer']:>6.2f}% "
                         f"{100 * g['exact']:>6.1f}%")
            for key in ("by_speaker", "by_voice"):
                for name, s in g[key].items():
                    accent = g.get("accents", {}).get(name)
                    label = f"  {key[3:]} {name}" + (f" ({accent})" if accent else "")
                    lines.append(f"{label[:52]:<52} {s['n']:>5} {100 * s['wer']:>6.2f}% {100 * s['cer']:>6.2f}% "
                                 f"{100 * s['exact']:>6.1f}%")
        lines.append(f"real-time factor {r['rtf']:.4f} ({r['audio_s']:.0f} s of audio, {r['threads']} thread(s); "
                     "seconds of compute per second of audio)")
        if "confusion_png" in r:
            lines.append(f"digit confusion matrix: {r['confusion_png']}")
        lines.append("WER, CER: jiwer, summed over each group's edits; exact: the transcript equals the reference")
        return "\n".join(lines)


SpeechTask.run_class = SpeechRun
