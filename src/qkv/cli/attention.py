"""``qkv attention RUN_DIR (--src SENTENCE | --text TEXT | --image IMAGE) [--layer L] [--head H] --out map.png``.

Translation runs (--src): translate the sentence, then draw decoder layer L's cross-attention, source
tokens × produced target tokens (the alignment). When the sentence is in a cached reference alignment of the
run's training data (`qkv data alignments`, `qkv eval RUN --alignment`), the map is drawn over its reference
translation instead, read teacher-forced, with the reference word links outlined in red (--no-reference keeps
the model's own translation); otherwise one line says there is none. GPT runs (--text): draw layer L's causal
self-attention over the text. Caption runs (--image): caption the image, then draw each caption word's
cross-attention over the image patches as a grid of panels, one per word, and print where each word's attention
peaks. Weights are averaged over heads unless --head is given; --layer defaults to
the last layer (-1).
"""

from __future__ import annotations

from qkv.errors import QKVError
from qkv.tasks.base import a_


def add_parser(sub, name):
    p = sub.add_parser(name, help="plot attention maps (cross-attention alignment or self-attention)",
                       description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--src", help="source sentence to translate (seq2seq runs)")
    p.add_argument("--text", help="text to read (GPT runs)")
    p.add_argument("--image", help="image file to caption (caption runs)")
    p.add_argument("--layer", type=int, default=-1, help="layer index (default: -1, the last)")
    p.add_argument("--head", type=int, default=None, help="one head (default: mean over heads)")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size for the translation or caption (default: the run's)")
    p.add_argument("--no-reference", action="store_true",
                   help="translation runs: draw the model's own translation even when a reference alignment exists")
    p.add_argument("--out", required=True, help="PNG file to write")


def run(args) -> int:
    import inspect

    from qkv.evaluation.attention import plot_attention
    from qkv.tasks import load_run

    run_ = load_run(args.run_dir)
    want = run_.attention_input  # what this run's attention reads: "text" (GPT) or "src" (translation)
    if want is None:
        run_.attention()  # the one-line error of a run without attention maps
    given = {"text": args.text, "src": args.src, "image": args.image}[want]
    if given is None:
        raise QKVError(f"a {run_.task} run needs --{want} \"...\"")
    options = {"beam": args.beam} if args.beam is not None else {}
    if options and "beam" not in inspect.signature(run_.attention).parameters:
        raise QKVError(f"--beam does not apply to {a_(run_.task)} run")
    if want == "image":
        from qkv.evaluation.captioning import attention_table, plot_caption_attention

        att = run_.attention(given, args.layer, args.head, **options)
        path, (cols, rows) = plot_caption_attention(att, args.out)
        print(f"caption: {att.caption}")
        print(f"{att.title}: {len(att.words)} words × {att.weights.size(1)} patches -> {path} "
              f"({cols} × {rows} panels)")
        print("\n".join(attention_table(att)))
        return 0
    amap = None
    if want == "src" and not args.no_reference:
        amap = _reference_map(run_, given, args.layer, args.head)
    if amap is None:
        amap = run_.attention(given, args.layer, args.head, **options)
    path = plot_attention(amap, args.out)
    if amap.note:
        print(amap.note)
    print(f"{amap.title}: {len(amap.rows)} × {len(amap.cols)} -> {path}")
    return 0


def _reference_map(run_, source: str, layer: int, head: int | None):
    """The map over the reference translation with its word links as boxes, if a cached reference alignment of
    the run's training data holds `source`; else None, after one line saying so."""
    from qkv.data.alignment import find_reference, training_description
    from qkv.evaluation.alignment import reference_attention

    train = training_description(run_.config.data)
    found = find_reference(train, source)
    if found is None:
        print(f"no reference alignment: the sentence is in no cached alignment of {train} (qkv data alignments, "
              "qkv eval RUN --alignment); drawing the model's own translation")
        return None
    al, k = found
    print(f"reference alignment: {len(al.sure[k])} word links from {al.path}, outlined in red; rows are the "
          "reference translation, read teacher-forced (--no-reference: the model's own translation)")
    return reference_attention(run_.model, run_.src_tokenizer, run_.tgt_tokenizer, al.src[k], al.tgt[k], al.sure[k],
                               layer, head)
