"""A model in a run directory: ``config.json`` names its type and config, ``model.safetensors`` its weights (an FSDP
run: its sharded checkpoint, `qkv.training.checkpoint`).

``config.json`` holds ``{"model_type": "gpt", "model": {...GPTConfig...}, ...}`` plus whatever else the
run recorded (``task``, ``train``, ``data`` sections; `qkv.runs` owns the file names and the writes).
Loading rebuilds the model from its config and checks every tensor name and shape before copying, so a
checkpoint that disagrees with its config is an error naming the first mismatching key. Configs saved
under an older name of a field (`LEGACY_NAMES`) still load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qkv.config import from_dict, to_dict
from qkv.errors import QKVError
from qkv.models.autoencoder import Autoencoder, AutoencoderConfig
from qkv.models.captioner import Captioner, CaptionerConfig
from qkv.models.dit import DiT, DiTConfig
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.reader import Reader, ReaderConfig
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.models.transcriber import Transcriber, TranscriberConfig
from qkv.runs import (
    CONFIG_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_json,
    file_step,
    load_json,
    load_sharded_tensors,
    load_tensors,
    read_config,
    sharded_checkpoint,
)

# model_type -> (config class, model class)
MODEL_TYPES: dict[str, tuple[type, type]] = {
    "gpt": (GPTConfig, GPT), "seq2seq": (Seq2SeqConfig, Seq2Seq), "dit": (DiTConfig, DiT),
    "autoencoder": (AutoencoderConfig, Autoencoder), "captioner": (CaptionerConfig, Captioner),
    "transcriber": (TranscriberConfig, Transcriber), "reader": (ReaderConfig, Reader),
}

# model_type -> {old field name: new one}: run directories written before a rename still load
LEGACY_NAMES: dict[str, dict[str, str]] = {"gpt": {"tie_weights": "tie_embeddings"}}


def model_type_of(model: nn.Module) -> str:
    """The model_type of the most derived registered class `model` is an instance of: its own class (a Captioner
    is a Seq2Seq subclass, and a "captioner"), or the class a wrapper derives from (FSDP's FSDPCaptioner)."""
    for cls in type(model).__mro__:
        for name, (_, registered) in MODEL_TYPES.items():
            if cls is registered:
                return name
    raise TypeError(f"unknown model class {type(model).__name__}")


def model_config_dict(model_type: str, model_cfg: dict) -> dict:
    """A saved model section with any field saved under an older name renamed (`LEGACY_NAMES`)."""
    renames = LEGACY_NAMES.get(model_type, {})
    return {renames.get(k, k): v for k, v in model_cfg.items()}


def build_model(model_type: str, model_cfg: dict, device: str | torch.device | None = None) -> nn.Module:
    if model_type not in MODEL_TYPES:
        raise QKVError(f"unknown model_type {model_type!r}; valid: {', '.join(MODEL_TYPES)}")
    cfg_cls, model_cls = MODEL_TYPES[model_type]
    cfg = from_dict(cfg_cls, model_config_dict(model_type, model_cfg), prefix="model.")
    try:
        with torch.device(device or "cpu"):
            return model_cls(cfg)
    except ValueError as e:  # a config that validates alone but cannot build a model (a size left unset)
        raise QKVError(f"model: {e}") from None


def weights_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without tied duplicates (safetensors refuses shared storage)."""
    sd = model.state_dict()
    seen: dict[int, str] = {}
    out = {}
    for name, t in sd.items():
        key = t.data_ptr() if t.device.type != "meta" else id(t)
        if t.numel() and key in seen:
            continue
        seen[key] = name
        out[name] = t
    return out


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy `tensors` into `model`, strictly: every key present, no extras, every shape equal."""
    expected = weights_to_save(model)
    for name, t in expected.items():
        if name not in tensors:
            raise QKVError(f"{source}: missing tensor {name!r} (expected shape {tuple(t.shape)})")
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise QKVError(
                f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"config expects {tuple(t.shape)}"
            )
    extra = [k for k in tensors if k not in expected]
    if extra:
        raise QKVError(f"{source}: unexpected tensor {extra[0]!r} not in the model built from config")
    with torch.no_grad():
        for name, t in expected.items():
            t.copy_(tensors[name])


def save_run(run_dir: str | Path, model: nn.Module, tokenizer=None, extra_config: dict | None = None,
             metadata: dict[str, str] | None = None, weights: bool = True) -> Path:
    """Write config.json, model.safetensors and (if given) tokenizer.json, each atomically.

    `metadata` goes into the safetensors header (the trainer stamps the step there). ``weights=False``: no
    model.safetensors (an FSDP run's weights are in its sharded checkpoint).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": model_type_of(model), "model": to_dict(model.config)}
    cfg.update(extra_config or {})
    if weights:
        atomic_save_tensors(run_dir / WEIGHTS_FILE, weights_to_save(model),
                            metadata={"format": "pt", **(metadata or {})})
    if tokenizer is not None:
        tokenizer.save(run_dir / TOKENIZER_FILE)
    atomic_write_json(run_dir / CONFIG_FILE, cfg)
    return run_dir


def load_model(run_dir: str | Path, device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model from ``config.json`` and load its weights strictly: ``model.safetensors``, or an FSDP
    run's sharded checkpoint (whichever is newer, when ``qkv convert --consolidate`` wrote the first from an
    older step). Returns (model, config)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    model = build_model(cfg["model_type"], cfg["model"], device)
    path = run_dir / WEIGHTS_FILE
    sharded = sharded_checkpoint(run_dir)
    if sharded is not None and (not path.is_file() or file_step(path) < load_json(run_dir / STATE_FILE)["step"]):
        load_weights(model, read_sharded_weights(sharded, model), source=str(sharded))
    else:
        load_weights(model, load_tensors(path, device=str(device or "cpu")), source=str(path))
    model.eval()
    return model, cfg


def read_sharded_weights(folder: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights of `model` from a sharded checkpoint, read by this process alone (every shard's slice
    of every tensor), as a dict `load_weights` checks."""
    expected = weights_to_save(model)
    tensors = {f"model.{k}": torch.empty_like(t) for k, t in expected.items()}
    load_sharded_tensors(folder, tensors, collective=False)
    return {k[len("model."):]: t for k, t in tensors.items()}


def consolidate(run_dir: str | Path) -> tuple[Path, int, Path]:
    """An FSDP run's sharded weights -> RUN/model.safetensors, stamped with the checkpoint's step, on one process.
    Returns (the file, the parameter count, the sharded folder it came from)."""
    run_dir = Path(run_dir)
    read_config(run_dir)
    sharded = sharded_checkpoint(run_dir)
    if sharded is None:
        raise QKVError(f"{run_dir}: no sharded checkpoint to consolidate (trained with parallel = 'ddp'? its weights "
                       f"are already {WEIGHTS_FILE})")
    model, _ = load_model(run_dir)
    step = load_json(run_dir / STATE_FILE)["step"]
    path = run_dir / WEIGHTS_FILE
    atomic_save_tensors(path, weights_to_save(model), metadata={"format": "pt", "step": str(step)})
    return path, sum(p.numel() for p in model.parameters()), sharded
