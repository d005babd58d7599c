"""Audio for speech recognition: WAV files in, Whisper's log-mel spectrogram out.

Reading: `read_wav(source)` turns a WAV file (a path, or the bytes of an upload) into a mono float32 waveform
(N,) in [-1, 1] at 16 kHz, and a list of one-line notes, one per conversion it made, for the caller to show:

    the file holds                      read_wav                          its note ("x.wav: ...")
    2 or more channels                  their mean                        "stereo, downmixed to mono"
    8-bit unsigned PCM                  (x − 128) / 128                   "8-bit samples, converted to float"
    16-bit PCM                          x / 32768                         none: qkv's own format
    24-bit, 32-bit (other) integer PCM  x / 2^31 (scipy left-justifies    "24-bit samples, converted to float"
                                        24-bit samples into int32)
    32-bit float                        kept                              none
    64-bit float                        rounded to 32-bit                 "64-bit float samples, converted to 32-bit"
    float samples beyond [−1, 1]        clipped to [−1, 1]                "float samples reach 1.7, clipped to [-1, 1]"
    another sample rate                 resampled (polyphase), clipped    "8000 Hz, resampled to 16000 Hz"
                                        to [−1, 1] (filters overshoot)
    less audio than its header says     the whole frames that are there   "cut short: its header promises 2.00 s ..."

Everything else is an error, one line (`QKVError`) that names the file ("the upload" for bytes, or `name`) and
what is wrong: the file is missing; a folder; empty (0 bytes); not a WAV (no RIFF/WAVE header: the error says
what it looks like, "a PNG image", or how it starts); its header is cut short or corrupt; its encoding is not
PCM or float (ADPCM, µ-law, A-law, MP3 inside a WAV ...: scipy cannot decode them); it holds no samples; it is
shorter than one 25 ms analysis window (after resampling); it has NaN or infinite float samples.
`write_wav(path, wave)` writes 16-bit PCM mono, atomically.

The log-mel spectrogram: `log_mel(wave)`, step by step as Whisper computes it (openai/whisper `audio.py`,
`log_mel_spectrogram`; transformers' `WhisperFeatureExtractor` is the reference the tests compare with):

1. Frames. A 25 ms window (N_FFT = 400 samples at 16 kHz) slides by 10 ms (HOP = 160 samples): 100 frames a
   second. The waveform is first padded with 200 samples at each end, its own samples reflected (``center=True``),
   so that frame t is centred on sample 160·t. N samples give 1 + N // 160 frames; Whisper drops the last one,
   so T = N // 160 (`frames_of`).
2. Window and Fourier transform. Each frame is multiplied by a periodic Hann window
   w[n] = 0.5 − 0.5·cos(2πn / 400), which fades its edges to zero so that the cut leaks less energy into
   other frequencies, and its real FFT gives 400 // 2 + 1 = 201 frequency bins: bin k is k·16000 / 400 = 40·k
   Hz, from 0 to 8000 Hz (the Nyquist frequency).
3. Power. |X|², the energy in each bin: (201, T).
4. Mel filter bank (`mel_filters`). 80 triangular filters pool the 201 bins into 80 bands spaced evenly on the
   mel scale, a model of how we hear pitch: linear below 1 kHz (mel = 3·f / 200: 1000 Hz is 15 mels),
   logarithmic above (mel = 15 + 27·ln(f / 1000) / ln 6.4: 8000 Hz is 45.246 mels), so the bands are narrow
   at low frequencies and broad at high ones. 82 points evenly spaced in mel from 0 to 8 kHz are the edges:
   band i rises from point i to a peak at point i + 1 and falls to zero at point i + 2. Each triangle is
   scaled by 2 / (its width in Hz), so that all have the same area (Slaney's normalisation): a broad band
   does not count more energy just for being broad. mel = filters @ power: (80, T).
5. Log. log10(max(mel, 1e-10)): bels (1 bel = 10 dB); the floor keeps silence finite (−10).
6. Dynamic range. Whatever lies more than 8 (80 dB) below the loudest cell of the clip is raised to max − 8,
   so faint background noise looks the same at any recording level.
7. Scale. (x + 4) / 4 puts the values near [−1, 1] (max − min ≤ 2): the scale Whisper's encoder trained on.

Whisper pads every clip with zeros to 30 s before step 1; `log_mel` computes the frames of the clip itself. Its
frames are Whisper's but for the last one when N % 160 < 40: that frame's window reaches up to 40 samples past
the end of the clip, where `log_mel` sees reflected samples and Whisper sees zeros.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qkv.errors import QKVError
from qkv.runs import atomic_write_bytes

SAMPLE_RATE = 16000  # samples per second: Whisper's (and qkv's) rate
N_FFT = 400  # samples per analysis window: 25 ms at 16 kHz
HOP = 160  # samples between the starts of two windows: 10 ms at 16 kHz
N_MELS = 80  # mel bands

PCM, FLOAT = 1, 3  # the WAV format tags scipy decodes: integer samples, IEEE float samples
EXTENSIBLE = 0xFFFE  # WAVE_FORMAT_EXTENSIBLE: the real format tag opens the sub-format GUID at byte 24 of 'fmt '
ENCODINGS = {2: "Microsoft ADPCM", 6: "A-law", 7: "µ-law", 0x11: "IMA ADPCM", 0x31: "GSM 6.10", 0x50: "MPEG",
             0x55: "MP3", 0x160: "WMA", 0x1610: "AAC", 0xF1AC: "FLAC"}  # tags of compressed encodings, for errors
SIGNATURES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
              b"ID3": "an MP3 file", b"\xff\xfb": "an MP3 file", b"\xff\xf3": "an MP3 file", b"fLaC": "a FLAC file",
              b"OggS": "an Ogg (Vorbis or Opus) file", b"FORM": "an AIFF file", b"%PDF": "a PDF document",
              b"PK\x03\x04": "a zip archive", b"\x1a\x45\xdf\xa3": "a WebM or Matroska file"}  # first bytes -> kind


# ------------------------------------------------------------------------------------------------ reading WAV
@dataclass(frozen=True)
class _Layout:
    """What a WAV file's header says, and its audio bytes."""

    order: str  # "<" little-endian (RIFF), ">" big-endian (RIFX)
    tag: int  # the encoding: PCM (1) or FLOAT (3); anything else is compressed
    channels: int
    rate: int  # samples per second, per channel
    bits: int  # bits per sample
    block_align: int  # bytes per frame: one sample of every channel
    fmt: bytes  # the whole 'fmt ' chunk: id, size, body (and its pad byte)
    samples: bytes  # the data chunk's bytes, whole frames only
    promised: int  # the size of the data chunk as its header gives it


