"""AdamW with decoupled weight decay on 2-D weights only, Muon as an option, and the learning-rate schedule.

Weight decay shrinks matrices and embeddings; biases and norm gains (1-D) are left alone (nanoGPT,
GPT-3). The schedule is a pure function of progress, so a resumed run recomputes the same rate.

Muon (Jordan et al. 2024; `torch.optim.Muon`) updates a weight matrix with its momentum orthogonalised by
five Newton–Schulz iterations: every direction of the update gets the same size, so rare directions learn as
fast as common ones. It is for the hidden matrices only — the Linear layers inside the blocks; embeddings,
the output head, norms, biases and scalars keep AdamW (modded-nanogpt, nanochat). With
adjust_lr_fn="match_rms_adamw" (Liu et al. 2025, "Muon is scalable") its update has AdamW's RMS, so the
same peak learning rate fits both. The Newton–Schulz steps cost about 5·d/T of a step's FLOPs (d the width,
T the tokens per step): on a CPU's small token batches that is not free, and docs/benchmarks.md measures it.
torch runs those iterations in bf16; on a CPU without bf16 units bf16 matmuls are emulated (measured 26×
slower than fp32 on an AVX2-only AMD EPYC), so there `MuonFP32` runs the same iteration in fp32.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.optim import _muon

from qkv import hardware
from qkv.training.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: tensors with dim ≥ 2 decay, the rest don't. Tied tensors appear once."""
    decay, no_decay = [], []
    for p in model.parameters():  # .parameters() yields a shared (tied) tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(groups: list[dict], cfg: TrainConfig, device_type: str) -> torch.optim.AdamW:
    kwargs = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
    # the fused kernel updates every tensor in one pass; it exists for CPU and CUDA in current PyTorch
    if "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cpu", "cuda"):
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The weights Muon updates: every nn.Linear weight except an output head (a module named `lm_head`, or a
    Linear whose weight is also an embedding's). Embeddings, norms, biases and scalars are not Linear weights."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [m.weight for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head" and id(m.weight) not in embedded
            and m.weight.requires_grad]


def newton_schulz_fp32(grad: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float) -> Tensor:
    """torch.optim.Muon's quintic Newton–Schulz iteration, X ← aX + (bA + cA²)X with A = XXᵀ, in fp32.

    G is scaled to spectral norm ≤ 1 (by its Frobenius norm), and the wide orientation is iterated so that A is
    the smaller Gram matrix. The result is roughly UVᵀ of G = USVᵀ (singular values pushed toward 1)."""
    a, b, c = ns_coefficients
    tall = grad.size(0) > grad.size(1)
    x = grad.float().T if tall else grad.float()  # (m, n), m ≤ n
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T  # (m, m)
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # (m, n)
    return x.T if tall else x


@contextmanager
def _fp32_newton_schulz() -> Iterator[None]:
    original = _muon._zeropower_via_newtonschulz
    _muon._zeropower_via_newtonschulz = newton_schulz_fp32
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = original


class MuonFP32(torch.optim.Muon):
    """torch.optim.Muon with its Newton–Schulz iterations in fp32 instead of bf16: for CPUs without bf16 units.

    Everything else (momentum, Nesterov, weight decay, the learning-rate adjustment, the state) is torch's."""

    @torch.no_grad()
    def step(self, closure=None):
        with _fp32_newton_schulz():
            return super().step(closure)


class MuonWithAdamW:
    """Muon for the hidden matrices, AdamW for every other parameter: one object with the optimizer interface
    the training loop and the checkpoint use (param_groups, step, zero_grad, state_dict, load_state_dict).

    In the state dict the AdamW parameters are numbered after Muon's, as if one optimizer held both."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.parts = (muon, adamw)

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts for g in part.param_groups]

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for part in self.parts:
            sd = part.state_dict()
            state.update({offset + i: st for i, st in sd["state"].items()})
            groups += [{**g, "params": [offset + i for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in part.param_groups)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        offset, start = 0, 0
        for part in self.parts:
            n_groups, n_params = len(part.param_groups), sum(len(g["params"]) for g in part.param_groups)
            groups = sd["param_groups"][start : start + n_groups]
            part.load_state_dict({
                "state": {int(i) - offset: st for i, st in sd["state"].items() if offset <= int(i) < offset + n_params},
                "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in groups],
            })
            offset, start = offset + n_params, start + n_groups


def build_optimizer(model: nn.Module, cfg: TrainConfig, device_type: str):
    """AdamW over `param_groups`, or with cfg.optimizer == "muon", `MuonWithAdamW`."""
    if cfg.optimizer == "adamw":
        return adamw(param_groups(model, cfg.weight_decay), cfg, device_type)
    matrices = hidden_matrices(model)
    if not matrices:
        raise ValueError("optimizer = 'muon' found no hidden Linear weights to update in this model")
    fast_bf16 = device_type != "cpu" or bool(hardware.cpu_bf16_units())
    muon = (torch.optim.Muon if fast_bf16 else MuonFP32)(
        matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum, adjust_lr_fn="match_rms_adamw")
    taken = {id(p) for p in matrices}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in taken]}
            for g in param_groups(model, cfg.weight_decay)]
    return MuonWithAdamW(muon, adamw([g for g in rest if g["params"]], cfg, device_type))


def lr_at(step: int, cfg: TrainConfig, time_fraction: float | None = None) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warmup: lr · (step + 1) / (warmup + 1). Then decay from lr to min_lr over [warmup, decay_steps]
    (cosine: min + ½(1 + cos(π·r))(lr − min)), or over the wall-time budget when schedule_by = "time"
    (`time_fraction` = share of the decay time used). After that, min_lr.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    if time_fraction is not None:
        ratio = time_fraction
    else:
        decay_steps = cfg.decay_steps or cfg.max_steps
        ratio = (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps)
    ratio = min(max(ratio, 0.0), 1.0)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio)) if cfg.schedule == "cosine" else 1.0 - ratio
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)
