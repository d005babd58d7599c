"""Speech datasets: a folder format for (audio, transcript) pairs, and the spoken digits of FSDD.

A speech folder is what a speech-recognition run reads and what ``qkv data speech`` writes:

    OUT/
      audio/000000.wav      16 kHz mono 16-bit PCM (any WAV read_wav can read is accepted)
      audio/000001.wav
      transcripts.jsonl     one JSON object per line, in order:
        {"audio": "audio/000000.wav", "text": "three one four", "speaker": "jackson", "digits": "314"}

``audio`` (a path inside the folder) and ``text`` (not empty) are required; ``speaker`` is optional; any other
key is kept as the item's metadata (``voice``, ``template``, ``accent``, ``snr_db``, ...).

FSDD, the Free Spoken Digit Dataset (``resolve("fsdd")``): ``recordings/{digit}_{speaker}_{take}.wav``, 6
speakers x 10 digits x 50 takes at 8 kHz. Its README makes takes 0-4 the test set (300 clips) and takes 5-49
the training set (2,700 clips); `fsdd_split` keeps to that, and can leave speakers out.

`connected_digits` strings several clips of one speaker together: silence before, between and after the
digits, a random gain per clip, and optionally noise at a random signal-to-noise ratio. The SNR is over the
whole string: 10 log10(mean(clean**2) / mean(noise**2)), silences included. Strings drawn from the test
split's clips hold test takes only: the caller passes the clips of one split.

    >>> clips = fsdd_split(fsdd_clips(), "train")
    >>> wave, text, meta = connected_digits(clips, np.random.default_rng(0))
    >>> text, meta["speaker"], meta["digits"], wave.shape
    ('five three zero one six', 'yweweler', '53016', torch.Size([49066]))
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qkv.data.audio import SAMPLE_RATE, read_wav, write_wav
from qkv.errors import QKVError
from qkv.runs import atomic_write_bytes

TRANSCRIPTS_FILE = "transcripts.jsonl"
AUDIO_DIR = "audio"
SPLITS = ("train", "test")

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_ACCENTS = {  # speaker -> accent, from upstream metadata.py (all six are male English speakers)
    "george": "GRC/Greek",
    "jackson": "USA/neutral",
    "lucas": "DEU/German",
    "nicolas": "BEL/French",
    "theo": "USA/neutral",
    "yweweler": "DEU/German",
}
FSDD_TEST_TAKES = range(0, 5)  # the official test set: takes 0-4 of every speaker and digit
NOISE_COLORS = ("white", "pink")


# ------------------------------------------------------------------------------------------------ the folder
@dataclass
class SpeechItem:
    audio: Path  # the WAV file (inside the folder)
    text: str
    speaker: str | None = None
    meta: dict = field(default_factory=dict)  # every other key of the line


def read_speech_folder(folder: str | Path) -> list[SpeechItem]:
    """The items of a speech folder, in the order of transcripts.jsonl; a one-line QKVError naming the file
    (and line) for a missing folder or transcript file, a malformed line, an empty text, an audio path outside
    the folder or a missing audio file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise QKVError(f"speech folder not found: {folder}")
    path = folder / TRANSCRIPTS_FILE
    if not path.is_file():
        raise QKVError(f"{folder} has no {TRANSCRIPTS_FILE} (a speech folder holds audio/*.wav and {TRANSCRIPTS_FILE})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise QKVError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    inside = folder.resolve()
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise QKVError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise QKVError(f"{where}: expected a JSON object like {{\"audio\": \"audio/000000.wav\", \"text\": ...}}")
        audio, text, speaker = row.pop("audio", None), row.pop("text", None), row.pop("speaker", None)
        if not isinstance(audio, str) or not audio:
            raise QKVError(f"{where}: \"audio\" must be the path of a WAV file inside the folder")
        if not isinstance(text, str):
            raise QKVError(f"{where}: \"text\" must be a string")
        if not text.strip():
            raise QKVError(f"{where}: empty text for {audio}")
        if speaker is not None and not isinstance(speaker, str):
            raise QKVError(f"{where}: \"speaker\" must be a string")
        file = folder / audio
        if Path(audio).is_absolute() or not file.resolve().is_relative_to(inside):
            raise QKVError(f"{where}: audio path {audio!r} is outside the folder")
        if not file.is_file():
            raise QKVError(f"{where}: audio file not found: {file}")
        items.append(SpeechItem(file, text, speaker, row))
    if not items:
        raise QKVError(f"{path}: empty, no transcripts")
    return items


def write_speech_folder(folder: str | Path, items: Iterable[tuple[torch.Tensor, str, dict]]) -> int:
    """Write (wave at 16 kHz, text, meta) items as a speech folder; returns how many. The folder is built in a
    temporary sibling and renamed into place at the end, so an error or interruption leaves nothing. A folder
    that exists must be empty. ``meta["speaker"]`` becomes the line's speaker, every other key rides along."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise QKVError(f"{folder} already exists and is not empty; choose a new folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError as e:
        raise QKVError(f"cannot write into {folder.parent}: {e.strerror}") from None
    try:
        (tmp / AUDIO_DIR).mkdir()
        lines = []
        for i, (wave, text, meta) in enumerate(items):
            wave = torch.as_tensor(wave, dtype=torch.float32)
            if wave.ndim != 1 or wave.numel() == 0:
                raise QKVError(f"item {i}: a wave must be a non-empty 1-D signal, got shape {tuple(wave.shape)}")
            if not isinstance(text, str) or not text.strip():
                raise QKVError(f"item {i}: the text must be a non-empty string, got {text!r}")
            if {"audio", "text"} & set(meta):
                raise QKVError(f"item {i}: metadata may not hold the keys \"audio\" or \"text\"")
            name = f"{AUDIO_DIR}/{i:06d}.wav"
            write_wav(tmp / name, wave, SAMPLE_RATE)
            lines.append(json.dumps({"audio": name, "text": text, **meta}, ensure_ascii=False))
        if not lines:
            raise QKVError(f"nothing to write into {folder}: no items")
        atomic_write_bytes(tmp / TRANSCRIPTS_FILE, ("\n".join(lines) + "\n").encode("utf-8"))
        try:
            os.replace(tmp, folder)  # onto an empty folder, or a new name
        except OSError:
            raise QKVError(f"{folder} was filled while writing; the new folder is not kept") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(lines)


# ------------------------------------------------------------------------------------------------ FSDD
@dataclass(frozen=True)
class FsddClip:
    path: Path
    digit: int
    speaker: str
    take: int

    @property
    def split(self) -> str:
        return "test" if self.take in FSDD_TEST_TAKES else "train"


_FSDD_NAME = re.compile(r"(\d)_([a-z]+)_(\d+)\.wav")


def fsdd_clips(root: str | Path | None = None) -> list[FsddClip]:
    """Every recording of FSDD (``root``: its recordings/ folder, by default ``resolve("fsdd")/"recordings"``),
    sorted by speaker, digit and take."""
    if root is None:
        from qkv.data.registry import resolve

        root = resolve("fsdd") / "recordings"
    root = Path(root)
    if not root.is_dir():
        raise QKVError(f"FSDD recordings folder not found: {root}")
    clips = []
    for path in root.glob("*.wav"):
        m = _FSDD_NAME.fullmatch(path.name)
        if m is None:
            raise QKVError(f"{path}: not an FSDD recording name ({{digit}}_{{speaker}}_{{take}}.wav)")
        clips.append(FsddClip(path, int(m[1]), m[2], int(m[3])))
    if not clips:
        raise QKVError(f"{root}: no FSDD recordings (*.wav)")
    return sorted(clips, key=lambda c: (c.speaker, c.digit, c.take))


def fsdd_split(clips: Sequence[FsddClip], split: str, speakers: Iterable[str] | None = None,
               exclude: Iterable[str] = ()) -> list[FsddClip]:
    """The clips of the official `split` ("train": takes 5-49, "test": takes 0-4), of `speakers` only (None: all)
    and of none in `exclude`: ``exclude=["theo"]`` for training and ``speakers=["theo"]`` for testing leave
    theo out of training."""
    if split not in SPLITS:
        raise QKVError(f"unknown split {split!r}; FSDD has {' and '.join(SPLITS)}", argument="split")
    known = sorted({c.speaker for c in clips})
    speakers = None if speakers is None else set(speakers)
    exclude = set(exclude)
    for name in sorted((speakers or set()) | exclude):
        if name not in known:
            raise QKVError(f"unknown speaker {name!r}; FSDD's speakers: {', '.join(known)}")
    kept = [c for c in clips
            if c.split == split and (speakers is None or c.speaker in speakers) and c.speaker not in exclude]
    if not kept:
        raise QKVError(f"no FSDD clips left in the {split} split for the speakers asked for")
    return kept


@functools.lru_cache(maxsize=4096)  # FSDD decoded at 16 kHz is ~90 MB; a clip is read once per process
def _decoded(path: str) -> torch.Tensor:
    wave, _ = read_wav(path)
    return wave


def clip_wave(clip: FsddClip) -> torch.Tensor:
    """The clip at 16 kHz (decoded once, then kept in memory: do not modify the tensor in place)."""
    return _decoded(str(clip.path))


# ------------------------------------------------------------------------------------------------ noise
def add_noise(wave: torch.Tensor, rng: np.random.Generator, snr_db: float, color: str = "white") -> torch.Tensor:
    """`wave` plus white or pink (1/f power) noise at `snr_db` over the whole wave; scaled down as a whole
    (which keeps the SNR) if the sum would pass full scale. (NumPy inside: on a busy machine torch's threads
    make each small elementwise op cost milliseconds.)"""
    if color not in NOISE_COLORS:
        raise QKVError(f"unknown noise colour {color!r}; one of {', '.join(NOISE_COLORS)}")
    x = np.asarray(wave, dtype=np.float32)
    n = x.size
    if color == "pink":  # white noise shaped by 1/sqrt(f) in amplitude: 1/f in power, nothing at DC
        m = 1 << max(n - 1, 1).bit_length()  # a power of two: the FFT of an odd length can take 20x longer
        spectrum = np.fft.rfft(rng.standard_normal(m))
        f = np.arange(len(spectrum), dtype=np.float64)
        spectrum *= np.where(f > 0, 1 / np.sqrt(np.maximum(f, 1)), 0.0)
        noise = np.fft.irfft(spectrum, m)[:n]
    else:
        noise = rng.standard_normal(n)
    signal_power = float(np.mean(np.square(x, dtype=np.float64)))
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / max(float(np.mean(noise**2)), 1e-30))
    noisy = x + noise.astype(np.float32)
    peak = float(np.abs(noisy).max())
    return torch.from_numpy(noisy / peak if peak > 1 else noisy)


def random_noise(wave: torch.Tensor, rng: np.random.Generator, snr_db: tuple[float, float]
                 ) -> tuple[torch.Tensor, dict]:
    """`wave` with white or pink noise (an even draw) at an SNR drawn from `snr_db` (lo, hi), and the metadata
    saying which: {"noise": "pink", "snr_db": 12.34}."""
    lo, hi = _range("snr_db", snr_db, float("-inf"))
    snr = float(rng.uniform(lo, hi))
    color = NOISE_COLORS[int(rng.integers(len(NOISE_COLORS)))]
    return add_noise(wave, rng, snr, color), {"noise": color, "snr_db": round(snr, 2)}


# ------------------------------------------------------------------------------------------------ connected digits
def connected_digits(clips: Sequence[FsddClip], rng: np.random.Generator, n_digits: tuple[int, int] = (1, 7),
                     gap_ms: tuple[float, float] = (50, 300), gain_db: tuple[float, float] = (-6, 6),
                     noise_snr_db: tuple[float, float] | None = None) -> tuple[torch.Tensor, str, dict]:
    """One string of spoken digits by one speaker: (wave (N,) float32 at 16 kHz, text "three one four", meta).

    A speaker is drawn among those of `clips`, then 1..7 (`n_digits`, inclusive) digits, each an even draw
    among the speaker's digits and then among its clips; every clip gets a gain from `gain_db`, and silences
    from `gap_ms` go before, between and after them. With `noise_snr_db` (lo, hi), white or pink noise at an
    SNR drawn from that range is added last. meta: speaker, accent, digits ("314"), the clips used (file
    names without .wav), and with noise its colour and SNR. Pass the clips of one split (`fsdd_split`): the
    string is made of nothing else."""
    lo, hi = _range("n_digits", n_digits, 1)
    gaps, gains = _range("gap_ms", gap_ms, 0), _range("gain_db", gain_db, float("-inf"))
    by_speaker: dict[str, dict[int, list[FsddClip]]] = {}
    for c in clips:
        by_speaker.setdefault(c.speaker, {}).setdefault(c.digit, []).append(c)
    if not by_speaker:
        raise QKVError("no clips to draw connected digits from")
    speaker = sorted(by_speaker)[int(rng.integers(len(by_speaker)))]
    digits = sorted(by_speaker[speaker])
    chosen = []
    for _ in range(int(rng.integers(lo, hi + 1))):
        takes = by_speaker[speaker][digits[int(rng.integers(len(digits)))]]
        chosen.append(takes[int(rng.integers(len(takes)))])
    parts = [_silence(rng.uniform(*gaps))]
    for clip in chosen:
        gain = np.float32(10 ** (rng.uniform(*gains) / 20))
        parts += [clip_wave(clip).numpy() * gain, _silence(rng.uniform(*gaps))]
    wave = np.concatenate(parts)
    peak = float(np.abs(wave).max())
    if peak > 1:  # a gain pushed a clip past full scale: the whole string comes down
        wave /= peak
    wave = torch.from_numpy(wave)
    meta = {"speaker": speaker, "accent": FSDD_ACCENTS.get(speaker), "digits": "".join(str(c.digit) for c in chosen),
            "clips": [c.path.stem for c in chosen]}
    if noise_snr_db is not None:  # drawn last, so the same seed gives the same clean string with or without noise
        wave, noise_meta = random_noise(wave, rng, noise_snr_db)
        meta |= noise_meta
    return wave, " ".join(DIGIT_WORDS[c.digit] for c in chosen), meta


def _silence(ms: float) -> np.ndarray:
    return np.zeros(round(ms * SAMPLE_RATE / 1000), dtype=np.float32)


def _range(name: str, value, low: float) -> tuple:
    """(lo, hi) checked: two numbers, low <= lo <= hi."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise QKVError(f"{name} must be a (low, high) pair, got {value!r}", argument=name) from None
    if not low <= lo <= hi:
        raise QKVError(f"{name} must be a range (low, high) with {low:g} <= low <= high, got {value!r}", argument=name)
    return lo, hi