def _source_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    """(the file's bytes, the label errors and notes name it by), or a QKVError: missing, a folder, unreadable."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), name or "the upload"
    path = Path(source).expanduser()
    label = name or str(path)
    if not path.exists():
        raise QKVError(f"file not found: {label}")
    if path.is_dir():
        raise QKVError(f"{label}: is a folder, not a WAV file")
    try:
        return path.read_bytes(), label
    except OSError as e:
        raise QKVError(f"{label}: cannot read it ({e.strerror})") from None


def _what_it_is(data: bytes) -> str:
    """Words for a file that is not a WAV: its kind by its first bytes, or the bytes themselves.

    Example: ``_what_it_is(b"\\x89PNG\\r\\n...")`` -> ``"it looks like a PNG image"``."""
    for signature, kind in SIGNATURES.items():
        if data.startswith(signature):
            return f"it looks like {kind}"
    if data[4:8] == b"ftyp":
        return "it looks like an MP4 or M4A file"
    if data[:4] == b"RIFF":
        return f"it is a RIFF file of type {data[8:12].decode('latin-1')!r}, not 'WAVE'"
    head = data[:24]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"it starts with the text {text!r}"
    return f"it starts with the bytes {head[:8].hex(' ')}"


def _layout(data: bytes, label: str) -> _Layout:
    """Walk the chunks of a RIFF/WAVE file and find its format and its audio, or raise a QKVError saying why not.

    A WAV file is b"RIFF", its size (u32), b"WAVE", then chunks, each an id (4 bytes), a size (u32), a body of
    that size and a pad byte when the size is odd. The 'fmt ' chunk (16 bytes or more: format tag, channels,
    rate, bytes per second, bytes per frame, bits per sample) comes before the 'data' chunk (the samples,
    frame by frame, channels interleaved); other chunks (LIST, cue ...) are metadata.
    """
    order = ">" if data[:4] == b"RIFX" else "<"  # RIFX: the big-endian twin of RIFF
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack(order + "I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < min(size, 16):
                raise QKVError(f"{label}: truncated WAV file: it ends at byte {len(data)}, inside its header")
            if size < 16:
                raise QKVError(f"{label}: corrupt WAV header: a format chunk of {size} bytes (16 or more expected)")
            tag, channels, rate, _, block_align, bits = struct.unpack(order + "HHIIHH", body[:16])
            if tag == EXTENSIBLE and size >= 26:
                tag = struct.unpack(order + "H", body[24:26])[0]
            fmt = (tag, channels, rate, bits, block_align, data[pos:pos + 8 + size + size % 2])
        elif chunk_id == b"data":
            if fmt is None:
                raise QKVError(f"{label}: corrupt WAV file: its audio comes before its format chunk")
            tag, channels, rate, bits, block_align, fmt_chunk = fmt
            if size == 0xFFFFFFFF:  # written by a streaming writer that could not go back to fill the size in
                size = len(body)
            if channels == 0 or rate == 0 or block_align == 0:
                raise QKVError(f"{label}: corrupt WAV header: {channels} channels, {rate} Hz, "
                               f"{block_align} bytes per frame")
            whole = len(body) // block_align * block_align  # a frame cut in half at the end is dropped
            return _Layout(order, tag, channels, rate, bits, block_align, fmt_chunk, body[:whole], size)
        pos += 8 + size + size % 2
    missing = "its audio (a 'data' chunk)" if fmt else "its format (a 'fmt ' chunk)"
    raise QKVError(f"{label}: truncated or corrupt WAV file: {missing} is not in its {len(data)} bytes")


def _check_encoding(layout: _Layout, label: str) -> None:
    """PCM integers of 1 to 64 bits or 32/64-bit floats, each in a container scipy decodes; else a QKVError."""
    tag, bits, container = layout.tag, layout.bits, layout.block_align // layout.channels
    if tag not in (PCM, FLOAT):
        kind = ENCODINGS.get(tag, "a compressed encoding")
        raise QKVError(f"{label}: unsupported WAV encoding: {kind} (format tag {tag:#06x}); qkv reads PCM and float "
                       "WAV files: convert it first (e.g. `ffmpeg -i IN -c:a pcm_s16le OUT.wav`)")
    if tag == PCM:
        ok = 1 <= bits <= 8 * container <= 64 and (bits <= 8) == (container == 1)
    else:
        ok = bits in (32, 64) and container == bits // 8
    if not ok or layout.block_align % layout.channels:
        kind = "integer" if tag == PCM else "float"
        raise QKVError(f"{label}: unsupported WAV sample format: {bits}-bit {kind} samples in {layout.block_align} "
                       f"bytes per frame of {layout.channels} channels")


def _decode(layout: _Layout, label: str) -> np.ndarray:
    """The samples as scipy reads them: (n,) or (n, channels), uint8, int16/32/64 (left-justified) or float.

    scipy is given a clean copy of the file: the RIFF header, the 'fmt ' chunk and the whole frames of the
    'data' chunk with its size made true, so a file cut short or with odd metadata chunks reads the same."""
    from scipy.io import wavfile

    order = layout.order
    riff = b"RIFF" if order == "<" else b"RIFX"
    pad = b"\0" * (len(layout.samples) % 2)
    body = b"WAVE" + layout.fmt + b"data" + struct.pack(order + "I", len(layout.samples)) + layout.samples + pad
    clean = riff + struct.pack(order + "I", len(body)) + body
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's WavFileWarning: nothing left to warn about in the clean copy
        try:
            _, x = wavfile.read(io.BytesIO(clean))
        except (ValueError, struct.error) as e:
            raise QKVError(f"{label}: cannot decode this WAV file ({e})") from None
    return x


def _to_float(x: np.ndarray, layout: _Layout, label: str, notes: list[str]) -> np.ndarray:
    """Samples of any format as float64 in [-1, 1] (notes for every format but 16-bit PCM and 32-bit float)."""
    if x.dtype == np.uint8:  # 8-bit WAV samples are unsigned, silence at 128
        y = (x.astype(np.float64) - 128.0) / 128.0
    elif x.dtype.kind == "i":  # scipy left-justifies 24-bit samples into int32 (and 40..56-bit into int64)
        y = x.astype(np.float64) / 2.0 ** (8 * x.dtype.itemsize - 1)
    else:
        y = x.astype(np.float64)
        bad = int(np.count_nonzero(~np.isfinite(y)))
        if bad:
            raise QKVError(f"{label}: {bad} of its {y.size} float samples are NaN or infinite")
    if layout.tag == PCM and layout.bits != 16:
        notes.append(f"{label}: {layout.bits}-bit samples, converted to float")
    if layout.tag == FLOAT and layout.bits == 64:
        notes.append(f"{label}: 64-bit float samples, converted to 32-bit")
    peak = float(np.abs(y).max())
    if peak > 1.0:  # only float samples can leave [-1, 1]
        notes.append(f"{label}: float samples reach {peak:.3g}, clipped to [-1, 1]")
        y = np.clip(y, -1.0, 1.0)
    return y


def read_wav(source: str | Path | bytes, rate: int = SAMPLE_RATE,
             name: str | None = None) -> tuple[Tensor, list[str]]:
    """(a mono float32 waveform (N,) in [-1, 1] at `rate`, the notes of the conversions made) from a WAV file.

    `source`: a path, or the file's bytes (an upload); `name`: what errors and notes call it (default: the path,
    or "the upload"). The conversions and the errors are in the module docstring.

        >>> wave, notes = read_wav("7_jackson_0.wav")   # FSDD: 3,457 samples at 8 kHz, 16-bit
        >>> wave.shape, notes
        (torch.Size([6914]), ['7_jackson_0.wav: 8000 Hz, resampled to 16000 Hz'])
    """
    from scipy.signal import resample_poly

    if not isinstance(rate, int) or rate <= 0:
        raise QKVError(f"rate must be a positive number of samples per second, got {rate!r}", argument="rate")
    data, label = _source_bytes(source, name)
    if not data:
        raise QKVError(f"{label}: empty file (0 bytes), not a WAV file")
    if data[:4] == b"RF64":
        raise QKVError(f"{label}: an RF64 WAV file (the variant for files over 4 GiB), which qkv does not read")
    if data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise QKVError(f"{label}: not a WAV file ({_what_it_is(data)})")

    # 1. the header: format, channels, rate; the audio bytes
    layout = _layout(data, label)
    _check_encoding(layout, label)
    notes: list[str] = []
    if len(layout.samples) < layout.promised:
        have, promised = (n / (layout.block_align * layout.rate) for n in (len(layout.samples), layout.promised))
        notes.append(f"{label}: cut short: its header promises {promised:.2f} s of audio, the file holds "
                     f"{have:.2f} s (read those)")
    if not layout.samples:
        raise QKVError(f"{label}: no audio: the WAV file holds 0 samples")

    # 2. samples -> float64 in [-1, 1], channels -> mono, rate -> `rate`
    x = _to_float(_decode(layout, label), layout, label, notes)  # (n,) or (n, channels)
    if x.ndim == 2:
        x = x.mean(axis=1)  # (n,)
        notes.append(f"{label}: {'stereo' if layout.channels == 2 else f'{layout.channels} channels'}, "
                     f"downmixed to mono")
    if layout.rate != rate:
        g = math.gcd(rate, layout.rate)
        x = np.clip(resample_poly(x, rate // g, layout.rate // g), -1.0, 1.0)  # (ceil(n · rate / layout.rate),)
        notes.append(f"{label}: {layout.rate} Hz, resampled to {rate} Hz")

    # 3. long enough for one analysis window: 25 ms
    if len(x) * SAMPLE_RATE < N_FFT * rate:
        raise QKVError(f"{label}: too short: {1000 * len(x) / rate:.1f} ms of audio, less than one "
                       f"{1000 * N_FFT / SAMPLE_RATE:.0f} ms analysis window")
    return torch.from_numpy(x.astype(np.float32)), notes


def wav_bytes(wave: Tensor | np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """A mono float waveform (N,) in [-1, 1] as the bytes of a 16-bit PCM WAV file (values beyond ±1 are clipped):
    what `write_wav` writes, for a data URL or a download."""
    from scipy.io import wavfile

    x = wave.detach().to("cpu", torch.float64).numpy() if isinstance(wave, Tensor) else np.asarray(wave, np.float64)
    if x.ndim != 1:
        raise QKVError(f"write_wav: expected a mono waveform of shape (N,), got shape {tuple(x.shape)}",
                       argument="wave")
    if not np.isfinite(x).all():
        raise QKVError("write_wav: the waveform has NaN or infinite samples", argument="wave")
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")  # (N,) int16: x · 2^15, rounded
    buffer = io.BytesIO()
    wavfile.write(buffer, rate, pcm)
    return buffer.getvalue()


def write_wav(path: str | Path, wave: Tensor | np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write a mono float waveform (N,) in [-1, 1] as a 16-bit PCM WAV file, atomically (values beyond ±1 are
    clipped). `read_wav` gives it back within 1 / 32768."""
    atomic_write_bytes(path, wav_bytes(wave, rate))


