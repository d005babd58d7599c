"""``qkv transcribe RUN_DIR FILE.wav [FILE.wav ...] [--beam 4] [--ctc-weight λ] [--nbest 3] [--json]``: recordings
-> text.

Prints one line per recording, ``FILE: transcript``, in the order given; with ``--json`` one JSON object per
recording (``{"file", "text", "seconds", "notes"}``, and ``"nbest"`` with ``--nbest N``). Any WAV is read: stereo
is downmixed, any sample format and rate converted to 16 kHz float (one note on stderr per conversion), a
recording longer than the model's frames is cut to them (said). A file that is not a WAV, is empty or shorter
than one 25 ms frame is a one-line error, before anything is printed. Decoding defaults to the run's [decode]
section (greedy; a CTC run decodes greedily only).
"""

from __future__ import annotations

import json
import sys


def add_parser(sub, name):
    p = sub.add_parser(name, help="transcribe recordings with a trained speech run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("files", nargs="+", metavar="FILE", help="WAV files")
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's)")
    p.add_argument("--ctc-weight", type=float, default=None, metavar="λ",
                   help="rescore the decoder's candidates with the CTC head: (1 − λ)·attention + λ·CTC (a run trained "
                        "with train.ctc_weight > 0; default: the run's)")
    p.add_argument("--nbest", type=int, default=0, help="also the N best transcripts with their log-probabilities")
    p.add_argument("--json", action="store_true", help="one JSON object per recording")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from qkv.data.audio import SAMPLE_RATE
    from qkv.errors import QKVError
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, require

    run_ = load_run(args.run_dir, device=args.device)
    require(run_, Capability.SOURCE_TO_TEXT, "qkv transcribe")
    if run_.source_kind != "audio":
        raise QKVError(f"qkv transcribe reads recordings; {run_.path.name} turns {run_.source_kind} into text")
    if args.nbest < 0:
        raise QKVError(f"--nbest must be at least 0, got {args.nbest}", argument="nbest")
    decoding = run_.decoding(beam=args.beam, ctc_weight=args.ctc_weight)
    read = [run_.read_source(path) for path in args.files]  # every file checked before any output
    texts = run_.to_text([w for w, _ in read], decoding)
    for (wave, note), path, text in zip(read, args.files, texts, strict=True):
        if args.json:
            row = {"file": path, "text": text, "seconds": round(len(wave) / SAMPLE_RATE, 3),
                   "notes": [n for n in note.split("; ") if n]}
            if args.nbest:
                row["nbest"] = run_.n_best(wave, decoding, args.nbest)
            print(json.dumps(row, ensure_ascii=False))
            continue
        if note:
            print(f"note: {note}", file=sys.stderr)
        print(f"{path}: {text}")
        if args.nbest:
            for k, alt in enumerate(run_.n_best(wave, decoding, args.nbest), 1):
                score = "" if alt.get("logprob") is None else f"  ({alt['logprob']:.3f})"
                print(f"  {k}. {alt['text']}{score}")
    return 0
