"""How a caption is judged: exact match, per-attribute accuracy, BLEU-4 and CIDEr-D; and where each word looked.

- **Exact match**: the caption equals one of the image's references, after lower-casing and collapsing spaces.
- **Per-attribute accuracy** (procedural scenes only, read with the grammar, `qkv.data.scenes.parse_caption`):
  *count* — the caption names as many objects as the scene holds (per scene); *position* — a reference object's
  cell (or a clip's direction) is named by the caption; *shape*, *colour*, *size* — the object the caption names
  at that cell (or else, in order, one it names at a cell where the scene has none: a misplaced object) has the
  reference's shape, colour, size. The last four are per reference object, so a missed object costs all four;
  a caption outside the grammar gets nothing and is counted as *unparsed*.
- **BLEU-4**: sacreBLEU's corpus BLEU against every reference of each image (a varying number is allowed).
- **CIDEr-D** (Vedantam et al. 2015): pycocoevalcap's scorer — the TF-IDF-weighted n-gram cosine of the caption
  and each reference, n = 1..4, with a Gaussian length penalty (σ = 6) and clipped counts, × 10, averaged; the
  IDF comes from the references of the images scored together. pycocoevalcap normally tokenizes with Stanford's
  Java PTB tokenizer; qkv feeds it text it tokenized itself (`coco_tokenize`: lower case, punctuation removed),
  so no Java is needed. ``pip install 'qkv[caption]'`` installs it.

`caption_attention` reads, for one image, each caption word's cross-attention over the P patches (layer L, the
mean over heads unless a head is given), and `plot_caption_attention` draws it as a grid of panels, one per
word, the weights laid over the image as a heat map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from qkv.data.captioning import CaptionSet, encode_captions
from qkv.data.scenes import ATTRIBUTES, parse_caption
from qkv.errors import QKVError
from qkv.evaluation.matching import exact_match


def attribute_accuracy(hyps: list[str], refs: list[str]) -> dict:
    """Per-attribute accuracy of captions against each scene's one grammar caption (module docstring):
    {"count", "shape", "colour", "size", "position": share 0..1, "unparsed": captions outside the grammar}."""
    hits = dict.fromkeys(ATTRIBUTES, 0)
    objects = unparsed = 0
    for h, r in zip(hyps, refs, strict=True):
        want = parse_caption(r)
        if want is None:
            raise QKVError(f"reference {r!r} is not a caption of the scene grammar")
        got = parse_caption(h)
        objects += len(want)
        if got is None:
            unparsed += 1
            continue
        hits["count"] += len(got) == len(want)
        at = {o.place: o for o in got}
        elsewhere = [g for g in got if g.place not in {o.place for o in want}]  # named at a cell no object is at
        for o in want:
            g = at.get(o.place)
            if g is not None:
                hits["position"] += 1
            elif elsewhere:  # misplaced: its shape, colour and size still count
                g = elsewhere.pop(0)
            else:
                continue
            hits["shape"] += g.shape == o.shape
            hits["colour"] += g.colour == o.colour
            hits["size"] += g.size == o.size
    n = max(1, len(hyps))
    out = {a: hits[a] / (n if a == "count" else max(1, objects)) for a in ATTRIBUTES}
    return out | {"unparsed": unparsed}


def bleu4(hyps: list[str], refs: list[list[str]]) -> dict:
    """sacreBLEU corpus BLEU-4 against every reference: {"score", "signature"}."""
    from sacrebleu.metrics import BLEU

    k = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(k)]  # k streams, None where missing
    metric = BLEU()
    score = metric.corpus_score(hyps, streams)
    return {"score": score.score, "signature": str(metric.get_signature())}


def coco_tokenize(text: str) -> str:
    """Lower case, punctuation removed, words separated by one space (what pycocoevalcap's PTB tokenizer gives
    for plain English captions). Example: ``coco_tokenize("A dog, running.")`` -> ``"a dog running"``."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def cider_d(hyps: list[str], refs: list[list[str]]) -> float:
    """CIDEr-D of the captions (pycocoevalcap's Cider scorer, fed pre-tokenised text), averaged over the images."""
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise QKVError("CIDEr-D needs pycocoevalcap: pip install 'qkv[caption]'") from None
    gts = {i: [coco_tokenize(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [coco_tokenize(h)] for i, h in enumerate(hyps)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def caption_scores(hyps: list[str], refs: list[list[str]], grammar: bool) -> dict:
    """Every figure of one set of captions: exact match, BLEU-4, CIDEr-D and, for grammar captions, the
    per-attribute accuracies."""
    out = {"images": len(hyps), "exact_match": exact_match(hyps, refs), "bleu4": bleu4(hyps, refs),
           "cider_d": cider_d(hyps, refs)}
    if grammar:
        out["attributes"] = attribute_accuracy(hyps, [r[0] for r in refs])
    return out


# ------------------------------------------------------------------------------------------ attention
@dataclass
class CaptionAttention:
    image: Tensor  # (C, H, W) or (F, C, H, W) in [-1, 1]
    words: list[str]  # the caption's tokens, then "<eos>"
    weights: Tensor  # (T, P): row t is where token t's prediction looked, over the P patches
    grid: int  # patches per side of a frame
    frames: int
    caption: str
    title: str


@torch.no_grad()
def caption_attention(model, tok, image: Tensor, caption_ids: list[int], layer: int = -1,
                      head: int | None = None) -> CaptionAttention:
    """Cross-attention of decoder layer `layer` while reading BOS + `caption_ids` teacher-forced over `image`:
    row t is the query that predicts token t (the last one predicts EOS). Mean over heads unless `head`. A caption
    that filled the context without an EOS is read up to the context."""
    cfg = model.config
    L, H = cfg.n_decoder_layers, cfg.n_heads
    if not -L <= layer < L:
        raise QKVError(f"layer {layer} is outside the decoder's {L} layers (0..{L - 1}, or -1 for the last)")
    if head is not None and not 0 <= head < H:
        raise QKVError(f"head {head} is outside the {H} heads (0..{H - 1})")
    if cfg.memory == "pooled":
        raise QKVError("this run's decoder attends to one pooled vector (model.memory = \"pooled\"): there is no map "
                       "over the patches to draw")
    caption_ids = list(caption_ids)[: cfg.max_seq_len - 1]  # BOS + the caption fit the context
    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    x = image[None].to(device)  # (1, C, H, W) or (1, F, C, H, W)
    tgt_in = torch.tensor([[tok.bos_id, *caption_ids]], device=device)  # (1, T)
    maps = model.attention_maps(x, model.memory_mask(1, device), tgt_in)["cross"][layer][0]  # (H, T, P)
    model.train(was_training)
    w = maps.mean(0) if head is None else maps[head]  # (T, P)
    words = [tok.decode([i]).strip() or tok.id_to_token(i) for i in caption_ids] + ["<eos>"]
    which = f"layer {layer % L}, " + ("mean of heads" if head is None else f"head {head}")
    return CaptionAttention(image.cpu(), words, w.float().cpu(), cfg.grid, cfg.frames, tok.decode(caption_ids),
                            f"cross-attention over the patches ({which})")


def plot_caption_attention(att: CaptionAttention, path: str | Path, columns: int = 6) -> tuple[Path, tuple[int, int]]:
    """A grid of panels: the image, then one per caption word with its attention over the patches laid over it
    (brighter = more weight; each panel scaled to its own maximum). Clips show their frames side by side.
    -> (path, (columns, rows) of panels)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qkv.runs import atomic_write_bytes

    frames = att.image if att.image.dim() == 4 else att.image[None]  # (F, C, H, W)
    picture = ((torch.cat(list(frames), dim=-1).clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()  # (H, F·W, C)
    if picture.shape[-1] == 1:
        picture = picture[..., 0]
    F, g = att.frames, att.grid
    panels = len(att.words) + 1
    cols = min(columns, panels)
    rows = (panels + cols - 1) // cols
    aspect = F  # width / height of a panel
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9 * aspect, rows * 2.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    axes[0, 0].set_title("image", fontsize=9)
    Hh, Ww = picture.shape[:2]
    for k, (word, w) in enumerate(zip(att.words, att.weights, strict=True), start=1):
        ax = axes.flat[k]
        heat = w.view(F, g, g).permute(1, 0, 2).reshape(g, F * g).numpy()  # (g, F·g): frames side by side
        ax.imshow(picture * 0.45, cmap="gray" if picture.ndim == 2 else None)
        ax.imshow(heat / max(float(heat.max()), 1e-12), cmap="inferno", alpha=0.7, extent=(0, Ww, Hh, 0),
                  interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(f"{word}  ({float(w.max()):.2f})", fontsize=9)
    fig.suptitle(f"{att.caption!r}\n{att.title}; each panel: where the decoder looked while writing that word "
                 "(its peak weight)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path, (cols, rows)


def attention_table(att: CaptionAttention) -> list[str]:
    """One line per word: where its attention peaks (frame, row, column of the patch) and the weight there."""
    F, g = att.frames, att.grid
    out = []
    for word, w in zip(att.words, att.weights, strict=True):
        k = int(w.argmax())
        f, rest = divmod(k, g * g)
        r, c = divmod(rest, g)
        where = f"frame {f}, " if F > 1 else ""
        out.append(f"  {word:<10} peak at {where}patch row {r}, column {c} ({float(w[k]):.2f}); "
                   f"top-4 patches hold {float(w.topk(min(4, len(w))).values.sum()):.2f}")
    return out


@torch.no_grad()
def caption_loss(model, tok, data: CaptionSet, batch_size: int = 128) -> float:
    """Teacher-forced NLL per caption token of every (image, reference) pair of `data`."""
    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    pairs = [(i, r) for i, refs in enumerate(data.refs) for r in refs]
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        tgt_in, tgt_out = encode_captions(tok, [r for _, r in chunk], model.config.max_seq_len, tok.pad_id,
                                          tok.bos_id, tok.eos_id)
        logits = model(data.images[[i for i, _ in chunk]].to(device), None, tgt_in.to(device)).logits
        total += torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt_out.to(device).flatten(),
                                                   ignore_index=-100, reduction="sum").item()
        count += int((tgt_out != -100).sum())
    model.train(was_training)
    return total / max(1, count)
