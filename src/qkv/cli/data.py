"""``qkv data list`` and ``qkv data get NAME [NAME ...]``: named datasets, found locally or downloaded with a
sha256 check (from each file's upstream URL, or from the mirror ``$QKV_DATA_URL`` names: ``<url>/<name>/<file>``).
``english`` is built from tinyshakespeare, multi30k and the Python documentation (Debian's python3.X-doc): getting
it gets the first two and checks the third is installed.

``qkv data alignments multi30k --direction de-en --split test_2016_flickr``: reference word alignments of
the Multi30k training pairs plus a split's (eflomal, both directions, grow-diag-final-and), computed once
and cached under ``$QKV_CACHE_DIR/alignments/<sha256 of the inputs>/``; ``--src FILE --tgt FILE`` aligns
two line-aligned files instead. Needs the optional extra: ``pip install 'qkv[align]'``.

``qkv data scenes --out DIR [--n 8] [--counts 1 2 3] [--clips] [--seed 0]``: render procedural captioning scenes
(`qkv.data.scenes`) as PNG files with their ``captions.jsonl`` — images to try ``qkv caption`` on, and an
example of the folder format a caption run trains on (``--data.source DIR``). Clips are written as one strip of
their frames side by side. ``--pairs any`` also draws the colour–shape pairs the presets hold out.

``qkv data speech KIND OUT [--split train] [--n N] [--seed 0] [--noise-snr LO,HI] [--leave-out SPEAKER]``: write
a speech folder (`qkv.data.speech`: ``audio/*.wav`` at 16 kHz and ``transcripts.jsonl``). KIND is
``fsdd-digits`` (FSDD's clips of the split as they are, the text the digit's word; ``--n`` draws that many),
``fsdd-connected`` (strings of 1-7 digits by one speaker, default 1,000) or ``commands`` (spoken commands
voiced by espeak-ng, default 200; the test split has its own templates and voices). FSDD's split is by takes
(test: 0-4); ``--leave-out SPEAKER`` drops a speaker from the train split and keeps only that speaker in the
test split. ``--noise-snr 5,20`` adds white or pink noise at an SNR drawn from 5-20 dB. The same seed writes the
same folder.
"""

from __future__ import annotations

from qkv.data.registry import DATASETS, local_copy, pydoc_sources_dir, resolve, stdlib_files, verify
from qkv.data.translation import DIRECTIONS, MULTI30K_SPLITS
from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="list or fetch datasets", description=__doc__)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="named datasets and where they are")
    g = verbs.add_parser("get", help="make datasets available locally (download + sha256 check if needed)")
    g.add_argument("names", nargs="+", choices=sorted(DATASETS), metavar="NAME",
                   help=f"one or more of: {', '.join(sorted(DATASETS))}")
    a = verbs.add_parser("alignments", help="reference word alignments (eflomal), computed once and cached",
                         description=__doc__)
    a.add_argument("name", nargs="?", choices=["multi30k"], metavar="NAME", help="multi30k (or --src/--tgt)")
    a.add_argument("--direction", default="de-en", choices=DIRECTIONS, help="language pair (default de-en)")
    a.add_argument("--split", default="test_2016_flickr", choices=MULTI30K_SPLITS,
                   help="the split aligned together with train (default test_2016_flickr; train: train only)")
    a.add_argument("--src", metavar="FILE", help="source sentences, one per line (instead of NAME)")
    a.add_argument("--tgt", metavar="FILE", help="their translations, line-aligned with --src")
    s = verbs.add_parser("scenes", help="render captioning scenes (or clips) as PNG files with captions.jsonl",
                         description=__doc__)
    s.add_argument("--out", required=True, metavar="DIR", help="folder to write (created; must hold no captions.jsonl)")
    s.add_argument("--n", type=int, default=8, help="how many scenes (default 8)")
    s.add_argument("--counts", type=int, nargs="+", default=[1, 2, 3], help="object counts to draw (default 1 2 3)")
    s.add_argument("--pairs", choices=["seen", "held-out", "any"], default="seen",
                   help="colour–shape pairs: the presets' seen ones (default), at least one held-out, or any")
    s.add_argument("--clips", action="store_true", help="clips of one moving object instead of scenes")
    s.add_argument("--frames", type=int, default=4, help="frames per clip (default 4)")
    s.add_argument("--size", type=int, default=64, help="pixels per side (default 64)")
    s.add_argument("--seed", type=int, default=0)
    sp = verbs.add_parser("speech", help="write a speech folder: FSDD digits, connected digits or spoken commands",
                          description=__doc__)
    sp.add_argument("kind", choices=SPEECH_KINDS, help="what to write")
    sp.add_argument("out", metavar="OUT", help="folder to write (created; an existing one must be empty)")
    sp.add_argument("--split", choices=["train", "test"], default="train", help="which split (default train)")
    sp.add_argument("--n", type=int, help="how many items (default: fsdd-digits every clip, fsdd-connected 1000, "
                                          "commands 200)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--noise-snr", metavar="LO,HI", help="add white or pink noise at an SNR (dB) drawn from LO-HI")
    sp.add_argument("--leave-out", metavar="SPEAKER",
                    help="FSDD: leave one speaker out of training and test on it alone (george, jackson, lucas, "
                         "nicolas, theo, yweweler)")