# ------------------------------------------------------------------------------------------------ the mel scale
F_SP = 200.0 / 3  # Hz per mel below 1 kHz (Slaney's Auditory Toolbox)
MIN_LOG_HZ = 1000.0  # where the scale turns logarithmic ...
MIN_LOG_MEL = MIN_LOG_HZ / F_SP  # ... at 15 mels
LOGSTEP = math.log(6.4) / 27.0  # above 1 kHz one mel multiplies the frequency by 6.4^(1/27) ≈ 1.0711


def hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: hz / (200/3) below 1 kHz, 15 + ln(hz / 1000) / (ln 6.4 / 27) above.

        >>> hz_to_mel(torch.tensor([0.0, 500.0, 1000.0, 8000.0], dtype=torch.float64))
        tensor([ 0.0000,  7.5000, 15.0000, 45.2456], dtype=torch.float64)
    """
    linear = hz / F_SP
    log = MIN_LOG_MEL + torch.log(torch.clamp(hz, min=MIN_LOG_HZ) / MIN_LOG_HZ) / LOGSTEP
    return torch.where(hz >= MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: Tensor) -> Tensor:
    """The inverse of `hz_to_mel`: mel · 200/3 below 15 mels, 1000 · exp((mel − 15) · ln 6.4 / 27) above."""
    linear = mel * F_SP
    log = MIN_LOG_HZ * torch.exp(LOGSTEP * (mel - MIN_LOG_MEL))
    return torch.where(mel >= MIN_LOG_MEL, log, linear)


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE) -> Tensor:
    """The (n_mels, n_fft // 2 + 1) float64 bank of triangular filters, Slaney-style and area-normalised: what
    ``librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels)`` gives (htk=False, norm="slaney").

    Row i weights the FFT bins of band i: 0 outside (edge i, edge i + 2) Hz, rising linearly to the peak
    2 / (edge i + 2 − edge i) at edge i + 1, the edges evenly spaced in mel from 0 Hz to rate / 2."""
    bins_hz = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * rate / n_fft  # (F,) 0, 40, ..., 8000 Hz
    top = hz_to_mel(torch.tensor(rate / 2, dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))  # (M + 2,) Hz
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising = (bins_hz - lower) / (centre - lower)  # (M, F): 0 at the lower edge, 1 at the centre
    falling = (upper - bins_hz) / (upper - centre)  # (M, F): 1 at the centre, 0 at the upper edge
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M, F)
    return triangles * (2.0 / (upper - lower))  # (M, F): every triangle of area 1 (in Hz)


@functools.lru_cache(maxsize=8)
def _filters_on(device: torch.device, dtype: torch.dtype) -> Tensor:
    """`mel_filters()` on `device` in `dtype`, made once per (device, dtype)."""
    return mel_filters().to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------ the log-mel
def frames_of(n_samples: int) -> int:
    """The number of log-mel frames of `n_samples` samples: one per HOP (10 ms), ``n_samples // 160``."""
    return n_samples // HOP


