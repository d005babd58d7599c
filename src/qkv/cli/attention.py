"""``qkv attention RUN_DIR (--src SENTENCE | --text TEXT) [--layer L] [--head H] --out map.png``.

Translation runs (--src): translate the sentence, then draw decoder layer L's cross-attention, source
tokens × produced target tokens (the alignment). GPT runs (--text): draw layer L's causal
self-attention over the text. Weights are averaged over heads unless --head is given; --layer defaults to
the last layer (-1).
"""

from __future__ import annotations

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="plot attention maps (cross-attention alignment or self-attention)",
                       description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--src", help="source sentence to translate (seq2seq runs)")
    p.add_argument("--text", help="text to read (GPT runs)")
    p.add_argument("--layer", type=int, default=-1, help="layer index (default: -1, the last)")
    p.add_argument("--head", type=int, default=None, help="one head (default: mean over heads)")
    p.add_argument("--beam", type=int, default=None, help="beam size for the translation (default: the run's)")
    p.add_argument("--out", required=True, help="PNG file to write")


def run(args) -> int:
    from qkv.evaluation.attention import gpt_self_attention, plot_attention, seq2seq_alignment
    from qkv.models.io import load_model

    model, cfg = load_model(args.run_dir)
    if cfg["model_type"] == "seq2seq":
        if args.src is None:
            raise QKVError("a translation run needs --src \"a source sentence\"")
        from qkv.cli.translate import decode_config
        from qkv.recipes.translate import load_tokenizers

        src_tok, tgt_tok = load_tokenizers(args.run_dir)
        amap = seq2seq_alignment(model, src_tok, tgt_tok, args.src, decode_config(args, cfg), args.layer, args.head)
        path = plot_attention(amap, args.out, xlabel="source tokens", ylabel="produced target tokens")
        print(f"translation: {amap.text}")
    elif cfg["model_type"] == "gpt":
        if args.text is None:
            raise QKVError("a GPT run needs --text \"some text\"")
        from qkv.tokenizers import load_tokenizer

        tok = load_tokenizer(f"{args.run_dir}/tokenizer.json")
        amap = gpt_self_attention(model, tok, args.text, args.layer, args.head)
        path = plot_attention(amap, args.out, xlabel="attended token (key)", ylabel="reading token (query)")
    else:
        raise QKVError(f"{args.run_dir} is a {cfg['model_type']} run; attention maps need a gpt or seq2seq run")
    print(f"{amap.title}: {len(amap.rows)} × {len(amap.cols)} -> {path}")
    return 0
