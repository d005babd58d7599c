"""Speech recognition data: recordings and their transcripts -> augmented log-mel batches.

Where the recordings come from (``data.source``; several joined by "+", e.g. ``"fsdd-connected+commands"``):

- ``fsdd-digits``: the Free Spoken Digit Dataset, one digit per recording, its word as the text ("seven");
- ``fsdd-connected``: strings of 1–7 digits joined from clips of one speaker with silences between them
  ("three one four"), drawn fresh for every training example (`qkv.data.speech.connected_digits`);
- ``commands``: sentences of a small command grammar spoken by espeak-ng ("set a timer for seven minutes"),
  synthesised once per run (`qkv.data.commands`);
- a folder of ``audio/*.wav`` and ``transcripts.jsonl`` (`qkv.data.speech.read_speech_folder`): your own.

FSDD's official split keeps takes 0–4 of every speaker and digit for testing; training uses takes 10–49 and
validation takes 5–9, so the test takes are never seen, not even for choosing a checkpoint. ``leave_out =
"george"`` holds one speaker out entirely: training and validation use the other five, the test is every take of
the speaker left out (the unseen-speaker number). The command grammar keeps some sentence templates and some
voices for testing only (`qkv.data.commands`).

Training examples are augmented where the recognizer should not care (each can be turned off):
speed perturbation (the waveform resampled by a factor drawn from ``speeds``, Ko et al. 2015), a random gain,
background noise at a random signal-to-noise ratio, and SpecAugment on the log-mel (Park et al. 2019): a few
bands of mel bins and a few stretches of frames set to zero. Validation and test examples are never augmented.

A training batch draws all its rows from one source and one length bucket of it (``length_buckets``): connected
strings of one digit count, or one share of a source's recordings sorted by length. Drawn at random per example,
a batch of 16 held a seven-digit string almost always, and single digits (0.5 s) were padded to its 4 s: most of
the compute went to padding. Per bucket, the sources and lengths are mixed over batches as they were over rows.

A batch (`qkv.data.batch`): ``mel`` (B, M, F) zero-padded log-mel frames, ``frames`` (B,) real frames per row,
``tgt_in``/``tgt_out`` (B, T) the text as the decoder reads and predicts it (BOS + text, text + EOS, -100 at
padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from qkv.data.audio import SAMPLE_RATE, log_mel
from qkv.data.batching import GeneratorBatches
from qkv.data.captioning import encode_captions
from qkv.errors import QKVError

GENERATED = ("fsdd-digits", "fsdd-connected", "commands")
TRAIN_TAKES, VAL_TAKES, TEST_TAKES = range(10, 50), range(5, 10), range(0, 5)


@dataclass
class SpeechDataConfig:
    source: str = "fsdd-digits"  # fsdd-digits, fsdd-connected, commands (several joined by "+"), or a folder
    leave_out: str = ""  # an FSDD speaker kept out of training and validation; the test is that speaker alone
    digits: list[int] = field(default_factory=lambda: [1, 7])  # fsdd-connected: the fewest and most digits
    gap_ms: list[float] = field(default_factory=lambda: [50.0, 300.0])  # fsdd-connected: silence between digits
    speeds: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # speed perturbation; [1.0] turns it off
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])  # random gain; [0, 0] turns it off
    noise_snr_db: list[float] = field(default_factory=lambda: [10.0, 40.0])  # white noise at this SNR; [] off
    noise_prob: float = 0.5  # share of training examples that get noise
    spec_augment: bool = True
    freq_masks: int = 2  # SpecAugment: bands of mel bins zeroed per example
    freq_width: int = 10  # ... each up to this many bins wide
    time_masks: int = 2  # ... stretches of frames zeroed per example
    time_width: float = 0.05  # ... each up to this share of the frames
    length_buckets: int = 8  # each training batch from one length bucket of one source (less padding); 1: off
    commands_train: int = 2000  # commands: sentences synthesised for training
    val_size: int = 200  # generated sources: validation recordings per source
    test_size: int = 300  # generated sources: test recordings per source (`qkv eval`)
    val_fraction: float = 0.1  # folders: share of the recordings that validate
    seed: int = 0  # validation and test sets, synthesis, the folder split

    def __post_init__(self):
        if not self.source:
            raise ValueError("source is empty; give fsdd-digits, fsdd-connected, commands or a folder")
        if len(self.digits) != 2 or not 1 <= self.digits[0] <= self.digits[1] <= 20:
            raise ValueError(f"digits must be [fewest, most] with 1 <= fewest <= most <= 20, got {self.digits}")
        if len(self.gap_ms) != 2 or not 0 <= self.gap_ms[0] <= self.gap_ms[1]:
            raise ValueError(f"gap_ms must be [shortest, longest] with 0 <= shortest <= longest, got {self.gap_ms}")
        if not self.speeds or any(not 0.5 <= s <= 2.0 for s in self.speeds):
            raise ValueError(f"speeds must be factors in [0.5, 2], got {self.speeds}")
        if len(self.gain_db) != 2 or self.gain_db[0] > self.gain_db[1]:
            raise ValueError(f"gain_db must be [lowest, highest], got {self.gain_db}")
        if self.noise_snr_db and (len(self.noise_snr_db) != 2 or self.noise_snr_db[0] > self.noise_snr_db[1]):
            raise ValueError(f"noise_snr_db must be [] or [lowest, highest], got {self.noise_snr_db}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        for name in ("freq_masks", "freq_width", "time_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not 0.0 <= self.time_width < 1.0:
            raise ValueError(f"time_width must be in [0, 1), got {self.time_width}")
        for name in ("length_buckets", "commands_train", "val_size", "test_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        parts = self.parts
        if any(p not in GENERATED for p in parts) and len(parts) > 1:
            raise ValueError(f"a folder cannot be mixed with other sources: {self.source!r}")
        if self.leave_out and not any(p.startswith("fsdd") for p in parts):
            raise ValueError("leave_out names an FSDD speaker: it needs an fsdd source")

    @property
    def parts(self) -> list[str]:
        return [p.strip() for p in self.source.split("+") if p.strip()]

    @property
    def generated(self) -> bool:
        return all(p in GENERATED for p in self.parts)


# ---------------------------------------------------------------------------------------------- recordings
@dataclass
class Recording:
    """One recording at 16 kHz and what is said in it; `meta` keeps where it came from (speaker, voice, ...)."""

    wave: Tensor  # (N,) float32 in [-1, 1]
    text: str
    meta: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.wave) / SAMPLE_RATE


@dataclass
class SpeechSet:
    """Fixed recordings (validation or test), with a name for each group they are scored in."""

    name: str
    items: list[Recording]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.items]


class Pool:
    """Where training examples of one source come from: `draw(rng, bucket)` -> a fresh recording of that length
    bucket. A batch draws all its rows from one bucket of one pool (`SpeechBatches`): rows of similar length, so
    little of the batch is padding."""

    buckets: int = 1

    def draw(self, rng: np.random.Generator, bucket: int = 0) -> Recording:
        raise NotImplementedError


class ClipPool(Pool):
    """Whole recordings drawn with replacement (FSDD single digits, synthesised sentences, a folder), sorted by
    length into `buckets` equal shares of at least `MIN_BUCKET` recordings each."""

    MIN_BUCKET = 64

    def __init__(self, items: list[Recording], buckets: int = 1):
        if not items:
            raise QKVError("no training recordings")
        self.items = items
        self.buckets = max(1, min(buckets, len(items) // self.MIN_BUCKET))
        order = sorted(range(len(items)), key=lambda i: len(items[i].wave))
        n, k = len(items), self.buckets
        self.members = [order[j * n // k : (j + 1) * n // k] for j in range(k)]  # shortest share first

    def draw(self, rng, bucket=0):
        share = self.members[bucket]
        return self.items[share[int(rng.integers(len(share)))]]


class ConnectedPool(Pool):
    """Connected digit strings joined from clips of one speaker, fresh for every example; bucket b holds the
    strings of (fewest + b) digits."""

    def __init__(self, clips: list, cfg: SpeechDataConfig):
        if not clips:
            raise QKVError("no FSDD clips to join")
        self.clips, self.cfg = clips, cfg
        self.buckets = cfg.digits[1] - cfg.digits[0] + 1 if cfg.length_buckets > 1 else 1

    def draw(self, rng, bucket=None):
        from qkv.data.speech import connected_digits

        lo, hi = self.cfg.digits
        n = (lo + bucket, lo + bucket) if self.buckets > 1 and bucket is not None else (lo, hi)
        wave, text, meta = connected_digits(self.clips, rng, n_digits=n, gap_ms=tuple(self.cfg.gap_ms),
                                            gain_db=(0.0, 0.0), noise_snr_db=None)
        return Recording(torch.as_tensor(wave, dtype=torch.float32), text, meta)


def fsdd_recordings(clips: list) -> list[Recording]:
    """FSDD clips as recordings: the digit's word is the text."""
    from qkv.data.speech import DIGIT_WORDS, FSDD_ACCENTS, clip_wave

    return [Recording(clip_wave(c), DIGIT_WORDS[c.digit], {"speaker": c.speaker, "accent": FSDD_ACCENTS.get(c.speaker),
                                                           "take": c.take, "digits": str(c.digit)}) for c in clips]


