"""The audio front end: Whisper's mel filters and log-mel spectrogram against transformers, the WAV reader's
conversions and one-line errors, the WAV writer's round trip, and the frame count and range of any log-mel."""

import io
import os
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import wavfile

from qkv.data.audio import (
    HOP,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    frames_of,
    hz_to_mel,
    log_mel,
    mel_filters,
    mel_to_hz,
    read_wav,
    write_wav,
)
from qkv.errors import QKVError

FSDD_FILE = "7_jackson_0.wav"  # 3,457 samples at 8 kHz, 16-bit: "seven"


@pytest.fixture(scope="module")
def fsdd_recording() -> Path:
    """A real recording of the Free Spoken Digit Dataset, found as qkv finds datasets ($QKV_DATA_DIR/fsdd, else the
    cache); like conftest's `shared_data`, a clear failure, never a skip, when this machine lacks it."""
    from qkv.data.registry import cache_dir

    roots = [Path(os.environ["QKV_DATA_DIR"])] if os.environ.get("QKV_DATA_DIR") else []
    for root in [*roots, cache_dir()]:
        path = root / "fsdd" / "recordings" / FSDD_FILE
        if path.is_file():
            return path
    pytest.fail(f"this test needs fsdd/recordings/{FSDD_FILE} (the Free Spoken Digit Dataset), which is neither "
                f"under $QKV_DATA_DIR nor in the cache: set QKV_DATA_DIR to ../shared/data")


