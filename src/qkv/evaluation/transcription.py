"""How a transcript is judged: word and character error rates (`jiwer`), per speaker or voice, a digit confusion
matrix, and the real-time factor.

    WER = (substitutions + deletions + insertions) / words of the references

counted over the minimum edit alignment of each hypothesis to its reference, summed over the set (not averaged
per sentence: a long sentence weighs more). CER is the same over characters, spaces included. `jiwer` computes
both; qkv only groups them. The real-time factor is seconds of compute per second of audio: 0.05 is 20× faster
than real time.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def error_rates(hyps: list[str], refs: list[str]) -> dict:
    """{"wer", "cer", "exact", "n", "words", "substitutions", "deletions", "insertions"} of the set."""
    import jiwer

    if len(hyps) != len(refs) or not refs:
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {"n": len(refs), "words": sum(len(r.split()) for r in refs), "wer": words.wer, "cer": chars.cer,
            "exact": sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs),
            "substitutions": words.substitutions, "deletions": words.deletions, "insertions": words.insertions}


def rates_by(hyps: list[str], refs: list[str], metas: list[dict], key: str) -> dict[str, dict]:
    """`error_rates` of each value of meta[key] (a speaker, a voice), sorted by value; {} if no meta has it."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(metas):
        if key in m:
            groups[str(m[key])].append(i)
    return {k: error_rates([hyps[i] for i in idx], [refs[i] for i in idx]) for k, idx in sorted(groups.items())}


def digit_confusion(hyps: list[str], refs: list[str]) -> np.ndarray:
    """(10, 11) counts for single-digit recordings: row = the digit said, column = the digit written (column 10:
    anything that is not one digit word)."""
    m = np.zeros((10, 11), dtype=np.int64)
    for h, r in zip(hyps, refs, strict=True):
        if r in DIGITS:
            m[DIGITS.index(r), DIGITS.index(h) if h in DIGITS else 10] += 1
    return m


def plot_confusion(matrix: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The digit confusion matrix as a PNG (counts in the cells), written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qkv.runs import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(11), [*DIGITS, "other"], rotation=45, ha="right")
    ax.set_yticks(range(10), DIGITS)
    ax.set_xlabel("transcribed")
    ax.set_ylabel("said")
    correct = np.trace(matrix[:, :10])
    ax.set_title(title or f"digits: {correct} of {matrix.sum()} right ({100 * correct / max(1, matrix.sum()):.1f}%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def attention_peaks(amap) -> list[str]:
    """One line per transcript character: where its cross-attention peaks, in seconds (a state is 20 ms)."""
    lines = []
    for i, label in enumerate(amap.rows):
        s = int(amap.weights[i].argmax())
        lines.append(f"{label!r:>8}  peaks at {0.02 * s:5.2f} s (weight {float(amap.weights[i, s]):.2f})")
    return lines


def plot_speech_attention(amap, spectrogram, path: str | Path) -> Path:
    """The alignment picture of speech: the log-mel (M, F) on top, each character's cross-attention over the encoder
    states (rows × S) below, on one time axis in seconds (a frame is 10 ms, a state 20 ms). Written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qkv.runs import atomic_write_bytes

    mel = spectrogram.float().numpy()  # (M, F)
    w = amap.weights.float().numpy()  # (rows, S)
    seconds = mel.shape[1] * 0.01
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(6.0, min(16.0, 2 + 3 * seconds)),
                                                                  2.2 + 0.22 * len(amap.rows)),
                                      gridspec_kw={"height_ratios": [1.2, max(1.0, 0.12 * len(amap.rows))]})
    top.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel.shape[0]))
    top.set_ylabel("mel bin")
    top.set_title(f"{amap.title}\ntranscript: {amap.text}", fontsize=9)
    bottom.imshow(w, aspect="auto", cmap="viridis", extent=(0, w.shape[1] * 0.02, len(amap.rows) - 0.5, -0.5))
    bottom.set_yticks(range(len(amap.rows)), [r.replace(" ", "␣") for r in amap.rows], fontsize=7)
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("character")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