SPEECH_KINDS = ("fsdd-digits", "fsdd-connected", "commands")


def run(args) -> int:
    if args.verb == "alignments":
        return _alignments(args)
    if args.verb == "scenes":
        return _scenes(args)
    if args.verb == "speech":
        return _speech(args)
    if args.verb == "list":
        for name, info in DATASETS.items():
            if name == "pystdlib":
                where = f"local ({len(stdlib_files())} files)"
            elif info.parts:
                where = _parts_where(info)
            else:
                found = local_copy(info)
                where = str(found) if found else "not downloaded"
            print(f"{name:<16} {info.description}\n{'':<16} {where}")
        return 0
    for name in dict.fromkeys(args.names):  # in the order given, once each
        _get(name)
    return 0


def _parts_where(info) -> str:
    """Where a dataset built from others (english) is: its documentation folder and parts, or what is missing."""
    try:
        docs = f"{pydoc_sources_dir()} + "
    except QKVError:
        docs = "no Python docs (apt-get install python3.X-doc) + "
    missing = [part for part in info.parts if local_copy(DATASETS[part]) is None]
    return docs + (f"needs {', '.join(missing)}: qkv data get {info.name}" if missing else " + ".join(info.parts))


def _get(name: str) -> None:
    folder = resolve(name)
    if name == "pystdlib":
        print(f"pystdlib: {folder} ({len(stdlib_files())} .py files)")
        return
    if DATASETS[name].parts:  # english: the parts were fetched and checked above, the docs found
        for part in DATASETS[name].parts:
            _get(part)
        print(f"{name}: {folder} ({sum(1 for _ in folder.rglob('*.rst.txt'))} .rst.txt files) + "
              f"{' + '.join(DATASETS[name].parts)}")
        return
    results = verify(name)
    bad = [str(folder / file) for file, ok in results if not ok]
    if len(results) > 20:  # FSDD's 3,000 recordings: the bad ones by name, the rest counted
        for file in bad:
            print(f"BAD sha256  {file}")
        print(f"ok  sha256  {len(results) - len(bad):,} of {len(results):,} files in {folder}")
    else:
        for file, ok in results:
            print(f"{'ok ' if ok else 'BAD'} sha256  {folder / file}")
    if bad:
        raise QKVError(f"{', '.join(bad)}: sha256 does not match the registry (a damaged or different copy)")


def _alignments(args) -> int:
    from qkv.data.alignment import (
        META_FILE,
        AlignerSettings,
        align_parts,
        alignments_root,
        cache_key,
        split_words,
    )
    from qkv.data.translation import multi30k_paths, read_parallel

    if (args.src is None) != (args.tgt is None):
        raise QKVError("give both --src and --tgt (line-aligned files), or neither")
    if args.src is not None:
        if args.name:
            raise QKVError(f"give a dataset name or --src/--tgt files, not both ({args.name!r} and {args.src})")
        parts = {"files": read_parallel(args.src, args.tgt)}
        describe = {"files": f"{args.src} -> {args.tgt}"}
        shown = "files"
    elif args.name == "multi30k":
        parts = {"train": read_parallel(*multi30k_paths(args.direction, "train"))}
        describe = {"train": f"multi30k {args.direction} train"}
        if args.split != "train":
            parts[args.split] = read_parallel(*multi30k_paths(args.direction, args.split))
            describe[args.split] = f"multi30k {args.direction} {args.split}"
        shown = args.split
    else:
        raise QKVError("name a dataset (multi30k) or give --src FILE --tgt FILE")
    settings = AlignerSettings()
    cached = (alignments_root() / cache_key(parts, settings) / META_FILE).is_file()
    al = align_parts(parts, settings, describe, progress=lambda line: print(line, flush=True))
    m = al.meta
    n_links = sum(len(s) for s in al.sure)
    print(f"{' + '.join(describe.values())}: {len(al):,} sentence pairs, {n_links:,} links "
          f"({m['aligner']}, {m['symmetrization']}; aligned in {m['seconds']:.1f} s"
          f"{', read back from the cache' if cached else ''})")
    print(f"cache: {al.path}")
    part = al.part(shown)
    if len(part):  # one pair, to show what a link is
        src, tgt = split_words(part.src[0]), split_words(part.tgt[0])
        pairs = " ".join(f"{src[i]}={tgt[j]}" for i, j in sorted(part.sure[0], key=lambda ij: ij[1]))
        print(f"{shown} pair 1: {part.src[0]}  ->  {part.tgt[0]}\n  links (source=target words): {pairs}")
    return 0