@pytest.fixture(scope="module")
def whisper_features():
    """transformers' WhisperFeatureExtractor with its defaults (80 mels, 16 kHz; built here, nothing downloaded)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)


# ------------------------------------------------------------------------------------------------ mel filters
def test_mel_scale_is_linear_below_1khz_and_logarithmic_above():
    hz = torch.tensor([0.0, 200.0, 1000.0, 6400.0, 8000.0], dtype=torch.float64)
    mel = hz_to_mel(hz)
    assert torch.allclose(mel[:3], torch.tensor([0.0, 3.0, 15.0], dtype=torch.float64))
    assert torch.isclose(mel[3], torch.tensor(15.0 + 27.0, dtype=torch.float64))  # 6.4 × 1 kHz is 27 mels on
    assert torch.allclose(mel_to_hz(mel), hz, rtol=1e-12)


def test_mel_filters_equal_transformers_slaney_bank():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney")  # (201, 80) float64
    ours = mel_filters()  # (80, 201)
    assert ours.shape == (N_MELS, N_FFT // 2 + 1) and ours.dtype == torch.float64
    # measured: max |ours - ref| = 2.0e-16 (float64 rounding; the largest weight is 0.0259)
    assert np.abs(ours.numpy() - ref.T).max() <= 1e-6
    assert (ours > 0).any(dim=1).all(), "an empty filter"


# ------------------------------------------------------------------------------------------------ log-mel
def _waveform(kind: str, request) -> np.ndarray:
    """float32 test signals at 16 kHz: white noise, a 1 s chirp sweeping 100 Hz to 7 kHz, and a real recording."""
    if kind == "noise":
        return (0.1 * np.random.default_rng(0).standard_normal(12345)).astype(np.float32)
    if kind == "chirp":
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        return (0.5 * np.sin(2 * np.pi * (100 * t + (7000 - 100) * t**2 / 2))).astype(np.float32)
    path = request.getfixturevalue("fsdd_recording")
    x, notes = read_wav(path)  # 3,457 samples at 8 kHz -> 6,914 at 16 kHz
    assert notes == [f"{path}: 8000 Hz, resampled to 16000 Hz"] and len(x) == 6914
    return x.numpy()


@pytest.mark.parametrize("kind", ["noise", "chirp", "fsdd"])
def test_log_mel_equals_whisper_feature_extractor(kind, request, whisper_features):
    x = _waveform(kind, request)  # (N,) float32
    ref = whisper_features(x, sampling_rate=16000, return_tensors="np").input_features[0]  # (80, 3000): 30 s
    ours = log_mel(torch.from_numpy(x)).numpy()  # (80, T)
    assert ours.shape == (N_MELS, frames_of(len(x)))
    # transformers runs the same float32 torch.stft and matmul: measured max |ours - ref| = 0.0 on every frame
    # whose window lies inside the clip. The frames of a window reaching past the end differ: Whisper pads the
    # clip with zeros to 30 s, log_mel reflects it. Only the last frame can, when N % 160 < 40 (noise: N % 160 =
    # 25, 2.5e-4; chirp: 0, 0.14, it ends loud; fsdd: 34, 6.5e-4). Had that frame held the loudest cell, the
    # floor max - 8 would move and every floored cell differ: not so for these clips.
    inside = min(frames_of(len(x)), (len(x) - N_FFT // 2) // HOP + 1)  # frames t with 160·t + 200 <= N
    assert np.abs(ours[:, :inside] - ref[:, :inside]).max() <= 1e-5
    # given Whisper's own input, the clip padded with zeros to 30 s, log_mel is Whisper's on every frame
    padded = torch.nn.functional.pad(torch.from_numpy(x), (0, 30 * SAMPLE_RATE - len(x)))  # (480000,)
    assert np.abs(log_mel(padded).numpy() - ref).max() <= 1e-5
    # (in float64 log_mel differs from this float32 reference by up to 3.4e-5, measured on the padded chirp: the
    # reference's float32 rounding, magnified by log10 in the quiet cells; so the comparison is in float32)


def test_log_mel_of_a_batch_scales_each_example_by_its_own_maximum():
    x = torch.randn(2, 4000) * torch.tensor([[1.0], [1e-3]])  # (2, 4000): a loud and a quiet example
    batch = log_mel(x)  # (2, 80, 25)
    assert batch.shape == (2, N_MELS, 25)
    for i in range(2):
        assert (batch[i] - log_mel(x[i])).abs().max() <= 1e-6
    assert log_mel(x.double()).dtype == torch.float64


def test_log_mel_refuses_what_is_not_a_waveform():
    for bad in (torch.zeros(N_FFT - 1), torch.zeros(2, 2, 1000), torch.zeros(1000, dtype=torch.int16)):
        with pytest.raises(QKVError, match="log_mel"):
            log_mel(bad)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(N_FFT, 20_000), scale=st.sampled_from([0.0, 1e-6, 0.3, 1.0]), seed=st.integers(0, 2**16))
def test_log_mel_has_one_frame_per_hop_and_a_range_of_at_most_two(n, scale, seed):
    x = scale * torch.randn(n, generator=torch.Generator().manual_seed(seed))  # (n,)
    spec = log_mel(x)  # (80, n // 160)
    assert spec.shape == (N_MELS, frames_of(n)) and torch.isfinite(spec).all()
    assert spec.max() - spec.min() <= 2.0 + 1e-6  # 80 dB of dynamic range, divided by 4


# ------------------------------------------------------------------------------------------------ reading WAV
def _write(path: Path, rate: int, samples: np.ndarray) -> Path:
    wavfile.write(path, rate, samples)
    return path


def _header(tag: int, channels: int, rate: int, bits: int, payload: bytes) -> bytes:
    """A hand-built WAV file: RIFF header, a 16-byte 'fmt ' chunk, a 'data' chunk."""
    align = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _sine(n: int, rate: int, hz: float = 440.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(n) / rate)


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.round(x * 32767).astype(np.int16)


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path | bytes, str]]:
    """case -> (what read_wav is given, a phrase its error must say)."""
    real = _write(tmp / "real.wav", 16000, _pcm16(_sine(1600, 16000))).read_bytes()
    (tmp / "folder.wav").mkdir()
    (tmp / "empty.wav").write_bytes(b"")
    (tmp / "notes.txt").write_text("hello, this is not audio\n")
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(png, format="PNG")
    (tmp / "picture.wav").write_bytes(png.getvalue())
    (tmp / "truncated.wav").write_bytes(real[:20])
    _write(tmp / "no_frames.wav", 16000, np.zeros(0, np.int16))
    _write(tmp / "short.wav", 16000, _pcm16(_sine(160, 16000)))  # 10 ms
    (tmp / "mulaw.wav").write_bytes(_header(7, 1, 8000, 8, bytes(800)))
    _write(tmp / "nan.wav", 16000, np.array([0.0, np.nan] * 400, np.float32))
    return {
        "missing": (tmp / "missing.wav", "file not found"),
        "folder": (tmp / "folder.wav", "is a folder"),
        "empty": (tmp / "empty.wav", "empty file (0 bytes)"),
        "text": (tmp / "notes.txt", "not a WAV file (it starts with the text 'hello, this is not audio"),
        "png": (tmp / "picture.wav", "not a WAV file (it looks like a PNG image)"),
        "truncated header": (tmp / "truncated.wav", "truncated WAV file: it ends at byte 20, inside its header"),
        "zero frames": (tmp / "no_frames.wav", "holds 0 samples"),
        "10 ms": (tmp / "short.wav", "too short: 10.0 ms of audio, less than one 25 ms analysis window"),
        "µ-law": (tmp / "mulaw.wav", "unsupported WAV encoding: µ-law"),
        "NaN": (tmp / "nan.wav", "400 of its 800 float samples are NaN or infinite"),
        "bytes": (b"GIF89a" + bytes(20), "the upload: not a WAV file (it looks like a GIF image)"),
    }


CASES = ["missing", "folder", "empty", "text", "png", "truncated header", "zero frames", "10 ms", "µ-law", "NaN",
         "bytes"]


@pytest.mark.parametrize("case", CASES)
def test_read_wav_refuses_bad_input_in_one_line_naming_the_file(case, tmp_path):
    source, phrase = _bad_inputs(tmp_path)[case]
    with pytest.raises(QKVError) as e:
        read_wav(source)
    message = str(e.value)
    assert "\n" not in message, message
    assert phrase in message, message
    assert (source.name if isinstance(source, Path) else "the upload") in message


def test_every_bad_input_is_tested(tmp_path):
    assert list(_bad_inputs(tmp_path)) == CASES


def test_stereo_is_downmixed_to_the_mean_of_its_channels(tmp_path):
    left, right = _pcm16(_sine(1600, 16000, 440.0)), _pcm16(_sine(1600, 16000, 1000.0) * 0.5)
    path = _write(tmp_path / "stereo.wav", 16000, np.stack([left, right], axis=1))  # (1600, 2)
    x, notes = read_wav(path)
    expected = (left.astype(np.float64) + right) / 2 / 32768
    assert x.dtype == torch.float32 and x.shape == (1600,)
    assert np.abs(x.numpy() - expected).max() < 1e-7
    assert notes == [f"{path}: stereo, downmixed to mono"]


def test_sample_formats_are_scaled_to_minus_one_one(tmp_path):
    v = np.array([-(2**23), -1, 0, 1, 2**23 - 1] * 100)  # 24-bit values
    with wave.open(str(tmp_path / "24.wav"), "wb") as w:  # the stdlib writes 24-bit PCM: 3 bytes a sample
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(v.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes())
    u8 = np.tile(np.array([0, 64, 128, 255], np.uint8), 100)
    i32 = np.tile(np.array([-(2**31), 0, 2**30, 2**31 - 1], np.int32), 100)
    f32 = np.tile(np.array([-1.0, -0.25, 0.0, 0.75], np.float32), 100)
    f64 = np.tile(np.array([-1.0, 0.5, 1.5, -3.0]), 100)
    for name, samples, expected, note in [
        ("24.wav", None, v / 2**23, ["24-bit samples, converted to float"]),
        ("8.wav", u8, (u8 - 128.0) / 128, ["8-bit samples, converted to float"]),
        ("32.wav", i32, i32 / 2**31, ["32-bit samples, converted to float"]),
        ("f32.wav", f32, f32, []),
        ("f64.wav", f64, np.clip(f64, -1, 1), ["64-bit float samples, converted to 32-bit",
                                               "float samples reach 3, clipped to [-1, 1]"]),
    ]:
        path = tmp_path / name if samples is None else _write(tmp_path / name, 16000, samples)
        x, notes = read_wav(path)
        assert x.dtype == torch.float32 and float(x.abs().max()) <= 1.0
        assert np.abs(x.numpy() - expected).max() < 1e-7, name
        assert notes == [f"{path}: {n}" for n in note], name


@pytest.mark.parametrize("rate", [44100, 8000])
def test_other_rates_are_resampled_to_16khz(rate, tmp_path):
    n = rate // 2  # 0.5 s of a 440 Hz tone
    path = _write(tmp_path / f"{rate}.wav", rate, _pcm16(_sine(n, rate)))
    x, notes = read_wav(path)
    assert notes == [f"{path}: {rate} Hz, resampled to 16000 Hz"]
    assert abs(len(x) - n * SAMPLE_RATE / rate) <= 1
    middle = slice(800, len(x) - 800)  # away from the filter's edges
    assert np.abs(x.numpy()[middle] - _sine(len(x), SAMPLE_RATE)[middle]).max() < 2e-3
    assert read_wav(path, rate=rate)[1] == []  # asked for its own rate: nothing to do


def test_bytes_and_names(tmp_path):
    path = _write(tmp_path / "clip.wav", 8000, _pcm16(_sine(4000, 8000)))
    from_path, _ = read_wav(path)
    from_bytes, notes = read_wav(path.read_bytes())
    assert torch.equal(from_path, from_bytes)
    assert notes == ["the upload: 8000 Hz, resampled to 16000 Hz"]
    assert read_wav(path.read_bytes(), name="hello.wav")[1] == ["hello.wav: 8000 Hz, resampled to 16000 Hz"]
    with pytest.raises(QKVError, match="^hello.wav: empty file"):
        read_wav(b"", name="hello.wav")


def test_a_file_cut_short_or_of_unknown_length_reads_the_frames_it_holds(tmp_path):
    whole = _write(tmp_path / "whole.wav", 16000, _pcm16(_sine(16000, 16000))).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(whole[:-1001])  # half a sample at the end
    x, notes = read_wav(path)
    assert len(x) == (len(whole) - 44 - 1001) // 2
    assert torch.equal(x, read_wav(whole)[0][: len(x)])
    assert notes == [f"{path}: cut short: its header promises 1.00 s of audio, the file holds 0.97 s (read those)"]
    streamed = whole[:40] + b"\xff\xff\xff\xff" + whole[44:]  # a streaming writer's "size unknown"
    assert whole[36:40] == b"data"
    x, notes = read_wav(streamed)
    assert torch.equal(x, read_wav(whole)[0]) and notes == []  # 16 kHz, 16-bit: nothing converted


# ------------------------------------------------------------------------------------------------ writing WAV
def test_write_then_read_round_trips_within_one_step_of_16_bits(tmp_path):
    x = torch.cat([torch.rand(4000) * 2 - 1, torch.tensor([-1.0, 1.0, 0.0])])  # (4003,) incl. both ends
    path = tmp_path / "sub" / "out.wav"
    write_wav(path, x)
    back, notes = read_wav(path)
    assert notes == [] and back.shape == x.shape
    assert (back - x).abs().max() <= 1 / 32768
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.wav"]  # no temporary file left behind
    write_wav(path, x.numpy()[:1000], rate=8000)  # a NumPy waveform, and replacing the file
    assert len(read_wav(path, rate=8000)[0]) == 1000
    with pytest.raises(QKVError, match="mono waveform"):
        write_wav(path, torch.zeros(2, 100))
