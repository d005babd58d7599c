"""Multi30k de→en at a fixed wall-clock budget: qkv's preset vs a peer of the same size (Marian or JoeyNMT).

    python bench/translate.py [--minutes 15] [--threads 2] [--qkv-run RUN_DIR | --out RUN_DIR | --skip-qkv]
        [--peer {marian,joeynmt,none}] [--peer-python PATH] [--joey-valid-freq 250] [--joey-ckpt latest] [--keep DIR]

The two full benches (QKV_DATA_DIR must point at the data, multi30k):

    QKV_DATA_DIR=../shared/data python bench/translate.py --minutes 15                  # qkv vs Marian
    QKV_DATA_DIR=../shared/data python bench/translate.py --minutes 15 --peer joeynmt   # qkv vs JoeyNMT

1. qkv: `qkv train --preset multi30k-de-en --train.max_minutes M`, then `qkv eval` on
   test_2016_flickr with greedy and beam-4 decoding (or score an existing --qkv-run; --skip-qkv: peer only).
2. --peer marian (the default): `MarianMTModel` with the same shape (d_model 256, 3+3 layers, 4 heads, ffn
   512, tied embeddings initialised like the qkv run's (`model.embed_std`), the qkv run's joint 8k BPE and
   batches), trained by a plain PyTorch loop with the same optimizer, warmup, time-based cosine decay, label
   smoothing and precision (bf16 autocast when the preset uses it) for the same M minutes; decoded with
   `generate` (greedy and beam 4, length penalty 0.6) and scored with the same sacreBLEU / chrF++ code.
3. --peer joeynmt: JoeyNMT 2.3.0, an educational NMT toolkit, run by its own CLI in a virtual environment
   of its own (--peer-python, default $QKV_JOEYNMT_PYTHON or /work/venvs/joeynmt/bin/python), made with

       python3.11 -m venv /work/venvs/joeynmt
       /work/venvs/joeynmt/bin/pip install torch==2.13.0
       /work/venvs/joeynmt/bin/pip install joeynmt==2.3.0 sentencepiece==0.1.99 importlib_metadata torch==2.13.0

   (JoeyNMT 2.3.0 needs sentencepiece < 0.2). In a scratch folder (--keep DIR to keep it) the bench writes
   the same Multi30k lines qkv reads, a joint 8k sentencepiece BPE trained with the arguments of JoeyNMT's
   scripts/build_vocab.py, and a YAML config: the qkv preset's architecture (3+3 pre-norm layers, d 256, ff
   512, 4 heads, tied embeddings and softmax: 6,002,688 parameters, as qkv), its batch size (1200 as token
   batches: both count sentences × longest side), dropout 0.1 as JoeyNMT's Transformer examples, and the
   schedule of its small-data Transformer example (configs/iwslt14_deen_bpe.yaml: AdamW (0.9, 0.999), lr
   3e-4, plateau ×0.7 after 5 validations without gain, label smoothing 0.1, token-normalised loss; torch
   2.13's ReduceLROnPlateau lost the `verbose` argument JoeyNMT passes, so `train` runs with a one-line shim
   for it). It validates greedily every --joey-valid-freq updates on the first `data.bleu_val_pairs` (300)
   validation sentences, so validations stay cheap. JoeyNMT has no time limit: `joeynmt train` is
   interrupted (SIGINT) M minutes after its log's "EPOCH 1", and JoeyNMT answers that by saving the current
   weights as latest.ckpt; `joeynmt test` then decodes test_2016_flickr with its own beam search (beam 4,
   its examples' beam_alpha 1) from that checkpoint (--joey-ckpt best: its best-validated one instead), and
   the detokenized output is scored with qkv's sacreBLEU / chrF++ code. Updates, target tokens/s (its log's
   "Tokens per Sec", validation time excluded) and its parameter count are read from its log.
Prints BLEU and chrF++, train tokens/s for both and the ratios. qkv counts source + target tokens, JoeyNMT
target tokens; each is converted to the other's unit with its own tokenization of the training data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
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
    cmd = [sys.executable, "-m", "qkv", "train", "--preset", "multi30k-de-en", "--out", str(run_dir),
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


JOEY_PYTHON = os.environ.get("QKV_JOEYNMT_PYTHON", "/work/venvs/joeynmt/bin/python")
JOEY_VENV = ("python3.11 -m venv /work/venvs/joeynmt && /work/venvs/joeynmt/bin/pip install torch==2.13.0 && "
             "/work/venvs/joeynmt/bin/pip install joeynmt==2.3.0 sentencepiece==0.1.99 importlib_metadata "
             "torch==2.13.0")
SPECIALS = {"unk_token": "<unk>", "unk_id": 0, "pad_token": "<pad>", "pad_id": 1, "bos_token": "<s>", "bos_id": 2,
            "eos_token": "</s>", "eos_id": 3}  # JoeyNMT's defaults (scripts/build_vocab.py SPECIAL_SYMBOLS)

# Run by the peer's Python: a joint sentencepiece BPE with the arguments of JoeyNMT 2.3.0's
# scripts/build_vocab.py (train_spm), then the token counts of the training data under it (+1 for EOS).
JOEY_PREP = r"""
import json, sys
import sentencepiece as spm
data, vocab, src, tgt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
spm.SentencePieceTrainer.Train(" ".join([
    f"--input={data}/train.{src},{data}/train.{tgt}", f"--model_prefix={data}/spm", "--model_type=bpe",
    f"--vocab_size={vocab}", "--character_coverage=1.0", f"--accept_language={src},{tgt}",
    "--unk_piece=<unk>", "--bos_piece=<s>", "--eos_piece=</s>", "--pad_piece=<pad>",
    "--unk_id=0", "--pad_id=1", "--bos_id=2", "--eos_id=3", "--vocabulary_output_piece_score=false",
    "--minloglevel=2"]))
