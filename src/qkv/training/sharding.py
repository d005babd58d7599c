"""Fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``): each process keeps 1/N of every
weight, gradient and Adam moment, and gathers a block's weights only while it runs.

    fully_shard(block) for every transformer block     (each item of the model's nn.ModuleLists: GPT's blocks,
                                                         the encoder's and decoder's layers, DiT's blocks)
    fully_shard(model)                                  the rest: embeddings, head, final norm (one unit, so tied
                                                         embedding and head weights stay one parameter)

A parameter becomes a DTensor sharded on dim 0 across the processes. In a block's forward, FSDP all-gathers its
weights, runs it, and (``reshard_after_forward``) frees them again; backward gathers them once more and
reduce-scatters the gradients, averaged over the processes as DDP averages them. So the training loop's
arithmetic is DDP's: the same loss weighting, the same optimizer on (sharded) parameters. What differs is
memory: weights + gradients + two Adam moments cost 16 bytes a parameter under DDP on every process, 16 / N
under FSDP, plus one gathered block at a time.

Task code never sees a shard. Evaluation (and, after training, the summary and samples) gets `replica`: a plain
copy of the model, rebuilt from its config and filled with the gathered weights, because decoding calls methods
FSDP does not hook (``encode``, ``decode``; FSDP hooks ``forward`` only) and copies the model (an FSDP module refuses
``deepcopy``). A step hook that reads the weights (diffusion's EMA) runs inside `gathered`, with every unit
unsharded in place, which costs no rebuild.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one by one: the items of every outermost nn.ModuleList that hold parameters."""
    units: list[nn.Module] = []
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not any(_contains(u, module) for u in units):
            units += [m for m in module if any(True for _ in m.parameters())]
    return units


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def shard(model: nn.Module, *, reshard_after_forward: bool = True, param_dtype: torch.dtype | None = None,
          device: torch.device | None = None) -> int:
    """Apply fully_shard to every unit, then to `model` itself (in place: `model` becomes an FSDPModule).

    ``param_dtype`` (bf16 under ``train.precision``'s autocast) is the dtype weights are gathered and computed in;
    gradients are reduced in fp32. Returns the number of units besides the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device = device or torch.device("cpu")
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else \
        MixedPrecisionPolicy()
    units = shard_units(model)
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    for m in (*units, model):
        m._qkv_reshard = reshard_after_forward  # what `gathered` restores
    return len(units)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, every weight of a sharded `model` is whole on every process (no-op for an unsharded one), and a
    forward neither gathers nor frees them. Every process must enter together (the gather is collective)."""
    units = _fsdp_modules(model)
    for m in units:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(m._qkv_reshard, recurse=False)


def replica(model: nn.Module, device: torch.device) -> nn.Module:
    """A plain, unsharded copy of a sharded `model` on every process (collective): built from ``model.config``
    as `qkv.models.io` builds any run's model, then loaded with the whole weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from qkv.config import to_dict
    from qkv.models.io import build_model, model_type_of

    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # every process gets all
    copy = build_model(model_type_of(model), to_dict(model.config), device)
    copy.load_state_dict(whole)
    return copy.train(model.training)


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> float:
    """The global gradient norm (over every process's shards when they are DTensors), and clip to `max_norm`
    (0: only measure). The norm is what DDP's ``clip_grad_norm_`` returns for the whole model."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if hasattr(total, "full_tensor"):  # a DTensor: the shards' partial norms, reduced over the processes
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return float(total)
