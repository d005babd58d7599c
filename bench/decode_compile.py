"""Does compiling the one-token decode step pay? Eager vs `torch.compile` decoding, and the compile time.

    python bench/decode_compile.py [--sizes char-fast,char,gpt2] [--new-tokens 200] [--repeats 5] [--threads 2]

For each size: a random-weight GPT in the decode layout (`qkv.generation.inference.for_decoding`), batch 1,
greedy from a 16-token prompt; the same copy with its one-token step compiled
(`qkv.generation.compiled.compile_decode_step`, `dynamic=True`). Compiling runs cold — a fresh inductor
cache folder per run — and its time is what `qkv generate --compile` waits before the first token. Eager
and compiled runs alternate, and the median of `--repeats` each is reported. Sizes: char-fast
(the shakespeare-char-fast preset: 4 layers, d 128, context 128), char (the shakespeare-char preset:
6 layers, d 384, context 256), gpt2 (124M, context 1024; vocabulary 50,257).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="qkv-inductor-"))  # before torch: cold

import torch  # noqa: E402
from machine import describe  # noqa: E402

SIZES = {
    "char-fast": dict(vocab_size=65, max_seq_len=128, d_model=128, n_layers=4, n_heads=4, bias=False),
    "char": dict(vocab_size=65, max_seq_len=256, d_model=384, n_layers=6, n_heads=6, bias=False),
    "gpt2": None,  # the preset
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="char-fast,char", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(args.threads), flush=True)

    from qkv.generation.compiled import CompiledDecodeStep, compile_decode_step
    from qkv.generation.inference import for_decoding
    from qkv.generation.lm import generate_ids
    from qkv.generation.sampling import TokenSampling
    from qkv.models.gpt import GPT, GPTConfig
    from qkv.models.presets import get_preset

    greedy = TokenSampling(temperature=0.0)
    N = args.new_tokens
    print(f"batch 1, greedy, 16-token prompt, {N} new tokens, {args.threads} threads, median of {args.repeats}; "
          f"inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}")
    print(f"{'size':10} {'params':>11} {'compile s':>10} {'eager tok/s':>12} {'compiled tok/s':>15} {'speed-up':>9} "
          f"{'same tokens':>12}")
    for name in args.sizes.split(","):
        if name not in SIZES:
            raise SystemExit(f"unknown size {name!r}; choose from {', '.join(SIZES)}")
        torch.manual_seed(0)
        cfg = get_preset("gpt2") if SIZES[name] is None else GPTConfig(**SIZES[name])
        model = GPT(cfg).eval()
        fast = for_decoding(model)
        t = time.perf_counter()
        compiled = compile_decode_step(fast)
        compile_s = time.perf_counter() - t
        if not isinstance(compiled, CompiledDecodeStep):
            print(f"{name:10} compiling failed: eager only")
            continue
        prompt = torch.randint(0, cfg.vocab_size, (16,)).tolist()

        def tps(m, prompt=prompt):
            t = time.perf_counter()
            list(generate_ids(m, prompt, N, greedy))
            return N / (time.perf_counter() - t)

        same = list(generate_ids(fast, prompt, N, greedy)) == list(generate_ids(compiled, prompt, N, greedy))
        eager, comp = [], []
        for _ in range(args.repeats):
            eager.append(tps(fast))
            comp.append(tps(compiled))
        e, c = statistics.median(eager), statistics.median(comp)
        print(f"{name:10} {model.num_params():11,} {compile_s:10.1f} {e:12.1f} {c:15.1f} {c / e:8.2f}x {str(same):>12}",
              flush=True)


if __name__ == "__main__":
    main()