def fsdd_takes(split: str, cfg: SpeechDataConfig) -> list:
    """FSDD clips of a split: train (takes 10–49), val (5–9), test (0–4); with `leave_out`, train and val are the
    other speakers' and test is every take of the speaker left out."""
    from qkv.data.speech import fsdd_clips

    clips = fsdd_clips()
    speakers = sorted({c.speaker for c in clips})
    if cfg.leave_out and cfg.leave_out not in speakers:
        raise QKVError(f"leave_out: no FSDD speaker {cfg.leave_out!r}; the speakers are {', '.join(speakers)}")
    takes = {"train": TRAIN_TAKES, "val": VAL_TAKES, "test": TEST_TAKES}[split]
    if cfg.leave_out:
        if split == "test":
            return [c for c in clips if c.speaker == cfg.leave_out]
        return [c for c in clips if c.speaker != cfg.leave_out and c.take in takes]
    return [c for c in clips if c.take in takes]


def connected_set(clips: list, n: int, cfg: SpeechDataConfig, seed: list[int]) -> list[Recording]:
    """`n` fixed connected-digit strings from `clips` (validation or test: no augmentation)."""
    pool, rng = ConnectedPool(clips, cfg), np.random.default_rng(seed)
    return [pool.draw(rng, None) for _ in range(n)]


