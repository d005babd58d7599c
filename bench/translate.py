"""Multi30k de→en at a fixed wall-clock budget: qkv's preset vs a `transformers` MarianMTModel of the same size.

    python bench/translate.py [--minutes 15] [--threads 2] [--qkv-run RUN_DIR | --out RUN_DIR] [--skip-marian]

1. qkv: `qkv train --config configs/multi30k-de-en.toml --train.max_minutes M`, then `qkv eval` on
   test_2016_flickr with greedy and beam-4 decoding (or score an existing --qkv-run).
2. Reference: `MarianMTModel` with the same shape (d_model 256, 3+3 layers, 4 heads, ffn 512, tied
   embeddings initialised like the qkv run's (`model.embed_std`), the qkv run's joint 8k BPE and batches),
   trained by a plain PyTorch loop with the same optimizer, warmup, time-based cosine decay, label
   smoothing and precision (bf16 autocast when the preset uses it) for the same M minutes; decoded with
   `generate` (greedy and beam 4, length penalty 0.6) and scored with the same sacreBLEU / chrF++ code.
Prints BLEU and chrF++ (greedy and beam 4), train tokens/s for both and the ratios. QKV_DATA_DIR must
point at the data (multi30k).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe


def run_qkv(run_dir: Path, minutes: float, threads: int) -> None:
    cmd = [sys.executable, "-m", "qkv", "train", "--config", "configs/multi30k-de-en.toml", "--out", str(run_dir),
           "--train.max_minutes", str(minutes), "--train.progress", "false", "--train.threads", str(threads)]
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))


def eval_qkv(run_dir: Path, beam: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "qkv", "eval", str(run_dir), "--data", "multi30k", "--split",
                          "test_2016_flickr", "--beam", str(beam), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def qkv_tokens_per_s(run_dir: Path) -> float:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in recs if "tokens_per_s" in r)


def run_marian(run_dir: Path, minutes: float, threads: int) -> dict:
    """Train and score a MarianMTModel with the qkv run's tokenizer, data pipeline and optimizer settings."""
    from transformers import MarianConfig, MarianMTModel

    from qkv.data.translation import (
        TranslationBatches,
        encode_lines,
        load_split,
        make_examples,
        source_ids,
        special_ids,
    )
    from qkv.evaluation.translation import chrf_pp, sacre_bleu
    from qkv.tasks.runner import saved_run_config
    from qkv.tasks.translate import load_tokenizers
    from qkv.training.optim import lr_at
    from qkv.training.precision import resolve_precision

    torch.set_num_threads(threads)
    cfg = saved_run_config(run_dir)
    tok, _ = load_tokenizers(run_dir)
    pad, bos, eos = special_ids(tok)
    m = cfg.model
    mcfg = MarianConfig(vocab_size=tok.vocab_size, d_model=m.d_model, encoder_layers=m.n_encoder_layers,
                        decoder_layers=m.n_decoder_layers, encoder_attention_heads=m.n_heads,
                        decoder_attention_heads=m.n_heads, encoder_ffn_dim=m.d_ff, decoder_ffn_dim=m.d_ff,
                        max_position_embeddings=m.max_seq_len, dropout=m.dropout, activation_function="relu",
                        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=bos, bos_token_id=bos,
                        scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    torch.manual_seed(cfg.train.seed)
    model = MarianMTModel(mcfg)
    with torch.no_grad():  # the same token-embedding init as the qkv run (the preset's embed_std)
        model.get_input_embeddings().weight.normal_(0.0, m.embed_std)
    n_params = sum(p.numel() for p in model.parameters())
    src, tgt, _ = load_split(cfg.data, "train")
    ex = make_examples(encode_lines(tok, src), encode_lines(tok, tgt), m.max_seq_len, eos)
    batches = TranslationBatches(ex, pad, bos, eos, batch_tokens=cfg.data.batch_tokens, seed=cfg.train.seed)
    t = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    amp = resolve_precision(t.precision, torch.device("cpu")).dtype  # the precision qkv's Trainer picks here
    budget, start, step, tokens = minutes * 60, time.perf_counter(), 0, 0
    t_warm_end = None
    recent_losses: list[float] = []  # label-smoothed training loss of the last 100 updates
    model.train()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            break
        frac = None
        if step >= t.warmup_steps:
            t_warm_end = elapsed if t_warm_end is None else t_warm_end
            frac = (elapsed - t_warm_end) / max(1e-9, budget - t_warm_end)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, t, frac)
        b = batches.next_batch()
        dec_in = b["tgt_in"]
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):  # qkv's precision
            logits = model(input_ids=b["src"], attention_mask=b["src_mask"].long(), decoder_input_ids=dec_in,
                           decoder_attention_mask=(dec_in != pad).long()).logits
        loss = F.cross_entropy(logits.flatten(0, 1), b["tgt_out"].flatten(), ignore_index=-100,
                               label_smoothing=t.label_smoothing)
        loss.backward()
        recent_losses = (recent_losses + [loss.item()])[-100:]
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += int(b["src_mask"].sum()) + int((b["tgt_out"] != -100).sum())
    train_s = time.perf_counter() - start
    model.eval()
    test_src, test_ref, _ = load_split(cfg.data, "test_2016_flickr")
    srcs, _ = source_ids(tok, test_src, m.max_seq_len)
    out = {"params": n_params, "steps": step, "tokens_per_s": tokens / train_s,
           "final_train_loss": statistics.fmean(recent_losses) if recent_losses else math.nan}
    for beam in (1, 4):
        hyps = []
        with torch.no_grad():
            for i in range(0, len(srcs), 64):
                chunk = srcs[i : i + 64]
                S = max(len(s) for s in chunk)
                ids = torch.full((len(chunk), S), pad)
                mask = torch.zeros((len(chunk), S), dtype=torch.long)
                for r, s in enumerate(chunk):
                    ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
                gen = model.generate(input_ids=ids, attention_mask=mask, num_beams=beam, do_sample=False,
                                     max_new_tokens=int(1.5 * S + 10),
                                     **({"length_penalty": 0.6, "early_stopping": True} if beam > 1 else {}))
                for row in gen.tolist():
                    row = [x for x in row[1:] if x not in (pad, bos)]
                    hyps.append(tok.decode(row[: row.index(eos)] if eos in row else row))
        out[f"bleu_beam{beam}"] = sacre_bleu(hyps, test_ref).score
        out[f"chrf_beam{beam}"] = chrf_pp(hyps, test_ref).score
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qkv-run", help="score this existing qkv run instead of training one")
    ap.add_argument("--out", help="train the qkv run into this directory and keep it (default: a temp dir)")
    ap.add_argument("--skip-marian", action="store_true")
    args = ap.parse_args()
    print(describe(args.threads), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.qkv_run or args.out or Path(tmp) / "qkv")
        if not args.qkv_run:
            run_qkv(run_dir, args.minutes, args.threads)
        q = {beam: eval_qkv(run_dir, beam) for beam in (1, 4)}
        q_tps = qkv_tokens_per_s(run_dir)
        print(f"qkv ({run_dir}): train {q_tps:,.0f} tokens/s")
        for beam, r in q.items():
            print(f"  beam {beam}: {json.dumps(r)}")
        if args.skip_marian:
            return
        mar = run_marian(run_dir, args.minutes, args.threads)
    print(f"MarianMTModel ({mar['params']:,} params, {mar['steps']} updates): "
          f"train {mar['tokens_per_s']:,.0f} tokens/s, smoothed training loss of the last 100 updates "
          f"{mar['final_train_loss']:.3f}")
    print(f"{'':22} {'sacreBLEU':>9} {'chrF++':>7}")
    for beam in (1, 4):
        qb = q[beam]
        print(f"qkv beam {beam:<12} {_num(qb, 'bleu'):9.2f} {_num(qb, 'chrf'):7.2f}")
        print(f"Marian beam {beam:<9} {mar[f'bleu_beam{beam}']:9.2f} {mar[f'chrf_beam{beam}']:7.2f}")
    print(f"tokens/s ratio qkv / Marian: {q_tps / mar['tokens_per_s']:.2f}x")


def _num(d: dict, key: str) -> float:
    """The first number under a key containing `key` (the eval JSON nests scores with their signatures)."""
    for k, v in d.items():
        if key in k.lower():
            return v["score"] if isinstance(v, dict) else float(v)
    return math.nan


if __name__ == "__main__":
    main()