def log_mel(wave: Tensor) -> Tensor:
    """Whisper's log-mel spectrogram of a 16 kHz waveform (N,) or batch (B, N): (80, T) or (B, 80, T),
    T = N // 160, in the waveform's float dtype and on its device; each example scaled by its own maximum.
    The steps are in the module docstring."""
    if wave.dim() not in (1, 2) or not wave.is_floating_point():
        raise QKVError(f"log_mel: expected a float waveform (N,) or (B, N), got {tuple(wave.shape)} {wave.dtype}",
                       argument="wave")
    if wave.shape[-1] < N_FFT:
        raise QKVError(f"log_mel: {wave.shape[-1]} samples is less than one {N_FFT}-sample window", argument="wave")
    window = torch.hann_window(N_FFT, periodic=True, dtype=wave.dtype, device=wave.device)  # (400,)
    stft = torch.stft(wave, N_FFT, HOP, window=window, center=True, pad_mode="reflect",
                      return_complex=True)  # (B, 201, T + 1) complex (no B for a single wave)
    power = stft[..., :-1].abs() ** 2  # (B, 201, T): the last frame dropped, as Whisper does
    mel = _filters_on(wave.device, wave.dtype) @ power  # (B, 80, T)
    log_spec = torch.clamp(mel, min=1e-10).log10()  # (B, 80, T)
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1): each example's loudest cell
    log_spec = torch.maximum(log_spec, peak - 8.0)  # (B, 80, T): at most 80 dB below it
    return (log_spec + 4.0) / 4.0  # (B, 80, T)
