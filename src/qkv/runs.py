"""The run directory: every file qkv keeps for a run, its name, and how it is written and read back.

    RUN/config.json             {"task", "model_type", "model": {...}, every other section, "data_meta"}
    RUN/model.safetensors       the weights, stamped with their step (metadata "step")
    RUN/tokenizer.json          the tokenizer (translation: the joint or source one)
    RUN/tokenizer_tgt.json      translation with separate vocabularies: the target tokenizer
    RUN/ema.safetensors         diffusion: the weight average that sampling uses, stamped with its step
    RUN/optimizer.safetensors   optimizer moments, data-sampler and RNG states, stamped with their step
                                (under FSDP only the data-sampler and RNG states)
    RUN/checkpoint-0000500/     FSDP: the sharded checkpoint of step 500, weights ("model.*") and Adam moments
                                ("optim.*"), one safetensors file per process (torch.distributed.checkpoint's
                                Hugging Face storage: each header holds its shards' offsets as JSON)
    RUN/trainer_state.json      step, the clock of the time schedule, Python/NumPy RNG, and under FSDP the name
                                of the sharded checkpoint it belongs to (written last: the commit point)
    RUN/metrics.jsonl           one JSON line per logged step and per evaluation
    RUN/loss.png                the loss curves
    RUN/samples.png             diffusion: the grid sampled when training ends
    RUN/report.html, report.md  the report card (`qkv report`, and `qkv train` when it ends): one self-contained
                                HTML page and its Markdown twin
    RUN/data/train.bin, val.bin, meta.json   language models: the token ids, memory-mapped
    RUN/autoencoder/            latent diffusion: the autoencoder's own run directory

Every file is written atomically (a temporary file in the same folder, fsync, rename): a reader, or a
crash, sees the old file or the new one, never half of one; a sharded checkpoint is a new folder per save, which
trainer_state.json names once every shard is on disk. Nothing is pickled. This module is the only
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
SHARDED_PREFIX = "checkpoint-"  # + the step, 7 digits: a sharded checkpoint's folder


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


# ------------------------------------------------------------------------------------------------ sharded (FSDP)
def sharded_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"{SHARDED_PREFIX}{step:07d}"


def sharded_checkpoint(run_dir: str | Path) -> Path | None:
    """The sharded checkpoint trainer_state.json names (an FSDP run's weights), or None (a DDP run, none yet)."""
    state = Path(run_dir) / STATE_FILE
    if not state.is_file():
        return None
    name = load_json(state).get("sharded")
    if not name:
        return None
    path = Path(run_dir) / name
    if not path.is_dir():
        raise QKVError(f"{run_dir}: {STATE_FILE} names the sharded checkpoint {name}, which is missing")
    return path


def stale_sharded_dirs(run_dir: str | Path, keep: Path) -> list[Path]:
    """Every sharded checkpoint folder of `run_dir` but `keep` (older saves, or a save a crash interrupted)."""
    return [p for p in Path(run_dir).glob(f"{SHARDED_PREFIX}*") if p.is_dir() and p.name != keep.name]


def has_weights(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds trained weights: model.safetensors, or a sharded checkpoint."""
    run_dir = Path(run_dir)
    return (run_dir / WEIGHTS_FILE).is_file() or (
        (run_dir / STATE_FILE).is_file() and bool(_quiet_state(run_dir).get("sharded")))


def _quiet_state(run_dir: Path) -> dict:
    try:
        return load_json(run_dir / STATE_FILE)
    except QKVError:
        return {}


def save_sharded_tensors(folder: str | Path, tensors: dict) -> None:
    """Every process writes its own shards of `tensors` (DTensors, or plain tensors every process holds alike)
    into `folder` with torch.distributed.checkpoint: one safetensors file per process, no pickle."""
    import torch.distributed.checkpoint as dcp

    dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(str(folder), save_distributed=True))


def load_sharded_tensors(folder: str | Path, tensors: dict, *, collective: bool) -> None:
    """Fill `tensors` (DTensors shaped for this process count, or whole tensors) in place from a sharded
    checkpoint written at any process count: torch.distributed.checkpoint reads the slices each one needs.
    Only safetensors headers (JSON) and tensor bytes are read: nothing is unpickled. ``collective``: every
    process of the group calls this together (training); else this process reads alone (inference)."""
    import warnings

    import torch.distributed.checkpoint as dcp

    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(folder)), no_dist=not collective)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        lines = str(e).strip().splitlines()
        why = lines[-1][:200] if lines else type(e).__name__
        raise QKVError(f"{folder}: cannot read the sharded checkpoint ({why})") from None
