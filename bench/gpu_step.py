"""GPT-2 small (124M) training steps on a GPU: bf16 autocast, fused AdamW, torch.compile; tokens/s and MFU.

    python bench/gpu_step.py [--batch 16] [--seq 1024] [--steps 30] [--no-compile]

qkv's `GPT` from its `gpt2` preset (dropout 0), random tokens, `torch.optim.AdamW(fused=True)`. After warm-up
steps (compilation), the median step time of --steps steps gives tokens/s. MFU (PaLM's definition) counts
6·N + 12·L·T·d FLOPs per token (N = non-embedding parameters plus the tied head, as Chinchilla's 6N with the
attention term) against two peaks: this GPU's measured bf16 matmul rate (best of 5 8192² matmuls, in this run)
and its datasheet dense bf16 peak where the name is known (H100 SXM 989, H200 989, A100 312 TFLOP/s).
Needs CUDA; says so and exits 0 without it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DATASHEET_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16, SXM parts


def measured_peak() -> float:
    """Best bf16 TFLOP/s of an 8192 × 8192 @ 8192 × 8192 matmul on this GPU."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_step: no CUDA device here; nothing measured")
        return
    import dataclasses

    from qkv.models import GPT
    from qkv.models.presets import get_preset

    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("gpt2"), dropout=0.0)
    model = GPT(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step_model = model if args.no_compile else torch.compile(model)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), device="cuda")
    idx, targets = x[:, :-1], x[:, 1:]

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = step_model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    ms = 1000 * statistics.median(times)
    tokens = args.batch * args.seq
    n = model.num_params(non_embedding=True) + cfg.vocab_size * cfg.d_model  # + the tied head's matmul
    flops_per_token = 6 * n + 12 * cfg.n_layers * args.seq * cfg.d_model
    achieved = tokens / (ms / 1000) * flops_per_token / 1e12
    peak = measured_peak()
    name = torch.cuda.get_device_name(0)
    sheet = next((v for k, v in DATASHEET_TFLOPS.items() if k in name), None)
    print(f"device: {name} | torch {torch.__version__} | compile {not args.no_compile} | bf16 autocast | fused AdamW")
    print(f"GPT-2 124M, batch {args.batch} × {args.seq}: {ms:.1f} ms/step (median of {args.steps}; warm-up + "
          f"compile {warm:.0f} s), {tokens / (ms / 1000):,.0f} tokens/s, loss {float(loss):.3f}")
    of_sheet = f", {100 * achieved / sheet:.1f}% of the datasheet's {sheet:.0f}" if sheet else ""
    print(f"achieved {achieved:.0f} TFLOP/s; MFU {100 * achieved / peak:.1f}% of the measured bf16 matmul peak "
          f"({peak:.0f} TFLOP/s){of_sheet}")
    print(f"peak memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
