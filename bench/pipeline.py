"""The chat pipeline's targets (issue 28): tokenizer -> base -> SFT -> RL -> report, and what pretraining bought.

    python bench/pipeline.py OUT_DIR [--config configs/chat-pipeline.toml] [--threads 1] [--jobs 2]

Side by side (``--jobs 2``, one thread each on a 2-core machine; say so when quoting):

1. ``qkv pipeline --config ...`` into OUT_DIR/pipeline: its report (report.md) holds the per-stage table.
2. The comparisons, one after the other on the other core:
   - **scratch-chat**: today's from-scratch chat recipe (character tokenizer, AdamW at 1e-3, the chat-qa-skills
     preset's settings) on the same skills data, with the pipeline's model shape, for the minutes of base + SFT
     together; scored on the held-out phrasings and values like the pipeline's stages;
   - **sft-only LM**: a language model of the same shape, from scratch on the SFT conversations' text only (the
     pipeline's tokenizer), for the SFT minutes; its bits per byte on the pretraining text's held-out documents;
   - **bigram**: the add-0.1 bigram model of the base stage's training tokens, on the same held-out documents.

Targets (2 cores, the pipeline <= 60 minutes): held-out phrasings >= 80% exact match (mean over skills); RL adds >= 5
points on held-out arithmetic phrasings, significant by a paired bootstrap; the base model's bits per byte against
the bigram and the SFT-only model; base + SFT against scratch-chat on held-out phrasings.
Results: OUT_DIR/results.json and the tables on stdout. A finished run is not trained again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomllib
from machine import describe

ROOT = Path(__file__).resolve().parents[1]


def qkv(args: list[str], log: Path, threads: int) -> float:
    """Run ``python -m qkv ARGS`` with `threads` threads, output to `log`; its wall time. Exits the bench on failure."""
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "qkv", *args], stdout=f, stderr=subprocess.STDOUT,
                            env=dict(os.environ, OMP_NUM_THREADS=str(threads))).returncode
    if rc:
        sys.exit(f"qkv {args[0]} failed, see {log}")
    return time.perf_counter() - t


def pipeline(out: Path, config: Path, threads: int) -> dict:
    over = [f"--{s}.train.threads={threads}" for s in ("base", "sft", "rl")] + [f"--{s}.train.progress=false"
                                                                                 for s in ("base", "sft", "rl")]
    wall = qkv(["pipeline", "--config", str(config), "--out", str(out / "pipeline"), *over], out / "pipeline.log",
               threads)
    return {"wall_s": wall, "state": json.loads((out / "pipeline" / "pipeline.json").read_text())}


def scratch_chat(out: Path, cfg: dict, threads: int) -> dict:
    """Today's from-scratch chat recipe, the pipeline's model shape and skills data, base + SFT minutes."""
    run = out / "scratch-chat"
    minutes = cfg["base"]["train"]["max_minutes"] + cfg["sft"]["train"]["max_minutes"]
    m = cfg["base"]["model"]
    if not (run / "model.safetensors").exists():
        flags = ["train", "--preset", "chat-qa-skills", "--out", str(run), "--no-sample", "--train.progress=false",
                 f"--train.threads={threads}", f"--train.max_minutes={minutes}", "--data.source=skills",
                 f"--data.train_size={cfg['sft']['data']['train_size']}", "--data.too_long=drop",
                 f"--data.test_size={cfg['sft']['data']['test_size']}", "--data.em_conversations=60",
                 f"--data.values_size={cfg['sft']['data']['values_size']}", "--train.eval_interval=400",
                 "--model.max_seq_len=512", f"--model.d_model={m['d_model']}", f"--model.n_layers={m['n_layers']}",
                 f"--model.n_heads={m['n_heads']}", "--train.precision=auto"]
        qkv(flags, out / "scratch-chat.log", threads)
    from qkv.tasks import load_run

    t = time.perf_counter()
    r = load_run(run).evaluate(max_pairs=cfg["report"]["max_questions"])
    return {"minutes": minutes, "eval_s": time.perf_counter() - t, **r}


def sft_only_lm(out: Path, cfg: dict, threads: int) -> dict:
    """A language model of the base's shape, from scratch on the SFT conversations' text only."""
    from qkv.data.chat import ChatDataConfig, load_chat_splits

    tok_file = out / "pipeline" / "tokenizer" / "tokenizer.json"
    while not tok_file.exists():
        time.sleep(10)  # the pipeline's first stage writes it within a minute or two
    text_file = out / "sft-text.txt"
    d = cfg["sft"]["data"]
    splits = load_chat_splits(ChatDataConfig(source="skills", train_size=d["train_size"], val_size=d["val_size"],
                                             test_size=d["test_size"], values_size=d["values_size"]))
    text_file.write_text("\n\n".join(f"{c.messages[0]['content']}\n{c.messages[1]['content']}"
                                     for c in splits["train"]), encoding="utf-8")
    run = out / "sft-only-lm"
    m, minutes = cfg["base"]["model"], cfg["sft"]["train"]["max_minutes"]
    if not (run / "model.safetensors").exists():
        flags = ["train", "--preset", "shakespeare-char-cpu", "--out", str(run), "--no-sample",
                 f"--data.source={text_file}", "--data.tokenizer=bpe", f"--data.tokenizer_file={tok_file}",
                 "--train.progress=false", f"--train.threads={threads}", f"--train.max_minutes={minutes}",
                 "--train.max_steps=100000", "--train.schedule_by=time", "--train.batch_size=32",
                 "--train.optimizer=muon", "--train.lr=3e-3", "--train.min_lr=3e-5", "--train.warmup_steps=50",
                 "--train.eval_interval=400", "--train.precision=auto", "--model.dropout=0.0",
                 *(f"--model.{k}={v}" for k, v in m.items())]
        qkv(flags, out / "sft-only-lm.log", threads)
    return {"minutes": minutes, **english_bpb(run, cfg)}


def english_bpb(run: Path, cfg: dict) -> dict:
    """Bits per byte of an LM run on the pretraining text's held-out documents (the base stage's validation)."""
    import numpy as np

    from qkv.data.english import english_split
    from qkv.evaluation.perplexity import full_pass_loss
    from qkv.tasks import load_run

    lm = load_run(run)
    _, val = english_split(cfg["tokenizer"].get("val_fraction", 0.05))
    ids = np.asarray(lm.tokenizer.encode(val), dtype=np.int64)
    limit = cfg["base"]["data"].get("val_max_tokens")
    loss = full_pass_loss(lm.model, ids, lm.model.config.max_seq_len, limit)
    used = ids[:limit] if limit else ids
    bytes_per_token = len(lm.tokenizer.decode(used.tolist()).encode("utf-8")) / len(used)
    return {"val_loss": loss, "bytes_per_token": bytes_per_token, "val_bpb": loss / math.log(2) / bytes_per_token}


def bigram(out: Path) -> dict:
    """The add-0.1 bigram baseline the base stage wrote into its data meta (`qkv.tasks.lm`), in bits per byte."""
    meta = json.loads((out / "pipeline" / "base" / "data" / "meta.json").read_text())
    loss = meta["bigram_val_loss"]
    return {"val_loss": loss, "alpha": meta["bigram_alpha"], "val_bpb": loss / math.log(2) / meta["bytes_per_token"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "chat-pipeline.toml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # this process runs the comparisons' evaluations; the runs are subprocesses
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = tomllib.loads(args.config.read_text())
    print(describe(args.threads), flush=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        main_job = pool.submit(pipeline, args.out, args.config, args.threads)

        def comparisons():
            return {"scratch_chat": scratch_chat(args.out, cfg, args.threads),
                    "sft_only_lm": sft_only_lm(args.out, cfg, args.threads)}
        side = pool.submit(comparisons)
        results = {"pipeline": main_job.result(), **side.result()}
    results["bigram"] = bigram(args.out)
    results["machine"] = describe(args.threads)
    results["wall_s"] = time.perf_counter() - t0
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print((args.out / "pipeline" / "report.md").read_text())
    print(f"bigram baseline: {results['bigram']['val_bpb']:.3f} bits/byte; SFT-text-only LM "
          f"({results['sft_only_lm']['minutes']} min): {results['sft_only_lm']['val_bpb']:.3f} bits/byte")
    sc = results["scratch_chat"]
    if "skills" in sc:
        for split in ("phrasings", "values"):
            s = sc["skills"].get(split)
            if s:
                print(f"scratch-chat ({sc['minutes']} min) held-out {split}: mean {s['mean']:.1%}, centred "
                      f"{s['core']:.3f}; " + ", ".join(f"{k} {v:.1%}" for k, v in s["per_skill"].items()))
    print(f"bench wall time {results['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
