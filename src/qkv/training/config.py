"""`TrainConfig`: everything the training loop does, saved with every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    max_steps: int = 2000  # optimizer steps
    max_minutes: float | None = None  # also stop (and save) once this much wall time has passed
    batch_size: int = 12  # sequences per optimizer step, summed over processes and micro-batches
    grad_accum: int = 1  # micro-batches per step; each holds batch_size / (grad_accum · processes) sequences
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # floor of the decay
    warmup_steps: int = 100  # linear warmup: lr · (step + 1) / (warmup_steps + 1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    decay_steps: int | None = None  # the decay reaches min_lr here; default max_steps
    schedule_by: Literal["steps", "time"] = "steps"  # "time": decay over max_minutes instead of steps
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.1  # applied to 2-D weights only (matrices and embeddings)
    # "muon": torch.optim.Muon for the hidden Linear weights, AdamW for the rest (qkv.training.optim)
    optimizer: Literal["adamw", "muon"] = "adamw"
    muon_momentum: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    eval_interval: int = 250  # evaluate (and checkpoint) every N steps, and at the end
    eval_iters: int = 20  # batches in nanoGPT's sampled loss estimate; 0 skips it
    full_eval_interval: int | None = None  # full-pass validation every N steps (default: eval_interval)
    log_interval: int = 10  # metrics.jsonl line every N steps
    seed: int = 1337
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda", "cuda:1", "mps"
    # fp32, or autocast: "auto" = bf16 where the hardware has bf16 units (CUDA; AMX/AVX512-BF16 CPUs), else
    # fp32 (fp16 on older GPUs); see qkv.training.precision
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False  # torch.compile the model; falls back to eager with a message if it fails
    threads: int | None = None  # torch CPU threads (default: torch's choice; 1 per process under torchrun)
    # how processes under torchrun share the work (qkv.training.sharding): "ddp" = every process holds the whole
    # model; "fsdp" = each holds 1/N of every weight, gradient and Adam moment (FSDP2), checkpoints are sharded
    parallel: Literal["ddp", "fsdp"] = "ddp"
    reshard_after_forward: bool = True  # fsdp: free gathered weights after each block's forward (less memory)
    progress: bool = True  # show a progress bar

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "grad_accum", "eval_interval", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        if self.lr <= 0 or self.min_lr < 0:
            raise ValueError("lr must be positive and min_lr non-negative")
        if self.warmup_steps < 0 or self.eval_iters < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps, eval_iters, grad_clip and weight_decay must be >= 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.schedule_by == "time" and self.max_minutes is None:
            raise ValueError("schedule_by = 'time' needs max_minutes")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose adamw or muon")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ValueError(f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"unknown parallel {self.parallel!r}; choose ddp or fsdp")
        if self.parallel == "fsdp" and self.optimizer == "muon":
            raise ValueError("optimizer = 'muon' needs whole weight matrices; use it with parallel = 'ddp'")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive, got {self.threads}")
