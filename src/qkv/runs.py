"""The run directory: every file qkv keeps for a run, its name, and how it is written and read back.

    RUN/config.json             {"task", "model_type", "model": {...}, every other section, "data_meta"}
    RUN/model.safetensors       the weights, stamped with their step (metadata "step")
    RUN/tokenizer.json          the tokenizer (translation: the joint or source one)
    RUN/tokenizer_tgt.json      translation with separate vocabularies: the target tokenizer
    RUN/ema.safetensors         diffusion: the weight average that sampling uses, stamped with its step
    RUN/optimizer.safetensors   optimizer moments, data-sampler and RNG states, stamped with their step
    RUN/trainer_state.json      step, the clock of the time schedule, Python/NumPy RNG (written last)
    RUN/metrics.jsonl           one JSON line per logged step and per evaluation
    RUN/loss.png                the loss curves
    RUN/samples.png             diffusion: the grid sampled when training ends
    RUN/report.html, report.md  the report card (`qkv report`, and `qkv train` when it ends): one self-contained
                                HTML page and its Markdown twin
    RUN/data/train.bin, val.bin, meta.json   language models: the token ids, memory-mapped
    RUN/autoencoder/            latent diffusion: the autoencoder's own run directory

Every file is written atomically (a temporary file in the same folder, fsync, rename): a reader, or a
crash, sees the old file or the new one, never half of one. Nothing is pickled. This module is the only
place that spells these names; it imports nothing heavier than the standard library at import time, so
the tokenizers and the data readers may use it. ``qkv.load_run(RUN)`` (in `qkv.tasks`, which knows the
tasks) rebuilds a run from these files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from qkv.errors import QKVError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TGT_TOKENIZER_FILE = "tokenizer_tgt.json"
EMA_FILE = "ema.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
SAMPLES_FILE = "samples.png"
REPORT_HTML_FILE = "report.html"
REPORT_MD_FILE = "report.md"
DATA_DIR = "data"
TOKENS_FILES = {"train": "train.bin", "val": "val.bin"}
DATA_META_FILE = "meta.json"
AUTOENCODER_DIR = "autoencoder"


# ------------------------------------------------------------------------------------------------ writing
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def atomic_save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file written atomically; `metadata` goes into its header (the trainer stamps the step)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata))


def append_jsonl(path: str | Path, record: dict) -> None:
    """One JSON line at the end of `path` (metrics.jsonl): lines are whole, the file grows."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------------------------------ reading
def load_json(path: str | Path) -> dict:
    """A JSON object from a file, or a one-line QKVError (missing, malformed, not an object)."""
    path = Path(path)
    if not path.is_file():
        raise QKVError(f"file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QKVError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise QKVError(f"{path}: expected a JSON object")
    return data


def read_config(run_dir: str | Path) -> dict:
    """RUN/config.json, checked to be a qkv run's (it names its model_type and model)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise QKVError(f"run directory not found: {run_dir}")
    cfg = load_json(run_dir / CONFIG_FILE)
    if "model_type" not in cfg or "model" not in cfg:
        raise QKVError(f"{run_dir / CONFIG_FILE}: not a qkv run config (needs 'model_type' and 'model')")
    return cfg


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every line of RUN/metrics.jsonl ([] if there is none yet; blank lines skipped), or a one-line QKVError
    naming the line that is not a JSON object."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise QKVError(f"{path}: unreadable ({e})") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise QKVError(f"{path}:{number}: not a JSON line ({e.msg})") from None
        if not isinstance(record, dict):
            raise QKVError(f"{path}:{number}: not a JSON object")
        records.append(record)
    return records


def load_tensors(path: str | Path, device: str = "cpu") -> dict:
    """Every tensor of a safetensors file, or a one-line QKVError (missing, truncated, not safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise QKVError(f"{path.parent}: no {path.name} (an unfinished run?)")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise QKVError(f"{path}: cannot read safetensors file ({e})") from None


def file_step(path: str | Path) -> int:
    """The step stamped in a safetensors file's header (-1 if none), or a one-line QKVError if unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("step", -1))
    except (SafetensorError, OSError, ValueError) as e:
        raise QKVError(f"{path}: unreadable checkpoint file ({e})") from None