def commands_set(split: str, n: int, seed: list[int]) -> list[Recording]:
    """`n` command sentences spoken by espeak-ng: `split` "train" uses the training templates and voices, "test"
    the held-out ones only (`qkv.data.commands`)."""
    from qkv.data.commands import utterances

    return [Recording(torch.as_tensor(w, dtype=torch.float32), t, m)
            for w, t, m in utterances(np.random.default_rng(seed), n, split)]


def folder_recordings(folder: str) -> list[Recording]:
    from qkv.data.audio import read_wav
    from qkv.data.speech import read_speech_folder

    out = []
    for item in read_speech_folder(folder):
        wave, _ = read_wav(item.audio)
        out.append(Recording(wave, item.text, {**item.meta, **({"speaker": item.speaker} if item.speaker else {})}))
    return out


def split_folder(items: list[Recording], val_fraction: float, seed: int) -> tuple[list[Recording], list[Recording]]:
    """(train, validation) of a folder's recordings: a seeded shuffle, at least one of each."""
    if len(items) < 2:
        raise QKVError(f"a speech folder needs at least 2 recordings to train and validate, got {len(items)}")
    order = np.random.default_rng(seed).permutation(len(items))
    k = min(len(items) - 1, max(1, round(val_fraction * len(items))))
    return [items[i] for i in order[k:]], [items[i] for i in order[:k]]


# ---------------------------------------------------------------------------------------------- augmentation
def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """The recording played `factor` times faster (pitch moves with it, as a tape's): resampled to len / factor."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    if factor == 1.0:
        return wave
    f = Fraction(factor).limit_denominator(20)
    return resample_poly(wave, f.denominator, f.numerator).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` below the recording's mean power."""
    power = float(np.mean(wave.astype(np.float64) ** 2)) + 1e-12
    noise = rng.standard_normal(len(wave)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + noise).astype(np.float32)


def spec_augment(mel: Tensor, cfg: SpeechDataConfig, rng: np.random.Generator) -> Tensor:
    """SpecAugment's masks (no time warping) on one log-mel (M, F): `freq_masks` bands of up to `freq_width` bins
    and `time_masks` stretches of up to `time_width` · F frames, set to 0 (the normalised log-mel's middle)."""
    mel = mel.clone()
    M, Fr = mel.shape
    for _ in range(cfg.freq_masks):
        w = int(rng.integers(0, cfg.freq_width + 1))
        f0 = int(rng.integers(0, max(1, M - w)))
        mel[f0 : f0 + w] = 0.0
    for _ in range(cfg.time_masks):
        w = int(rng.integers(0, int(cfg.time_width * Fr) + 1))
        t0 = int(rng.integers(0, max(1, Fr - w)))
        mel[:, t0 : t0 + w] = 0.0
    return mel