def _scenes(args) -> int:
    import json
    from pathlib import Path

    import torch

    from qkv.data.captioning import CAPTIONS_FILE, write_image
    from qkv.data.scenes import SceneSpec, draw_scenes
    from qkv.runs import atomic_write_bytes

    if args.n < 1:
        raise QKVError(f"--n must be at least 1, got {args.n}")
    out = Path(args.out)
    if (out / CAPTIONS_FILE).exists():
        raise QKVError(f"{out} already holds {CAPTIONS_FILE}; choose a new folder")
    try:
        spec = SceneSpec(args.size, [1] if args.clips else args.counts, holdout_counts=[],
                         frames=args.frames if args.clips else 1)
    except ValueError as e:
        raise QKVError(str(e)) from None
    images, captions, _ = draw_scenes(spec, args.n, args.seed, pairs=args.pairs)
    out.mkdir(parents=True, exist_ok=True)
    kind = "clip" if args.clips else "scene"
    rows = []
    for i, (x, caption) in enumerate(zip(images, captions, strict=True)):
        name = f"{kind}_{i:03d}.png"
        write_image(torch.from_numpy(x), out / name)
        rows.append(json.dumps({"image": name, "captions": [caption]}))
    atomic_write_bytes(out / CAPTIONS_FILE, ("\n".join(rows) + "\n").encode("utf-8"))
    for row in rows[:3]:
        r = json.loads(row)
        print(f"{out / r['image']}: {r['captions'][0]}")
    if len(rows) > 3:
        print(f"... {len(rows) - 3} more")
    print(f"wrote {len(rows)} {kind}s ({args.size}×{args.size}{f' × {args.frames} frames' if args.clips else ''}) "
          f"and {out / CAPTIONS_FILE}")
    return 0


def _speech(args) -> int:
    import sys

    import numpy as np
    from tqdm import tqdm

    from qkv.data import speech
    from qkv.data.audio import SAMPLE_RATE, read_wav

    if args.n is not None and args.n < 1:
        raise QKVError(f"--n must be at least 1, got {args.n}")
    snr = _snr_range(args.noise_snr)
    if args.leave_out and args.kind == "commands":
        raise QKVError("--leave-out picks an FSDD speaker; the commands have no speakers to leave out")
    rng = np.random.default_rng(args.seed)
    noise_rng = np.random.default_rng([args.seed, 1])  # noise on clips and commands: its own stream
    if args.kind == "commands":
        from qkv.data.commands import utterances

        n = args.n or 200
        items = utterances(rng, n, args.split)
    else:
        clips = speech.fsdd_clips()
        if args.leave_out is None:
            clips = speech.fsdd_split(clips, args.split)
        elif args.split == "train":
            clips = speech.fsdd_split(clips, "train", exclude=[args.leave_out])
        else:
            clips = speech.fsdd_split(clips, "test", speakers=[args.leave_out])
        if args.kind == "fsdd-connected":
            n = args.n or 1000
            items = (speech.connected_digits(clips, rng, noise_snr_db=snr) for _ in range(n))
        else:
            if args.n is not None and args.n < len(clips):
                clips = [clips[i] for i in sorted(rng.choice(len(clips), args.n, replace=False))]
            n = len(clips)
            items = ((read_wav(c.path)[0], speech.DIGIT_WORDS[c.digit],
                      {"speaker": c.speaker, "accent": speech.FSDD_ACCENTS.get(c.speaker), "clip": c.path.stem})
                     for c in clips)
    extra_noise = None if args.kind == "fsdd-connected" else snr  # connected_digits adds its own
    seconds = 0.0

    def counted(items):
        nonlocal seconds
        for wave, text, meta in tqdm(items, total=n, desc=args.kind, unit="item", file=sys.stderr, disable=None):
            if extra_noise is not None:
                wave, noise = speech.random_noise(wave, noise_rng, extra_noise)
                meta = {**meta, **noise}
            seconds += len(wave) / SAMPLE_RATE
            yield wave, text, meta

    count = speech.write_speech_folder(args.out, counted(items))
    print(f"wrote {count:,} {args.kind} items ({args.split}; {seconds:,.1f} s of audio, {seconds / 3600:.2f} h) "
          f"to {args.out}")
    return 0


def _snr_range(text: str | None) -> tuple[float, float] | None:
    """--noise-snr "5,20" -> (5.0, 20.0); "10" -> (10.0, 10.0)."""
    if text is None:
        return None
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not parts[0] <= parts[1]:
        raise QKVError(f"--noise-snr takes LO,HI in dB with LO <= HI (or one value), got {text!r}")
    return parts[0], parts[1]
