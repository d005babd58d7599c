"""One GPT-2 124M training step (forward + backward + fused AdamW): qkv vs `transformers`, same weights.

    python bench/gpt2_train_step.py [--steps 10] [--threads 2] [--bf16 [--force]]

Both models hold the same random weights: qkv's `GPT` is built from its `gpt2` preset (dropout 0, so the
two compute the same function), saved as a run and exported with `qkv convert --to-hf`'s code
(`export_hf_gpt2`), then loaded by `transformers.GPT2LMHeadModel`. Each trains on one fixed batch of
4 × 256 random tokens (seed 0) with `torch.optim.AdamW(fused=True)` and the same hyperparameters. After one
warm-up step each, the steps are interleaved (qkv, transformers, qkv, ...) so that both see the same
machine state; ms/step is the median. In fp32 the two losses agree step by step to ~1e-5 (exactly on the
2-core AMD EPYC this was written on); the largest difference is printed.

Achieved GFLOP/s uses the standard 6N estimate (Kaplan et al. 2020): 6 · N FLOPs per token per training
step, N = the non-embedding parameters (85M for GPT-2 124M). It leaves out the LM-head matmul (tied to the
embedding, 6 · d_model · vocab = 0.23 GFLOP per token against 6N = 0.51) and the attention scores, so the
fraction with the LM head included is printed as well. The peak is measured in the same run: the best of 5
repeats of a 2048×768 @ 768×3072 fp32 matmul (the shape of an MLP up-projection).

--bf16 also trains a fresh copy of qkv (same initial weights) under `torch.autocast("cpu", bfloat16)` for
--steps steps after its warm-up (`--bf16 --steps 50` is the measurement to run), and compares its speed
with transformers fp32 and its loss after the last step with transformers fp32's loss at that same step.
On a CPU without bf16 units (AMX-BF16, AVX512-BF16) autocast is emulated and slower than fp32, so --bf16
only says so and skips unless --force is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import describe, matmul_peak

BATCH, SEQ = 4, 256
LR, BETAS, WEIGHT_DECAY = 6e-4, (0.9, 0.95), 0.1  # GPT-2/3 small's AdamW settings (as nanoGPT uses them)


def qkv_step(model, opt, idx, targets, amp: torch.dtype | None = None) -> float:
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        _, loss = model(idx, targets)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def hf_step(model, opt, idx, _targets) -> float:
    loss = model(input_ids=idx, labels=idx).loss  # transformers shifts the labels itself
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def timed(step, *args) -> tuple[float, float]:
    t = time.perf_counter()
    loss = step(*args)
    return time.perf_counter() - t, loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model, after one warm-up step each")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also train qkv under bf16 autocast for --steps steps")
    ap.add_argument("--force", action="store_true", help="run --bf16 even on a CPU without bf16 units")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(args.threads), flush=True)

    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from qkv.hardware import cpu_bf16_units
    from qkv.models.convert import export_hf_gpt2
    from qkv.models.gpt import GPT
    from qkv.models.io import save_run
    from qkv.models.presets import get_preset

    hf_logging.set_verbosity_error()  # no loading bar, no note about the config's loss_type
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("gpt2"), dropout=0.0)
    model = GPT(cfg).train()
    init = {k: v.clone() for k, v in model.state_dict().items()}  # for the --bf16 copy
    with tempfile.TemporaryDirectory() as tmp:
        save_run(Path(tmp) / "run", model)
        export_hf_gpt2(Path(tmp) / "run", Path(tmp) / "hf")
        hf = GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").train()
    N = model.num_params(non_embedding=True)
    flops_6n = 6 * N * BATCH * SEQ  # per training step
    flops_head = flops_6n + 6 * cfg.d_model * cfg.vocab_size * BATCH * SEQ

    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=g)  # (B, T), one fixed batch
    targets = torch.cat([idx[:, 1:], torch.full((BATCH, 1), -100)], dim=1)  # (B, T), as transformers shifts

    def adamw(m):
        return torch.optim.AdamW(m.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, fused=True)

    opt_q, opt_h = adamw(model), adamw(hf)
    sides = {"qkv": (qkv_step, model, opt_q), "transformers": (hf_step, hf, opt_h)}
    times: dict[str, list[float]] = {k: [] for k in sides}
    losses: dict[str, list[float]] = {k: [] for k in sides}
    for k, (step, m, opt) in sides.items():  # warm-up step (step 0): allocations, fused-AdamW state
        losses[k].append(timed(step, m, opt, idx, targets)[1])
    for _ in range(args.steps):
        for k, (step, m, opt) in sides.items():
            dt, loss = timed(step, m, opt, idx, targets)
            times[k].append(dt)
            losses[k].append(loss)
    peak = matmul_peak()

    ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"GPT-2 124M ({model.num_params():,} params, {N:,} non-embedding), batch {BATCH} × {SEQ} tokens, "
          f"fp32, AdamW(fused=True, lr {LR}, betas {BETAS}, wd {WEIGHT_DECAY}), {args.threads} threads, "
          f"{args.steps} interleaved steps after one warm-up step each (median)")
    print(f"matmul peak (2048×768 @ 768×3072 fp32, best of 5): {peak:.1f} GFLOP/s")
    print(f"{'':14} {'ms/step':>9} {'tokens/s':>9} {'GFLOP/s (6N)':>13} {'of peak':>8} {'with LM head':>13}")
    for k in sides:
        s = ms[k] / 1000
        print(f"{k:14} {ms[k]:9.0f} {BATCH * SEQ / s:9.0f} {flops_6n / s / 1e9:13.1f} "
              f"{flops_6n / s / 1e9 / peak:7.0%} {flops_head / s / 1e9 / peak:12.0%}")
    print(f"speed ratio qkv / transformers: {ms['transformers'] / ms['qkv']:.2f}x")
    for i, (a, b) in enumerate(zip(losses["qkv"], losses["transformers"], strict=True)):
        print(f"  step {i}{' (warm-up)' if i == 0 else ''}: loss qkv {a:.6f}  transformers {b:.6f}  "
              f"diff {a - b:+.2e}")
    diff = max(abs(a - b) for a, b in zip(losses["qkv"], losses["transformers"], strict=True))
    print(f"max |loss qkv - loss transformers| over {len(losses['qkv'])} steps: {diff:.2e}")

    if not args.bf16:
        return
    units = cpu_bf16_units()
    if not units:
        print("bf16: this CPU has no bf16 units (AMX-BF16 or AVX512-BF16), so bf16 autocast is emulated and "
              "does not pay here" + ("; running it anyway (--force)" if args.force else "; add --force to run it"))
        if not args.force:
            return
    del opt_q, model
    model = GPT(cfg).train()
    model.load_state_dict(init)
    opt_b = adamw(model)
    bf16_losses = [qkv_step(model, opt_b, idx, targets, torch.bfloat16)]  # warm-up step
    bf16_times = []
    for _ in range(args.steps):
        dt, loss = timed(qkv_step, model, opt_b, idx, targets, torch.bfloat16)
        bf16_times.append(dt)
        bf16_losses.append(loss)
    ms_b = statistics.median(bf16_times) * 1000
    ref = losses["transformers"][-1]
    print(f"qkv bf16 autocast ({', '.join(units) or 'no bf16 units'}): {ms_b:.0f} ms/step, "
          f"{BATCH * SEQ / ms_b * 1000:.0f} tokens/s, {ms['transformers'] / ms_b:.2f}x transformers fp32's speed")
    print(f"loss after step {args.steps}: qkv bf16 {bf16_losses[-1]:.6f}, transformers fp32 {ref:.6f}, "
          f"diff {bf16_losses[-1] - ref:+.2e}")


if __name__ == "__main__":
    main()
