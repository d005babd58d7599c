"""Spoken-digit folders and tiny speech runs for the speech tests (FSDD recordings, found as qkv finds data).

`digit_folder` writes FSDD clips as a speech folder (audio/*.wav + transcripts.jsonl, what `qkv data speech`
writes and users bring); `SPEECH_ARGS` train a 1-layer transcriber on it in seconds on one thread, with no
augmentation, so it learns its few training words by heart: what a page or a topic needs to show a right
transcript.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DIGITS = (0, 1, 2)


def fsdd_root() -> Path:
    from qkv.data.registry import resolve
    from qkv.errors import QKVError

    try:
        return resolve("fsdd", download=False) / "recordings"
    except QKVError as e:  # make test fetches it first (qkv data get fsdd); a test never downloads
        pytest.fail(f"FSDD is not available ({e}); run `qkv data get fsdd` or set QKV_DATA_DIR", pytrace=False)


def digit_clips(digits=DIGITS, speakers=("jackson",), takes=range(10, 20)) -> list:
    from qkv.data.speech import fsdd_clips

    return [c for c in fsdd_clips(fsdd_root()) if c.digit in digits and c.speaker in speakers and c.take in takes]


def digit_folder(folder: Path, clips) -> Path:
    """`clips` (FSDD) as a speech folder: the digit's word as the text."""
    from qkv.data.speech import DIGIT_WORDS, clip_wave, write_speech_folder

    write_speech_folder(folder, [(clip_wave(c), DIGIT_WORDS[c.digit], {"speaker": c.speaker, "take": c.take})
                                 for c in clips])
    return folder


SPEECH_ARGS = [
    "--train.threads", "1", "--train.progress", "false", "--train.max_minutes", "none", "--train.schedule_by", "steps",
    "--train.precision", "fp32", "--no-sample", "--train.max_steps", "240", "--train.decay_steps", "240",
    "--train.warmup_steps", "10", "--train.eval_interval", "240", "--train.full_eval_interval", "240",
    "--train.log_interval", "20", "--train.batch_size", "16", "--train.lr", "3e-3", "--train.seed", "2",
    "--data.speeds", "[1.0]", "--data.gain_db", "[0.0, 0.0]", "--data.noise_snr_db", "[]",
    "--data.spec_augment", "false", "--data.val_fraction", "0.2", "--train.ctc_weight", "0.3",
    "--decode.beam", "1", "--decode.ctc_weight", "0",  # greedy, as the tests' expectations were measured
    "--model.d_model", "48", "--model.n_heads", "2", "--model.n_encoder_layers", "2", "--model.n_decoder_layers", "1",
    "--model.dropout", "0.0", "--model.max_frames", "300", "--model.max_seq_len", "16",
]
