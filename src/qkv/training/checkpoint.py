"""Trainer state on disk: everything besides the weights that an exact resume needs.

    <run_dir>/model.safetensors     weights (written by the task's save)
    <run_dir>/optimizer.safetensors optimizer moments, data-sampler and RNG states (tensors)
    <run_dir>/trainer_state.json    step, the schedule's clock, Python/NumPy RNG, optimizer scalars (last)

Every file is written atomically (`qkv.runs`) and stamped with the step; loading checks the stamps agree,
so a crash between two writes is reported instead of resuming from a mixed state.

Under FSDP (`qkv.training.sharding`) no process holds the whole model, so the weights and the Adam moments go to
a sharded checkpoint instead, written by every process with ``torch.distributed.checkpoint``:

    <run_dir>/checkpoint-0000500/   "model.<name>" and "optim.<name>.<moment>" tensors, keyed by parameter name
                                    (`get_state_dict`), one safetensors file per process; optimizer.safetensors
                                    keeps the data-sampler and RNG states, and trainer_state.json names the folder

Keys are parameter names and every file records which slice of each tensor it holds, so a run saved by 2
processes resumes on 1 or on 4: each process reads the slices of its new shards (`load_sharded_state`).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from qkv.errors import QKVError
from qkv.runs import (
    OPTIM_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_json,
    file_step,
    load_json,
    load_sharded_tensors,
    save_sharded_tensors,
    sharded_dir,
    stale_sharded_dirs,
)


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


def save_trainer_state(run_dir: Path, step: int, optimizer: torch.optim.Optimizer | None, data_state: dict,
                       extra: dict) -> None:
    """optimizer.safetensors, then trainer_state.json. `optimizer` None: its moments are in a sharded checkpoint
    (FSDP), which `extra["sharded"]` names."""
    sd = optimizer.state_dict() if optimizer is not None else {"state": {}}
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
    state = load_json(run_dir / STATE_FILE) if (run_dir / STATE_FILE).is_file() else {}
    stamped = (OPTIM_FILE,) if state.get("sharded") else (OPTIM_FILE, WEIGHTS_FILE)  # FSDP: the weights are sharded
    for name in (STATE_FILE, *stamped):
        if not (run_dir / name).is_file():
            raise QKVError(f"{run_dir}: no {name}; nothing to resume (was the first checkpoint ever written?)")
    if state.get("sharded") and not (run_dir / state["sharded"]).is_dir():
        raise QKVError(f"{run_dir}: the sharded checkpoint {state['sharded']} that {STATE_FILE} names is missing")
    steps = {name: file_step(run_dir / name) for name in stamped}
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


# ------------------------------------------------------------------------------------------------ FSDP
def _sharded_tensors(raw, optimizer) -> tuple[dict, dict, dict]:
    """(model state dict, optimizer state dict, the flat dict the checkpoint holds: "model.<name>" for every
    parameter and persistent buffer (a tied weight once), "optim.<name>.<moment>"); the flat dict's tensors are
    the state dicts' own, so loading into it fills them."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(raw, optimizer)  # keyed by parameter name; builds the moments if not stepped yet
    own = {n for n, _ in raw.named_parameters()} | {n for n, _ in raw.named_buffers()}
    flat = {f"model.{k}": v for k, v in msd.items() if k in own}
    for name, moments in osd["state"].items():
        flat.update({f"optim.{name}.{m}": v for m, v in moments.items() if torch.is_tensor(v)})
    return msd, osd, flat


def save_sharded_state(run_dir: Path, step: int, raw, optimizer, dist_info) -> str:
    """Every process writes its shards of the weights and moments into a new folder for `step`; returns the
    folder's name, for trainer_state.json (written next, by the main process: the commit point)."""
    from qkv.training import distributed

    folder = sharded_dir(run_dir, step)
    if dist_info.is_main and folder.exists():  # a save of this step that a crash interrupted
        shutil.rmtree(folder)
    distributed.barrier(dist_info)
    save_sharded_tensors(folder, _sharded_tensors(raw, optimizer)[2])
    distributed.barrier(dist_info)
    return folder.name


def drop_stale_shards(run_dir: Path, current: str) -> None:
    """Once trainer_state.json names `current`, the older sharded checkpoints go (main process)."""
    for old in stale_sharded_dirs(run_dir, Path(run_dir) / current):
        shutil.rmtree(old, ignore_errors=True)


def load_sharded_state(run_dir: Path, state: dict, raw, optimizer) -> None:
    """Weights and moments from the sharded checkpoint `state` names, resharded to this run's process count
    (every process calls it)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    msd, osd, flat = _sharded_tensors(raw, optimizer)
    load_sharded_tensors(Path(run_dir) / state["sharded"], flat, collective=True)
    set_state_dict(raw, optimizer, model_state_dict=msd, optim_state_dict=osd)