sp = spm.SentencePieceProcessor(model_file=f"{data}/spm.model")
count = {}
for lang in (src, tgt):
    with open(f"{data}/train.{lang}", encoding="utf-8") as f:
        count[lang] = sum(len(ids) + 1 for ids in sp.encode(f.read().splitlines()))
print(json.dumps({"src_tokens": count[src], "tgt_tokens": count[tgt], "pieces": sp.get_piece_size()}))
"""

# `joeynmt train`, with one shim: torch 2.13's ReduceLROnPlateau has no `verbose` argument any more,
# which JoeyNMT 2.3.0 still passes for its "plateau" schedule.
JOEY_TRAIN = r"""
import sys
import joeynmt.builders as builders
class ReduceLROnPlateau(builders.ReduceLROnPlateau):
    def __init__(self, *args, verbose=False, **kwargs):
        super().__init__(*args, **kwargs)
builders.ReduceLROnPlateau = ReduceLROnPlateau
from joeynmt.__main__ import main
sys.argv = ["joeynmt", *sys.argv[1:]]
main()
"""


def check_peer_python(python: str) -> str:
    """The JoeyNMT version the peer interpreter imports; exits with one line saying how to make it if none."""
    try:
        out = subprocess.run([python, "-c", "import joeynmt, sentencepiece; print(joeynmt.__version__)"],
                             capture_output=True, text=True)
    except OSError:
        out = None
    if out is None or out.returncode != 0:
        sys.exit(f"--peer joeynmt: {python} cannot import joeynmt and sentencepiece; make its venv with: {JOEY_VENV} "
                 "(or pass --peer-python / set QKV_JOEYNMT_PYTHON)")
    return out.stdout.strip()


def joey_config(work: Path, preset: dict, valid_freq: int) -> dict:
    """JoeyNMT's config (see `to_yaml`) for the qkv preset's architecture and data."""
    from qkv.data.translation import parse_direction

    d, m = preset["data"], preset["model"]
    src, tgt = parse_direction(d["direction"])
    data = work / "data"

    def side(lang: str) -> dict:
        return {"lang": lang, "max_length": m["max_seq_len"], "min_length": 1, "lowercase": False,
                "normalize": False, "level": "bpe", "voc_limit": d["vocab_size"], "voc_min_freq": 1,
                "voc_file": str(data / "spm.vocab"), "tokenizer_type": "sentencepiece",
                "tokenizer_cfg": {"model_file": str(data / "spm.model"), "model_type": "bpe",
                                  "character_coverage": 1.0, "pretokenizer": "none"}}

    def stack(n_layers: int) -> dict:
        return {"type": "transformer", "num_layers": n_layers, "num_heads": m["n_heads"],
                "embeddings": {"embedding_dim": m["d_model"], "scale": True, "dropout": 0.0},
                "hidden_size": m["d_model"], "ff_size": m["d_ff"], "dropout": m["dropout"], "layer_norm": "pre",
                "activation": m["activation"]}

    return {
        "name": "multi30k_qkv_bench", "joeynmt_version": "2.3.0", "model_dir": str(work / "model"),
        "use_cuda": False, "fp16": False, "random_seed": 42,
        "data": {"train": str(data / "train"), "dev": str(data / "dev"), "test": str(data / "test"),
                 "dataset_type": "plain", "src": side(src), "trg": side(tgt), "special_symbols": SPECIALS},
        "testing": {"n_best": 1, "beam_size": 4, "beam_alpha": 1.0, "batch_size": 1024, "batch_type": "token",
                    "eval_metrics": ["bleu"], "sacrebleu_cfg": {"tokenize": "13a", "lowercase": False}},
        # configs/iwslt14_deen_bpe.yaml's schedule (its small-data Transformer); the qkv preset's batch size
        "training": {"optimizer": "adamw", "adam_betas": [0.9, 0.999], "learning_rate": 3e-4,
                     "learning_rate_min": 1e-8, "weight_decay": 0.0, "scheduling": "plateau", "patience": 5,
                     "decrease_factor": 0.7, "loss": "crossentropy", "label_smoothing": 0.1,
                     "normalization": "tokens", "batch_size": d["batch_tokens"], "batch_type": "token",
                     "early_stopping_metric": "bleu", "epochs": 100, "validation_freq": valid_freq,
                     "logging_freq": 10, "overwrite": True, "shuffle": True, "print_valid_sents": [0, 1, 2],
                     "keep_best_ckpts": 2},
        "model": {"initializer": "xavier_uniform", "init_gain": 1.0, "bias_initializer": "zeros",
                  "embed_initializer": "xavier_uniform", "embed_init_gain": 1.0, "tied_embeddings": True,
                  "tied_softmax": True, "encoder": stack(m["n_encoder_layers"]),
                  "decoder": stack(m["n_decoder_layers"])},
    }


def to_yaml(cfg: dict, indent: int = 0) -> str:
    """A nested dict of str/int/float/bool/list as YAML that PyYAML reads back as the same types.

    (JSON is YAML too, but PyYAML reads JSON's 1e-08 as a string: YAML 1.1 floats need a dot.)"""
    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            r = repr(v)
            return r if "e" not in r or "." in r else r.replace("e", ".0e")
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else str(v)

    lines = []
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += [f"{' ' * indent}{k}:", to_yaml(v, indent + 4)]
        else:
            lines.append(f"{' ' * indent}{k}: {scalar(v)}")
    return "\n".join(lines)


def run_joeynmt(work: Path, minutes: float, threads: int, python: str, valid_freq: int, ckpt: str) -> dict:
    """Train JoeyNMT for `minutes` of training time, test it with beam 4, score with qkv's code."""
    from qkv.config import load_toml
    from qkv.data.translation import multi30k_paths, parse_direction, read_parallel
    from qkv.evaluation.translation import chrf_pp, sacre_bleu

    preset = load_toml("src/qkv/presets/multi30k-de-en.toml")
    src, tgt = parse_direction(preset["data"]["direction"])
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    n_dev = preset["data"].get("bleu_val_pairs", 300)
    refs = []
    for split, name, limit in (("train", "train", None), ("val", "dev", n_dev), ("test_2016_flickr", "test", None)):
        s_lines, t_lines = read_parallel(*multi30k_paths(preset["data"]["direction"], split))  # what qkv reads
        (data / f"{name}.{src}").write_text("\n".join(s_lines[:limit]) + "\n", encoding="utf-8")
        (data / f"{name}.{tgt}").write_text("\n".join(t_lines[:limit]) + "\n", encoding="utf-8")
        refs = t_lines if name == "test" else refs
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    prep = subprocess.run([python, "-c", JOEY_PREP, str(data), str(preset["data"]["vocab_size"]), src, tgt],
                          capture_output=True, text=True, env=env)
    if prep.returncode != 0:
        sys.exit(f"sentencepiece training for JoeyNMT failed:\n{prep.stderr[-3000:]}")
    counts = json.loads(prep.stdout.strip().splitlines()[-1])

    cfg = joey_config(work, preset, valid_freq)
    train_yaml = work / "train.yaml"
    train_yaml.write_text(to_yaml(cfg) + "\n", encoding="utf-8")
    log_path, model_dir = work / "train.out", Path(cfg["model_dir"])
    with open(log_path, "w", encoding="utf-8") as out:
        # SIGINT back to its default: a bench started in the background of a non-interactive shell inherits it
        # ignored, and then JoeyNMT would never see the interrupt that ends its budget
        proc = subprocess.Popen([python, "-c", JOEY_TRAIN, "train", str(train_yaml), "--skip-test"], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=work,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        start, train_s, interrupted = None, math.nan, False  # the budget starts at its log's "EPOCH 1"
        while proc.poll() is None:
            time.sleep(1)
            if start is None and "EPOCH 1" in _read(model_dir / "train.log"):
                start = time.perf_counter()
            if start is not None and time.perf_counter() - start >= minutes * 60:
                train_s, interrupted = time.perf_counter() - start, True
                proc.send_signal(signal.SIGINT)  # JoeyNMT catches it and saves the current weights
                try:
                    proc.wait(timeout=600)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                break
    if start is not None and not interrupted:  # it ended by itself (all epochs done, or an error)
        train_s = time.perf_counter() - start
    log = _read(model_dir / "train.log")
    if start is None or not (model_dir / "latest.ckpt").exists() or (not interrupted and proc.returncode != 0):
        sys.exit(f"JoeyNMT training failed (exit {proc.returncode}); its output ({log_path}):\n"
                 + log_path.read_text(encoding="utf-8")[-3000:])
    tps = [float(x) for x in re.findall(r"Tokens per Sec:\s+([\d.]+)", log)]
    steps = [int(x) for x in re.findall(r"Step:\s+(\d+)", log) + re.findall(r"Interrupt at epoch \d+, step (\d+)", log)]
    params = re.search(r"Total params: (\d+)", log)
    valids = _read(model_dir / "validations.txt").splitlines()

    test_cfg = dict(cfg, data={k: v for k, v in cfg["data"].items() if k != "dev"})  # its test set only
    load = model_dir / f"{ckpt}.ckpt"
    if not load.exists():
        load = model_dir / "latest.ckpt"
    test_cfg["testing"] = dict(cfg["testing"], load_model=str(load.resolve()))
    test_yaml = work / "test.yaml"
    test_yaml.write_text(to_yaml(test_cfg) + "\n", encoding="utf-8")
    t = time.perf_counter()
    test = subprocess.run([python, "-m", "joeynmt", "test", str(test_yaml), "--output-path", str(work / "hyps")],
                          capture_output=True, text=True, env=env, cwd=work)
    test_s = time.perf_counter() - t
    if test.returncode != 0:
        sys.exit(f"joeynmt test failed (exit {test.returncode}):\n{(test.stdout + test.stderr)[-3000:]}")
    hyps = (work / "hyps.test").read_text(encoding="utf-8").split("\n")[: len(refs)]
    own = re.search(r"Evaluation result \(beam search\): bleu:\s*([\d.]+)",
                    test.stdout + test.stderr + _read(model_dir / "test.log"))
    return {"version": "2.3.0", "params": int(params.group(1)) if params else None, "steps": max(steps, default=0),
            "train_s": train_s, "tgt_tokens_per_s": statistics.median(tps) if tps else math.nan,
            "tgt_share": counts["tgt_tokens"] / (counts["src_tokens"] + counts["tgt_tokens"]),
            "pieces": counts["pieces"], "last_validation": valids[-1] if valids else "none", "ckpt": str(load.name),
            "ckpt_step": load.resolve().stem, "test_s": test_s, "own_bleu": float(own.group(1)) if own else math.nan,
            "bleu_beam4": sacre_bleu(hyps, refs).score, "chrf_beam4": chrf_pp(hyps, refs).score,
            "work": str(work)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qkv-run", help="score this existing qkv run instead of training one")
    ap.add_argument("--out", help="train the qkv run into this directory and keep it (default: a temp dir)")
    ap.add_argument("--skip-qkv", action="store_true", help="run the peer only (needs --peer joeynmt)")
    ap.add_argument("--peer", choices=["marian", "joeynmt", "none"], default="marian")
    ap.add_argument("--skip-marian", action="store_true", help="the same as --peer none")
    ap.add_argument("--peer-python", default=JOEY_PYTHON,
                    help="the Python of JoeyNMT's own venv (default: $QKV_JOEYNMT_PYTHON or %(default)s)")
    ap.add_argument("--joey-valid-freq", type=int, default=250,
                    help="JoeyNMT validates every N updates (default: the qkv preset's eval_interval)")
    ap.add_argument("--joey-ckpt", choices=["latest", "best"], default="latest",
                    help="test JoeyNMT's weights at the end of the budget (latest) or its best-validated ones")
    ap.add_argument("--keep", help="with --peer joeynmt: keep its scratch folder (data, config, logs) here")
    args = ap.parse_args()
    peer = "none" if args.skip_marian else args.peer
    if args.skip_qkv and peer != "joeynmt":
        ap.error("--skip-qkv needs --peer joeynmt (Marian reuses the qkv run's tokenizer and batches)")
    joey_version = check_peer_python(args.peer_python) if peer == "joeynmt" else None
    print(describe(args.threads), flush=True)
    q: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.qkv_run or args.out or Path(tmp) / "qkv")
        if not args.skip_qkv:
            if not args.qkv_run:
                run_qkv(run_dir, args.minutes, args.threads)
            q = {beam: eval_qkv(run_dir, beam) for beam in (1, 4)}
            q_tps = qkv_tokens_per_s(run_dir)
            print(f"qkv ({run_dir}): train {q_tps:,.0f} tokens/s")
            for beam, r in q.items():
                print(f"  beam {beam}: {json.dumps(r)}")
        if peer == "marian":
            mar = run_marian(run_dir, args.minutes, args.threads)
        elif peer == "joeynmt":
            work = Path(args.keep) if args.keep else Path(tmp) / "joeynmt"
            joey = run_joeynmt(work, args.minutes, args.threads, args.peer_python, args.joey_valid_freq,
                               args.joey_ckpt)
            joey["work"] = args.keep  # the temp folder is gone when this is printed
            if not args.skip_qkv:
                from qkv.models.io import load_model
                from qkv.runs import read_config

                q_params = load_model(run_dir)[0].num_params()
                meta = read_config(run_dir).get("data_meta") or {}
                q_share = meta["tgt_tokens"] / (meta["src_tokens"] + meta["tgt_tokens"]) if meta else math.nan
    if peer == "joeynmt":
        report_joeynmt(joey, joey_version, args.minutes, q, None if args.skip_qkv else (q_params, q_tps, q_share))
        return
    if peer == "none":
        return
    print(f"MarianMTModel ({mar['params']:,} params, {mar['steps']} updates): "
          f"train {mar['tokens_per_s']:,.0f} tokens/s, smoothed training loss of the last 100 updates "
          f"{mar['final_train_loss']:.3f}")
    print(f"{'':22} {'sacreBLEU':>9} {'chrF++':>7}")
    for beam in (1, 4):
        qb = q[beam]
        print(f"qkv beam {beam:<12} {_num(qb, 'bleu'):9.2f} {_num(qb, 'chrf'):7.2f}")
        print(f"Marian beam {beam:<9} {mar[f'bleu_beam{beam}']:9.2f} {mar[f'chrf_beam{beam}']:7.2f}")
    print(f"tokens/s ratio qkv / Marian: {q_tps / mar['tokens_per_s']:.2f}x")


def report_joeynmt(joey: dict, version: str, minutes: float, q: dict, qkv: tuple | None) -> None:
    """JoeyNMT's figures, and qkv's beside them (qkv: (params, source+target tokens/s, target share))."""
    j_tgt = joey["tgt_tokens_per_s"]
    j_all = j_tgt / joey["tgt_share"]
    params = f"{joey['params']:,}" if joey["params"] else "?"
    print(f"JoeyNMT {version} ({params} params{f'; qkv {qkv[0]:,}' if qkv else ''}; joint BPE of "
          f"{joey['pieces']:,} pieces): {joey['steps']:,} updates in {joey['train_s'] / 60:.1f} min, train "
          f"{j_tgt:,.0f} target tokens/s (≈ {j_all:,.0f} source + target tokens/s)")
    print(f"  last validation (greedy, dev subset): {joey['last_validation']}")
    print(f"  tested {joey['ckpt']} (step {joey['ckpt_step']}), its own beam-4 test took {joey['test_s']:.0f} s, "
          f"its own BLEU {joey['own_bleu']:.2f}" + (f"; its files: {joey['work']}" if joey["work"] else ""))
    print(f"{'':22} {'sacreBLEU':>9} {'chrF++':>7}")
    for beam, r in q.items():
        print(f"qkv beam {beam:<12} {_num(r, 'bleu'):9.2f} {_num(r, 'chrf'):7.2f}")
    print(f"JoeyNMT beam 4{'':7} {joey['bleu_beam4']:9.2f} {joey['chrf_beam4']:7.2f}")
    if qkv:
        _, q_tps, q_share = qkv
        print(f"train tokens/s, source + target: qkv {q_tps:,.0f}, JoeyNMT ≈ {j_all:,.0f} ({q_tps / j_all:.2f}x); "
              f"target only: qkv ≈ {q_tps * q_share:,.0f}, JoeyNMT {j_tgt:,.0f} ({q_tps * q_share / j_tgt:.2f}x)")
    print(f"(training budget: {minutes:g} min{' each' if qkv else ''}, on this machine)")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _num(d: dict, key: str) -> float:
    """The first number under a key containing `key` (the eval JSON nests scores with their signatures)."""
    for k, v in d.items():
        if key in k.lower():
            return v["score"] if isinstance(v, dict) else float(v)
    return math.nan


if __name__ == "__main__":
    main()