def augment(rec: Recording, cfg: SpeechDataConfig, rng: np.random.Generator) -> np.ndarray:
    """A training copy of a recording's waveform: speed, gain and noise drawn from `rng`."""
    wave = rec.wave.numpy()
    wave = change_speed(wave, float(cfg.speeds[int(rng.integers(len(cfg.speeds)))]))
    wave = wave * np.float32(10 ** (rng.uniform(*cfg.gain_db) / 20))
    if cfg.noise_snr_db and rng.random() < cfg.noise_prob:
        wave = add_noise(wave, float(rng.uniform(*cfg.noise_snr_db)), rng)
    return np.clip(wave, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------- batches
def collate(mels: list[Tensor], texts: list[str] | None = None, tok=None, max_len: int = 0,
            where: str = "transcript") -> dict:
    """Log-mels (M, F_i) and their texts -> a batch: mel (B, M, F) zero-padded, frames (B,), and with texts
    tgt_in/tgt_out. An odd last frame (10 ms) is dropped: each encoder state reads two whole frames, which is what
    makes a recording's states the same alone and in a padded batch (`Transcriber.stem`)."""
    mels = [m[:, : m.size(1) // 2 * 2] for m in mels]  # an even number of frames: two per encoder state
    F = max(m.size(1) for m in mels)
    mel = torch.zeros(len(mels), mels[0].size(0), F)  # (B, M, F)
    for i, m in enumerate(mels):
        mel[i, :, : m.size(1)] = m
    frames = torch.tensor([m.size(1) for m in mels])  # (B,)
    if texts is None:
        return {"mel": mel, "frames": frames}
    tgt_in, tgt_out = encode_captions(tok, texts, max_len, tok.pad_id, tok.bos_id, tok.eos_id, where=where)
    return {"mel": mel, "frames": frames, "tgt_in": tgt_in, "tgt_out": tgt_out}


def set_batches(data: SpeechSet, tok, max_len: int, max_frames: int, batch_size: int = 64):
    """Fixed (unaugmented) batches of a validation or test set, in order."""
    for start in range(0, len(data), batch_size):
        items = data.items[start : start + batch_size]
        yield collate([log_mel(r.wave)[:, :max_frames] for r in items], [r.text for r in items], tok, max_len)


class SpeechBatches(GeneratorBatches):
    """Random augmented training batches from one seeded generator; each DDP rank keeps its rows of the global batch.

    Every row draws a seed from the generator, and the row's source, recording and augmentation come from that
    seed alone, so the stream is endless and the generator's state is the data position (exact resume)."""

    def __init__(self, pools: list[Pool], cfg: SpeechDataConfig, tok, max_len: int, max_frames: int, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise QKVError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.pools, self.cfg, self.tok, self.max_len, self.max_frames = pools, cfg, tok, max_len, max_frames
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self._start(seed)

    def example(self, seed: int, pool: Pool, bucket: int) -> tuple[Tensor, str]:
        rng = np.random.default_rng(seed)
        rec = pool.draw(rng, bucket)
        mel = log_mel(torch.from_numpy(augment(rec, self.cfg, rng)))[:, : self.max_frames]  # (M, F)
        if self.cfg.spec_augment:
            mel = spec_augment(mel, self.cfg, rng)
        return mel, rec.text

    def next_batch(self) -> dict:
        B, share = self.batch_size, self.batch_size // self.world_size
        seeds = torch.randint(0, 2**62, (B + 1,), generator=self.generator)  # (B + 1,) drawn for all, kept for mine
        rng = np.random.default_rng(int(seeds[0]))  # the batch's source and length bucket, the same on every rank
        pool = self.pools[int(rng.integers(len(self.pools)))]
        bucket = int(rng.integers(pool.buckets))
        mine = seeds[1 + self.rank * share : 1 + (self.rank + 1) * share]  # (share,) this rank's rows
        rows = [self.example(s, pool, bucket) for s in mine.tolist()]
        return collate([m for m, _ in rows], [t for _, t in rows], self.tok, self.max_len)


def describe_sets(sets: list[SpeechSet]) -> str:
    return "; ".join(f"{s.name}: {len(s)} recordings, {sum(r.seconds for r in s.items) / 60:.1f} min" for s in sets)
