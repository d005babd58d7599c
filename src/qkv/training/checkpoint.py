"""Trainer state on disk: everything besides the weights that an exact resume needs.

    <run_dir>/model.safetensors     weights (written by the task's save)
    <run_dir>/optimizer.safetensors optimizer moments, data-sampler and RNG states (tensors)
    <run_dir>/trainer_state.json    step, the schedule's clock, Python/NumPy RNG, optimizer scalars (last)

Every file is written atomically (`qkv.runs`) and stamped with the step; loading checks the stamps agree,
so a crash between two writes is reported instead of resuming from a mixed state.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from qkv.errors import QKVError
from qkv.runs import OPTIM_FILE, STATE_FILE, WEIGHTS_FILE, atomic_save_tensors, atomic_write_json, file_step, load_json


def rng_state() -> tuple[dict, dict]:
    """(tensors, json) snapshot of every RNG the loop touches."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    js = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, js


def set_rng_state(tensors: dict, js: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = js["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_trainer_state(run_dir: Path, step: int, optimizer: torch.optim.Optimizer, data_state: dict,
                       extra: dict) -> None:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    for k, v in data_state.items():
        tensors[f"data.{k}"] = v
    rng_t, rng_js = rng_state()
    tensors.update(rng_t)
    atomic_save_tensors(run_dir / OPTIM_FILE, tensors, metadata={"step": str(step)})
    atomic_write_json(run_dir / STATE_FILE, {"step": step, "optim_scalars": scalars, "rng": rng_js, **extra})


def load_trainer_state(run_dir: Path) -> tuple[dict, dict]:
    """(json state, tensors) of a run dir, after checking that weights and trainer state are from one step."""
    run_dir = Path(run_dir)
    for name in (STATE_FILE, OPTIM_FILE, WEIGHTS_FILE):
        if not (run_dir / name).is_file():
            raise QKVError(f"{run_dir}: no {name}; nothing to resume (was the first checkpoint ever written?)")
    state = load_json(run_dir / STATE_FILE)
    steps = {name: file_step(run_dir / name) for name in (OPTIM_FILE, WEIGHTS_FILE)}
    if any(s != state.get("step") for s in steps.values()):
        raise QKVError(f"{run_dir}: checkpoint files are from different steps ({steps}, state {state.get('step')}); "
                       "a save was interrupted")
    tensors = {}
    with safe_open(str(run_dir / OPTIM_FILE), framework="pt") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return state, tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict, tensors: dict) -> None:
    sd = optimizer.state_dict()
    new_state: dict[int, dict] = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            new_state.setdefault(int(idx), {})[name] = t
    for idx, sc in state.get("optim_scalars", {}).items():
        new_state.setdefault(int(idx), {}).update(sc)
    sd["state"] = new_state
    optimizer.load_state_dict(sd)


def data_state_of(tensors: dict) -> dict:
    return {k[len("data."):]: v for k, v in tensors.items() if k.startswith("data.")}
