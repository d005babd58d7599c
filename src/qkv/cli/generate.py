"""``qkv generate RUN_DIR --prompt TEXT``: stream a continuation from a trained language model."""

from __future__ import annotations

import sys

from qkv.errors import QKVError


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
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 weights (CPU; faster decoding)")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from qkv.generation.lm import stream_text
    from qkv.generation.sampling import SamplingConfig
    from qkv.models.io import load_model
    from qkv.tokenizers import load_tokenizer

    model, cfg = load_model(args.run_dir, device=args.device)
    if cfg["model_type"] != "gpt":
        raise QKVError(f"{args.run_dir} is a {cfg['model_type']} run; `qkv generate` needs a GPT run")
    tok = load_tokenizer(f"{args.run_dir}/tokenizer.json")
    sample = cfg.get("sample", {})
    pick = lambda v, key, default: v if v is not None else sample.get(key, default)  # noqa: E731
    if args.max_new_tokens is not None and args.max_new_tokens < 0:
        raise QKVError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    try:
        sampling = SamplingConfig(pick(args.temperature, "temperature", 0.8), pick(args.top_k, "top_k", None),
                                  pick(args.top_p, "top_p", None))
    except ValueError as e:
        raise QKVError(str(e)) from None
    from qkv.generation.inference import prepare_for_decoding

    model = prepare_for_decoding(model, args.quantize)
    prompt = pick(args.prompt, "prompt", "\n")
    if prompt == "":
        raise QKVError("the prompt is empty; give at least one character")
    ids = tok.encode(prompt)
    if len(ids) > model.config.max_seq_len:
        print(f"note: prompt has {len(ids)} tokens; only the last {model.config.max_seq_len} fit the context",
              file=sys.stderr)
    sys.stdout.write(prompt)
    for piece in stream_text(model, tok, prompt, pick(args.max_new_tokens, "max_new_tokens", 200), sampling,
                             seed=pick(args.seed, "seed", None), stop=args.stop, use_cache=not args.no_cache):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
