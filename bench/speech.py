"""Speech recognition targets (issue 25): FSDD digits, connected digits, unseen speakers, espeak-ng commands, the
attention decoder against CTC, the MFCC + linear baseline, and the real-time factor.

    QKV_DATA_DIR=../shared/data python bench/speech.py OUT_DIR [--minutes 10] [--threads 2] [--only NAME ...]
        [--loso-minutes 4] [--commands-minutes M] [--jobs 1] [--ablate-speaker nicolas]

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
- ``ablate``: one leave-one-speaker-out fold (``--ablate-speaker``) trained again without each augmentation in
  turn (SpecAugment, speed perturbation, noise) and without any: what each moves on an unseen speaker.
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
DECODINGS = {"greedy": ["--beam", "1", "--ctc-weight", "0"],  # the decoder alone (greedy CTC for a CTC run)
             "joint": ["--beam", "4", "--ctc-weight", "0.3"]}  # beam 4, rescored with the CTC head (attention runs)
ABLATIONS = {"nospec": ["--data.spec_augment", "false"], "nospeed": ["--data.speeds", "[1.0]"],
             "nonoise": ["--data.noise_snr_db", "[]"], "noaug": NO_AUG}


def experiments(minutes: float, loso_minutes: float, commands_minutes: float | None = None,
                ablate_speaker: str = "nicolas") -> dict[str, tuple[str, list[str], float]]:
    """name -> (preset, extra flags, minutes)."""
    cm = minutes if commands_minutes is None else commands_minutes
    out = {"digits": ("fsdd-digits", [], minutes), "digits-ctc": ("fsdd-digits", CTC, minutes),
           "commands": ("speech-commands", [], cm), "commands-ctc": ("speech-commands", CTC, cm)}
    for s in SPEAKERS:
        out[f"loso-{s}"] = ("fsdd-digits", ["--data.source", "fsdd-connected", "--data.leave_out", s], loso_minutes)
        out[f"loso-noaug-{s}"] = ("fsdd-digits", ["--data.source", "fsdd-connected", "--data.leave_out", s,
                                                  *NO_AUG], loso_minutes)
    for v, flags in ABLATIONS.items():
        out[f"ablate-{v}"] = ("fsdd-digits", ["--data.source", "fsdd-connected", "--data.leave_out", ablate_speaker,
                                              *flags], loso_minutes)
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
    evals = {}
    for decoding, flags in DECODINGS.items():
        if decoding == "joint" and "ctc" in extra:  # a CTC run has no decoder to rescore
            continue
        ev = subprocess.run([sys.executable, "-m", "qkv", "eval", str(run), "--json", *flags], env=env,
                            capture_output=True, text=True)
        if ev.returncode != 0:
            sys.exit(f"{name}: eval failed:\n{ev.stderr[-2000:]}")
        evals[decoding] = json.loads(ev.stdout)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = max((m.get("step", 0) for m in metrics), default=0)
    return {"name": name, "preset": preset, "extra": extra, "minutes": minutes, "threads": threads, "wall_s": wall,
            "updates": steps, "eval": evals["greedy"], "evals": evals}


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
    """The real-time factor of each decoding on one thread, nothing else running."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = {"name": "rtf"}
    for decoding, flags in DECODINGS.items():
        ev = subprocess.run([sys.executable, "-m", "qkv", "eval", str(run), "--json", *flags], env=env,
                            capture_output=True, text=True)
        r = json.loads(ev.stdout)
        out[decoding] = {"rtf": r["rtf"], "audio_s": r["audio_s"], "threads": r["threads"]}
    return out


def table(results: dict) -> list[str]:
    lines = [f"{'experiment':<24} {'upd':>6} {'decoding':<8} {'group':<46} {'n':>5} {'WER':>7} {'CER':>7} "
             f"{'exact':>7}"]
    for name, r in results.items():
        if name == "mfcc":
            lines.append(f"{'mfcc + logistic':<24} {'':>6} {'':<8} {'fsdd single digits, test takes 0-4':<46} "
                         f"{r['test']:>5} {'':>7} {'':>7} {100 * r['accuracy']:>6.1f}%")
            continue
        if name == "rtf":
            for decoding in DECODINGS:
                lines.append(f"real-time factor ({decoding}, 1 thread, digits run): {r[decoding]['rtf']:.4f} over "
                             f"{r[decoding]['audio_s']:.0f} s")
            continue
        for decoding, ev in r.get("evals", {"greedy": r["eval"]}).items():
            for g in ev["groups"]:
                lines.append(f"{name:<24} {r['updates']:>6} {decoding:<8} {g['group'][:46]:<46} {g['n']:>5} "
                             f"{100 * g['wer']:>6.2f}% {100 * g['cer']:>6.2f}% {100 * g['exact']:>6.1f}%")
    folds = [r for n, r in results.items() if n.startswith("loso-") and not n.startswith("loso-noaug")]
    for label, group, decoding in (
            ("augmented", folds, "greedy"), ("augmented", folds, "joint"),
            ("no augmentation", [r for n, r in results.items() if n.startswith("loso-noaug")], "greedy")):
        group = [r for r in group if decoding in r.get("evals", {"greedy": 0})]
        if group:
            wers = [r.get("evals", {"greedy": r["eval"]})[decoding]["groups"][0]["wer"] for r in group]
            per_fold = ", ".join(f"{s} ({r['eval']['groups'][0].get('accents', {}).get(s, '?')}) {100 * w:.1f}%"
                                 for r, w in zip(group, wers, strict=True) for s in [r["extra"][3]])
            lines.append(f"leave-one-speaker-out, {label}, {decoding}: mean WER {100 * sum(wers) / len(wers):.2f}% "
                         f"over {len(wers)} folds: {per_fold}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--loso-minutes", type=float, default=4.0)
    p.add_argument("--commands-minutes", type=float, default=None, help="the commands runs' budget (default: "
                                                                        "--minutes)")
    p.add_argument("--ablate-speaker", default="nicolas", choices=SPEAKERS, help="the fold the ablations train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (each with --threads threads)")
    p.add_argument("--only", nargs="+", help="experiments: mfcc digits digits-ctc loso loso-noaug ablate commands "
                                             "commands-ctc rtf (loso = its 6 folds, ablate = 4 runs of one fold)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(describe(args.threads), flush=True)
    known = experiments(args.minutes, args.loso_minutes, args.commands_minutes, args.ablate_speaker)
    wanted = args.only or ["mfcc", "digits", "digits-ctc", "loso", "loso-noaug", "commands", "commands-ctc", "rtf"]
    names = []
    for w in wanted:
        if w in ("loso", "loso-noaug"):
            names += [f"{w}-{s}" for s in SPEAKERS]
        elif w == "ablate":
            names += [f"ablate-{v}" for v in ABLATIONS]
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
