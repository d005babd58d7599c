"""Batch-1 greedy decoding speed at GPT-2 124M shapes: qkv's decoding copies against transformers.

    python bench/generate.py [--new-tokens 128] [--prompt-tokens 32] [--repeats 3] [--compile] [--torchao]
                             [--trained RUN_DIR]

Rows: qkv fp32 with the KV cache (the `qkv generate` default: transposed weights, fused Q/K/V), the same
with three Q/K/V products, with plain nn.Linear weights, with its one-token step compiled (--compile; the
compile time is printed), int8 weights (`--quantize int8`, torch.ao dynamic quantization), torchao's int8
weight-only quantization (--torchao; `pip install --no-deps torchao==0.18.0` is the version measured), bf16
weights (`--quantize bf16`; only on a CPU with bf16 units), and fp32 without the cache. All models share the
same random weights: qkv's GPT is exported with `qkv convert --to-hf` logic and loaded by
`transformers.GPT2LMHeadModel`, so the comparison is like for like. Decoding one token must stream every weight
once, so the floor is fp32 weight bytes ÷ memory bandwidth; the bandwidth is measured here by summing a 1 GiB
array (int8 and bf16 stream fewer bytes, so they can beat that floor; the last column measures each against its
own floor: a quarter of fp32's bytes for int8, half for bf16). With --trained, each weight format's
validation perplexity is compared with fp32 on that run's validation split (--val-tokens: its first N tokens).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import describe


def measure_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: the best of `repeats` passes summing a `gib` GiB fp32 tensor."""
    x = torch.ones(int(gib * (1 << 30)) // 4)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def time_decode(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def torchao_int8(model: torch.nn.Module) -> torch.nn.Module:
    """torchao's int8 weight-only quantization (per-row scales) of every Linear, the head untied as in
    `qkv.generation.quantize.quantize_int8`."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    q = copy.deepcopy(model).eval()
    q.lm_head.weight = torch.nn.Parameter(q.lm_head.weight.detach().clone())
    quantize_(q, Int8WeightOnlyConfig())
    return q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trained", help="a trained qkv GPT run dir: report each weight format's validation perplexity")
    ap.add_argument("--compile", action="store_true", help="add the compiled decode step (compiling takes ~30 s+)")
    ap.add_argument("--torchao", action="store_true", help="add torchao's int8 weight-only quantization")
    ap.add_argument("--val-tokens", type=int, default=None,
                    help="--trained: the first N validation tokens (default: all; bf16 is timed only with N given "
                         "where it would be emulated: ~1 ms/token there)")
    ap.add_argument("--skip-uncached", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(args.threads), flush=True)

    from transformers import GPT2LMHeadModel

    from qkv.generation.inference import for_decoding
    from qkv.generation.lm import generate_ids
    from qkv.generation.quantize import quantize_int8
    from qkv.generation.sampling import TokenSampling
    from qkv.hardware import cpu_bf16_units
    from qkv.models.convert import export_hf_gpt2
    from qkv.models.gpt import GPT
    from qkv.models.io import save_run
    from qkv.models.presets import get_preset

    torch.manual_seed(0)
    model = GPT(get_preset("gpt2")).eval()
    n_params = model.num_params()
    weight_bytes = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    weight_bytes += model.pos_emb.weight.numel() * 4  # every position row is read over a decode; lm_head = tok_emb
    prompt = torch.randint(0, 50257, (args.prompt_tokens,)).tolist()
    greedy = TokenSampling(temperature=0.0)
    N = args.new_tokens

    with tempfile.TemporaryDirectory() as tmp:
        save_run(Path(tmp) / "run", model)
        export_hf_gpt2(Path(tmp) / "run", Path(tmp) / "hf")
        hf = GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").eval()

    def qkv_cached(m=model):
        return list(generate_ids(m, prompt, N, greedy))

    def qkv_uncached():
        return list(generate_ids(model, prompt, N, greedy, use_cache=False))

    ids = torch.tensor([prompt])

    def hf_generate():
        with torch.no_grad():
            return hf.generate(ids, max_new_tokens=N, min_new_tokens=N, do_sample=False, pad_token_id=0)[0, -N:]

    fast, unfused = for_decoding(model), for_decoding(model, fuse=False)
    variants = [("qkv fp32, KV cache (default)", fast), ("transformers generate (fp32)", None),
                ("qkv fp32, KV cache, unfused QKV", unfused), ("qkv fp32, KV cache, nn.Linear", model)]
    if args.compile:
        from qkv.generation.compiled import CompiledDecodeStep, compile_decode_step

        t = time.perf_counter()
        compiled = compile_decode_step(fast)
        print(f"compiling the decode step: {time.perf_counter() - t:.1f} s "
              f"({'compiled' if isinstance(compiled, CompiledDecodeStep) else 'failed: eager'})", flush=True)
        variants.append(("qkv fp32, compiled decode step", compiled))
    variants.append(("qkv int8 (torch.ao dynamic)", quantize_int8(model)))
    if args.torchao:
        variants.append(("torchao int8 weight-only", torchao_int8(model)))
    units = cpu_bf16_units()
    if units:
        variants.append(("qkv bf16 weights", for_decoding(model, dtype=torch.bfloat16)))

    theirs = hf_generate().tolist()
    same = {name: qkv_cached(m) == theirs for name, m in variants if m is not None}

    bw = measure_bandwidth()
    floor_s = weight_bytes / bw
    rows = []
    runs = [(name, hf_generate if m is None else (lambda m=m: qkv_cached(m))) for name, m in variants]
    for name, fn in runs + ([] if args.skip_uncached else [("qkv fp32, no cache", qkv_uncached)]):
        times = time_decode(fn, args.repeats)
        med = statistics.median(times)
        rows.append((name, N / med, med / N * 1000, min(times), max(times)))

    print(f"GPT-2 124M shapes ({n_params:,} params), batch 1, greedy, {args.prompt_tokens}-token prompt, "
          f"{N} new tokens, {args.threads} threads, {args.repeats} repeats (median)")
    print("greedy tokens identical to transformers': " + ", ".join(f"{k} {v}" for k, v in same.items()))
    if not units:
        print("bf16 weights: not timed (this CPU has no bf16 units: AMX-BF16 or AVX512-BF16)")
    print(f"memory read bandwidth: {bw / 1e9:.1f} GB/s; fp32 weights streamed per token: {weight_bytes / 1e6:.0f} MB "
          f"-> floor {floor_s * 1000:.1f} ms/token ({1 / floor_s:.1f} tokens/s)")
    hf_tps = rows[1][1]
    print(f"{'':34} {'tokens/s':>9} {'ms/token':>9} {'vs transformers':>16} {'vs floor':>9} {'vs own floor':>13}")
    for name, tps, ms, _, _ in rows:
        # a format's own floor: its weight bytes streamed once (int8 a quarter of fp32's, bf16 half)
        own = floor_s * (0.25 if "int8" in name else 0.5 if "bf16" in name else 1.0)
        print(f"{name:34} {tps:9.1f} {ms:9.1f} {tps / hf_tps:15.2f}x {ms / (floor_s * 1000):8.2f}x "
              f"{ms / (own * 1000):12.2f}x")

    if args.trained:
        from qkv.data.text import read_tokens
        from qkv.evaluation.perplexity import full_pass_loss
        from qkv.models.io import load_model

        run = Path(args.trained)
        m, cfg = load_model(run)
        val = read_tokens(run / "data" / "val.bin", cfg["data_meta"]["vocab_size"])
        formats = [("int8", quantize_int8)]
        if units or args.val_tokens:
            formats.append(("bf16" + ("" if units else " (emulated here)"), lambda m: for_decoding(m, torch.bfloat16)))
        else:
            print("bf16 perplexity: skipped (emulated on this CPU, ~1 ms/token; --val-tokens N measures N tokens)")
        if args.torchao:
            formats.append(("torchao int8", torchao_int8))
        tokens = f"first {args.val_tokens:,}" if args.val_tokens else "all"
        with torch.no_grad():
            fp32 = math.exp(full_pass_loss(m, val, m.config.max_seq_len, args.val_tokens))
            line = f"trained run {run} ({tokens} val tokens): val perplexity fp32 {fp32:.4f}"
            for name, make in formats:
                ppl = math.exp(full_pass_loss(make(m), val, m.config.max_seq_len, args.val_tokens))
                line += f", {name} {ppl:.4f} ({(ppl / fp32 - 1) * 100:+.2f}%)"
        print(line)


if __name__ == "__main__":
    main()
