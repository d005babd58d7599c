"""Batch-1 greedy decoding speed at GPT-2 124M shapes: qkv (KV cache), qkv (no cache), qkv int8, transformers.

    python bench/generate.py [--new-tokens 128] [--prompt-tokens 32] [--repeats 3] [--trained RUN_DIR]

All models share the same random weights: qkv's GPT is exported with `qkv convert --to-hf` logic and
loaded by `transformers.GPT2LMHeadModel`, so the comparison is like for like. Decoding one token must
stream every weight once, so the floor is weight bytes ÷ memory bandwidth; the bandwidth is measured
here by summing a 1 GiB array. With --trained, the int8 mode's validation perplexity is compared with
fp32 on that run's validation split.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trained", help="a trained qkv GPT run dir: report int8 vs fp32 validation perplexity")
    ap.add_argument("--skip-uncached", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(args.threads), flush=True)

    from transformers import GPT2LMHeadModel

    from qkv.generation.inference import for_decoding
    from qkv.generation.lm import generate_ids
    from qkv.generation.quantize import quantize_int8
    from qkv.generation.sampling import TokenSampling
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

    fast = for_decoding(model)
    ours, theirs, ours_fast = qkv_cached(), hf_generate().tolist(), qkv_cached(fast)
    same = ours == theirs == ours_fast
    qmodel = quantize_int8(model)

    bw = measure_bandwidth()
    floor_s = weight_bytes / bw
    rows = []
    for name, fn in [("qkv fp32, KV cache", lambda: qkv_cached(fast)), ("transformers generate (fp32)", hf_generate),
                     ("qkv fp32, KV cache, nn.Linear layout", qkv_cached),
                     ("qkv int8 weights, KV cache", lambda: qkv_cached(qmodel))] + (
                     [] if args.skip_uncached else [("qkv fp32, no cache", qkv_uncached)]):
        times = time_decode(fn, args.repeats)
        med = statistics.median(times)
        rows.append((name, N / med, med / N * 1000, min(times), max(times)))

    print(f"GPT-2 124M shapes ({n_params:,} params), batch 1, greedy, {args.prompt_tokens}-token prompt, "
          f"{N} new tokens, {args.threads} threads, {args.repeats} repeats (median)")
    print(f"greedy tokens identical (qkv, qkv decode layout, transformers): {same}")
    print(f"memory read bandwidth: {bw / 1e9:.1f} GB/s; weights streamed per token: {weight_bytes / 1e6:.0f} MB "
          f"-> floor {floor_s * 1000:.1f} ms/token ({1 / floor_s:.1f} tokens/s)")
    hf_tps = rows[1][1]
    print(f"{'':32} {'tokens/s':>9} {'ms/token':>9} {'vs transformers':>16} {'vs floor':>9}")
    for name, tps, ms, _, _ in rows:
        print(f"{name:32} {tps:9.1f} {ms:9.1f} {tps / hf_tps:15.2f}x {ms / (floor_s * 1000):8.2f}x")

    if args.trained:
        from qkv.data.text import read_tokens
        from qkv.evaluation.perplexity import full_pass_loss
        from qkv.models.io import load_model

        run = Path(args.trained)
        m, cfg = load_model(run)
        val = read_tokens(run / "data" / "val.bin", cfg["data_meta"]["vocab_size"])
        fp32 = full_pass_loss(m, val, m.config.max_seq_len)
        int8 = full_pass_loss(quantize_int8(m), val, m.config.max_seq_len)
        print(f"trained run {run}: val perplexity fp32 {math.exp(fp32):.4f}, int8 {math.exp(int8):.4f} "
              f"({(math.exp(int8) / math.exp(fp32) - 1) * 100:+.2f}%)")


if __name__ == "__main__":
    main()
