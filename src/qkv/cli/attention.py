"""``qkv attention RUN_DIR (--src SENTENCE | --text TEXT | --image IMAGE | --audio WAV) [--layer L] [--head H] --out
map.png``.

Translation runs (--src): translate the sentence, then draw decoder layer L's cross-attention, source
tokens × produced target tokens (the alignment). When the sentence is in a cached reference alignment of the
run's training data (`qkv data alignments`, `qkv eval RUN --alignment`), the map is drawn over its reference
translation instead, read teacher-forced, with the reference word links outlined in red (--no-reference keeps
the model's own translation); otherwise one line says there is none. GPT runs (--text): draw layer L's causal
self-attention over the text. Caption runs (--image): caption the image, then draw each caption word's
cross-attention over the image patches as a grid of panels, one per word, and print where each word's attention
peaks. Speech runs (--audio): transcribe the recording, then draw each character's cross-attention over the
encoder states under the recording's spectrogram, on one time axis (the alignment picture of speech), and print
where each character's attention peaks. Weights are averaged over heads unless --head is given; --layer defaults to
the last layer (-1).
"""

from __future__ import annotations

from qkv.errors import QKVError

# a source-to-text run's source kind -> the flag that gives its source, and what it is
SOURCE_FLAGS = {"text": ("src", "SENTENCE"), "image": ("image", "IMAGE"), "audio": ("audio", "WAV")}


def add_parser(sub, name):
    p = sub.add_parser(name, help="plot attention maps (cross-attention alignment or self-attention)",
                       description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--src", help="source sentence to translate (seq2seq runs)")
    p.add_argument("--text", help="text to read (GPT runs)")
    p.add_argument("--image", help="image file to caption (caption runs)")
    p.add_argument("--audio", help="WAV file to transcribe (speech runs)")
    p.add_argument("--layer", type=int, default=-1, help="layer index (default: -1, the last)")
    p.add_argument("--head", type=int, default=None, help="one head (default: mean over heads)")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size for the translation or caption (default: the run's)")
    p.add_argument("--no-reference", action="store_true",
                   help="translation runs: draw the model's own translation even when a reference alignment exists")
    p.add_argument("--out", required=True, help="PNG file to write")


def run(args) -> int:
    from qkv.evaluation.attention import plot_attention
    from qkv.tasks import load_run
    from qkv.tasks.capabilities import Capability, can, require

    run_ = load_run(args.run_dir)
    takes = {}  # flag -> what it needs, for the flags this run takes
    if can(run_, Capability.SOURCE_TO_TEXT):
        flag, what = SOURCE_FLAGS[run_.source_kind]
        takes[flag] = what
    if can(run_, Capability.SELF_ATTENTION):
        takes["text"] = "TEXT"
    given = [flag for flag in ("text", "src", "image", "audio") if getattr(args, flag) is not None]
    if not takes:
        require(run_, Capability.SELF_ATTENTION, "qkv attention")
    if len(given) != 1 or given[0] not in takes:
        wants = " or ".join(f"--{flag} {what}" for flag, what in takes.items())
        got = f" (got {', '.join('--' + g for g in given)})" if given else ""
        raise QKVError(f"{run_.path.name} takes one input: {wants}{got}")
    if args.text is not None:  # self-attention over a text
        if args.beam is not None:
            raise QKVError("--beam goes with --src, --image or --audio (an output is decoded); --text reads the text "
                           "only")
        amap = run_.self_attention(args.text).pick(args.layer, args.head)
    else:  # cross-attention while turning the source into text
        if given[0] == "image":
            return _patches(run_, args)
        if given[0] == "audio":
            return _spectrogram(run_, args)
        amap = None if args.no_reference else _reference_map(run_, args.src, args.layer, args.head)
        if amap is None:
            amap = run_.cross_attention(args.src, run_.decoding(beam=args.beam)).pick(args.layer, args.head)
    path = plot_attention(amap, args.out)
    if amap.note:
        print(amap.note)
    print(f"{amap.title}: {len(amap.rows)} × {len(amap.cols)} -> {path}")
    return 0


def _patches(run_, args) -> int:
    """An image source: each output word's cross-attention over the patches, one panel per word."""
    from qkv.evaluation.captioning import attention_table, plot_caption_attention

    att = run_.attention(args.image, args.layer, args.head, beam=args.beam)
    path, (cols, rows) = plot_caption_attention(att, args.out)
    print(f"caption: {att.caption}")
    print(f"{att.title}: {len(att.words)} words × {att.weights.size(1)} patches -> {path} ({cols} × {rows} panels)")
    print("\n".join(attention_table(att)))
    return 0


def _spectrogram(run_, args) -> int:
    """An audio source: each character's cross-attention over the encoder states, under the spectrogram."""
    from qkv.evaluation.transcription import attention_peaks, plot_speech_attention

    wave, note = run_.read_source(args.audio)
    if note:
        print(f"note: {note}")
    stack = run_.cross_attention(wave, run_.decoding(beam=args.beam))
    amap = stack.pick(args.layer, args.head)
    path = plot_speech_attention(amap, stack.spectrogram, args.out)
    print(f"transcript: {stack.text}")
    print(f"{amap.title}: {len(amap.rows)} characters × {len(amap.cols)} encoder states (20 ms each) -> {path}")
    print("\n".join(attention_peaks(amap)))
    return 0


def _reference_map(run_, source: str, layer: int, head: int | None):
    """The map over the reference translation with its word links as boxes, if a cached reference alignment of
    the run's training data holds `source`; else None, after one line saying so."""
    amap, message = run_.reference_attention(source, layer, head)
    print(message + ("; --no-reference draws the model's own translation" if amap is not None else ""))
    return amap
