"""``qkv generate RUN_DIR --prompt TEXT``: stream a continuation from a trained language model."""

from __future__ import annotations

import sys

from qkv.generation.inference import QUANTIZE


def add_parser(sub, name):
    p = sub.add_parser(name, help="generate text from a trained GPT run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--prompt", default=None, help="text to continue (default: the run's sample prompt)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="re-run the whole prefix every token (slow; for checks)")
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="int8 weights (CPU; faster decoding), or bf16 weights (CPUs with bf16 units)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the one-token decode step (seconds to a minute up front; eager if it fails)")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.CONTINUATION, "qkv generate")
    sampling = run_.sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                             max_new_tokens=args.max_new_tokens, seed=args.seed, prompt=args.prompt)
    stream = run_.token_stream(sampling.prompt, sampling, stop=args.stop, use_cache=not args.no_cache,
                               quantize=args.quantize, compile=args.compile)
    if stream.prompt_cut:
        print(f"note: prompt has {len(stream.prompt_ids)} tokens; only the last {run_.model.config.max_seq_len} fit "
              "the context", file=sys.stderr)
    sys.stdout.write(sampling.prompt)
    for piece in stream.texts():
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
