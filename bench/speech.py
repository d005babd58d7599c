"""Speech recognition targets (issue 25): FSDD digits, connected digits, unseen speakers, espeak-ng commands, the
attention decoder against CTC, the MFCC + linear baseline, and the real-time factor.

    QKV_DATA_DIR=../shared/data python bench/speech.py OUT_DIR [--minutes 10] [--threads 2] [--only NAME ...]
        [--loso-minutes 4] [--commands-minutes M] [--jobs 1]

Experiments (``--only`` picks some; each trains a preset for ``--minutes`` by the clock, then ``qkv eval --json``):

- ``mfcc``: the classic baseline for single digits: 13 MFCCs (the DCT of qkv's log-mel) per frame, their mean,
  standard deviation, and those of their deltas, standardised, into a logistic regression (scikit-learn);
  official split (train takes 5-49, test takes 0-4). No training budget: it fits in seconds.
- ``digits`` / ``digits-ctc``: the fsdd-digits preset (single digits + connected strings), attention decoder and
  the CTC baseline (the same encoder, ``model.head = "ctc"``, no decoder): single-digit accuracy and connected WER
  on the test takes.
- ``loso``: leave one speaker out, all 6 folds (``data.leave_out``), each ``--loso-minutes``: connected WER on the
  speaker left out, with the speaker's accent. ``loso-noaug`` is the same without augmentation (what augmentation
  moved).
- ``commands`` / ``commands-ctc``: the speech-commands preset (espeak-ng sentences + connected digits): WER on the
  held-out voices and templates.
- ``rtf``: greedy transcription of the digits run's test sets on 1 thread: seconds of compute per second of audio.

`--jobs 2` runs two trainings at once, one thread each (a 2-core machine: each gets a core); say so when quoting.
Results go to OUT_DIR/results.json (every experiment's `qkv eval --json`) and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import describe

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
NO_AUG = ["--data.speeds", "[1.0]", "--data.gain_db", "[0.0, 0.0]", "--data.noise_snr_db", "[]",
          "--data.spec_augment", "false"]
CTC = ["--model.head", "ctc", "--model.n_decoder_layers", "0", "--train.ctc_weight", "0"]


def experiments(minutes: float, loso_minutes: float, commands_minutes: float | None = None
                ) -> dict[str, tuple[str, list[str], float]]:
    """name -> (preset, extra flags, minutes)."""
    cm = minutes if commands_minutes is None else commands_minutes
    out = {"digits": ("fsdd-digits", [], minutes), "digits-ctc": ("fsdd-digits", CTC, minutes),
           "commands": ("speech-commands", [], cm), "commands-ctc": ("speech-commands", CTC, cm)}
    for s in SPEAKERS:
        out[f"loso-{s}"] = ("fsdd-digits", ["--data.source", "fsdd-connected", "--data.leave_out", s], loso_minutes)
        out[f"loso-noaug-{s}"] = ("fsdd-digits", ["--data.source", "fsdd-connected", "--data.leave_out", s,
                                                  *NO_AUG], loso_minutes)
    return out


def train_and_eval(name: str, preset: str, extra: list[str], minutes: float, threads: int, out: Path) -> dict:
    run = out / name
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log = out / f"{name}.log"
    if not (run / "model.safetensors").exists():
        cmd = [sys.executable, "-m", "qkv", "train", "--preset", preset, "--out", str(run), "--no-sample",
               "--train.progress", "false", "--train.threads", str(threads), "--train.max_minutes", str(minutes),
               *extra]
        with open(log, "w") as f:
            t = time.perf_counter()
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
            wall = time.perf_counter() - t
        if rc != 0:
            sys.exit(f"{name}: training failed, see {log}")
    else:
        wall = None
    ev = subprocess.run([sys.executable, "-m", "qkv", "eval", str(run), "--json"], env=env, capture_output=True,
                        text=True)
    if ev.returncode != 0:
        sys.exit(f"{name}: eval failed:\n{ev.stderr[-2000:]}")
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = max((m.get("step", 0) for m in metrics), default=0)
    return {"name": name, "preset": preset, "extra": extra, "minutes": minutes, "threads": threads, "wall_s": wall,
            "updates": steps, "eval": json.loads(ev.stdout)}


def mfcc_baseline() -> dict:
    """MFCC statistics + logistic regression on FSDD single digits, official split."""
    import numpy as np
    import torch
    from scipy.fft import dct
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from qkv.data.audio import log_mel
    from qkv.data.speech import clip_wave, fsdd_clips

    def features(clip) -> np.ndarray:
        mel = log_mel(clip_wave(clip)).numpy()  # (80, F)
        mfcc = dct(mel, type=2, axis=0, norm="ortho")[:13]  # (13, F): the cepstrum of the log-mel
        delta = np.diff(mfcc, axis=1) if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
        return np.concatenate([mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1)])

    torch.set_num_threads(1)
    clips = fsdd_clips()
    train = [c for c in clips if c.take >= 5]
    test = [c for c in clips if c.take < 5]
    t = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(np.stack([features(c) for c in train]), [c.digit for c in train])
    pred = clf.predict(np.stack([features(c) for c in test]))
    acc = float(np.mean(pred == np.array([c.digit for c in test])))
    return {"name": "mfcc", "accuracy": acc, "train": len(train), "test": len(test),
            "seconds": time.perf_counter() - t}


def rtf(run: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ev = subprocess.run([sys.executable, "-m", "qkv", "eval", str(run), "--json"], env=env, capture_output=True,
                        text=True)
    r = json.loads(ev.stdout)
    return {"name": "rtf", "rtf": r["rtf"], "audio_s": r["audio_s"], "threads": r["threads"]}


def table(results: dict) -> list[str]:
    lines = [f"{'experiment':<24} {'upd':>6} {'group':<52} {'n':>5} {'WER':>7} {'CER':>7} {'exact':>7}"]
    for name, r in results.items():
        if name == "mfcc":
            lines.append(f"{'mfcc + logistic':<24} {'':>6} {'fsdd single digits, test takes 0-4':<52} "
                         f"{r['test']:>5} {'':>7} {'':>7} {100 * r['accuracy']:>6.1f}%")
            continue
        if name == "rtf":
            lines.append(f"real-time factor (greedy, 1 thread, digits run): {r['rtf']:.4f} over {r['audio_s']:.0f} s")
            continue
        for g in r["eval"]["groups"]:
            lines.append(f"{name:<24} {r['updates']:>6} {g['group'][:52]:<52} {g['n']:>5} {100 * g['wer']:>6.2f}% "
                         f"{100 * g['cer']:>6.2f}% {100 * g['exact']:>6.1f}%")
    folds = [r for n, r in results.items() if n.startswith("loso-") and not n.startswith("loso-noaug")]
    for label, group in (("augmented", folds),
                         ("no augmentation", [r for n, r in results.items() if n.startswith("loso-noaug")])):
        if group:
            wers = [r["eval"]["groups"][0]["wer"] for r in group]
            lines.append(f"leave-one-speaker-out, {label}: mean WER {100 * sum(wers) / len(wers):.2f}% over "
                         f"{len(wers)} folds")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--loso-minutes", type=float, default=4.0)
    p.add_argument("--commands-minutes", type=float, default=None, help="the commands runs' budget (default: "
                                                                        "--minutes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (each with --threads threads)")
    p.add_argument("--only", nargs="+", help="experiments: mfcc digits digits-ctc loso loso-noaug commands "
                                             "commands-ctc rtf (loso = its 6 folds)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(describe(args.threads), flush=True)
    known = experiments(args.minutes, args.loso_minutes, args.commands_minutes)
    wanted = args.only or ["mfcc", "digits", "digits-ctc", "loso", "loso-noaug", "commands", "commands-ctc", "rtf"]
    names = []
    for w in wanted:
        if w in ("loso", "loso-noaug"):
            names += [f"{w}-{s}" for s in SPEAKERS]
        elif w in known or w in ("mfcc", "rtf"):
            names.append(w)
        else:
            sys.exit(f"unknown experiment {w!r}")
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if "mfcc" in names:
        results["mfcc"] = mfcc_baseline()
        print(f"mfcc: {100 * results['mfcc']['accuracy']:.1f}%", flush=True)
    todo = [n for n in names if n in known]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {n: pool.submit(train_and_eval, n, *known[n], args.threads, out) for n in todo}
        for n, f in futures.items():
            results[n] = f.result()
            print(f"{n}: done ({results[n]['updates']} updates)", flush=True)
            path.write_text(json.dumps(results, indent=1))
    if "rtf" in names:
        results["rtf"] = rtf(out / "digits")
    path.write_text(json.dumps(results, indent=1))
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
