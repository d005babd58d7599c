"""Captioning data: procedural scenes and clips (`qkv.data.scenes`), or a folder of images with ``captions.jsonl``.

- ``source = "shapes"``: scenes of one to three objects, drawn fresh for every training example from the batch
  source's generator (an endless stream: no scene is seen twice), minus the held-out compositions.
- ``source = "clips"``: clips of ``frames`` frames, one object moving across.
- a folder: ``captions.jsonl`` with one line per image, ``{"image": "a.png", "captions": ["...", "..."]}`` (the
  image path relative to the folder; one or more references). Images of any size are resized to
  ``image_size`` × ``image_size`` (bicubic; the aspect ratio is not kept). A seeded ``val_fraction`` of the
  images validates. Training draws one of an image's references at random each time it is drawn.

Bad input is a one-line QKVError naming the file and line: a missing or empty ``captions.jsonl``, a line that
is not JSON or lacks ``image``/``captions``, a missing image, a file that is not a readable image, an empty
caption.

Batches (`CaptionBatches`): ``images`` (B, C, H, W) or (B, F, C, H, W) in [-1, 1], ``tgt_in`` (B, T) = BOS + the
caption's ids, ``tgt_out`` (B, T) = the ids + EOS with -100 at padding (`qkv.data.batch`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from qkv.data.batching import GeneratorBatches
from qkv.data.files import decode_text
from qkv.data.scenes import SceneSpec, describe, draw_objects, draw_scenes, render
from qkv.errors import QKVError

PROCEDURAL = ("shapes", "clips")
CAPTIONS_FILE = "captions.jsonl"


@dataclass
class CaptionDataConfig:
    source: str = "shapes"  # "shapes", "clips", or a folder holding captions.jsonl and its images
    image_size: int = 64  # pixels per side; every image is drawn (or resized) to this
    channels: int = 3  # folders: 1 (grey) or 3 (RGB)
    frames: int = 4  # clips: frames per clip
    counts: list[int] = field(default_factory=lambda: [1, 2, 3])  # shapes: object counts training draws
    holdout_pairs: list[str] = field(default_factory=lambda: ["red triangle", "green diamond", "blue circle"])
    holdout_counts: list[int] = field(default_factory=lambda: [4])  # shapes: counts only the test set has
    val_scenes: int = 256  # procedural: validation scenes scored during training
    test_scenes: int = 200  # procedural: scenes per test group of `qkv eval`
    val_fraction: float = 0.1  # folders: share of the images that validate
    tokenizer: Literal["bpe", "char"] = "bpe"  # how captions become ids (a BPE of this size learns whole words)
    vocab_size: int = 400
    seed: int = 0  # the validation and test scenes, the folder split

    def __post_init__(self):
        if not 8 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [8, 512], got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("val_scenes", "test_scenes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.source in PROCEDURAL:
            self.scene_spec()  # validates counts, pairs and frames

    @property
    def procedural(self) -> bool:
        return self.source in PROCEDURAL

    def scene_spec(self) -> SceneSpec:
        """The scenes (or clips) this config draws; ValueError if its settings do not fit together."""
        if self.source == "clips":
            return SceneSpec(self.image_size, [1], self.holdout_pairs, [], self.frames)
        return SceneSpec(self.image_size, list(self.counts), list(self.holdout_pairs), list(self.holdout_counts))

    @property
    def input_frames(self) -> int:
        return self.frames if self.source == "clips" else 1


@dataclass
class CaptionSet:
    """Images with their reference captions (one or more each)."""

    images: Tensor  # (N, C, H, W) or (N, F, C, H, W), float32 in [-1, 1]
    refs: list[list[str]]  # the references of each image
    names: list[str]  # each image's file name, or "scene 17"

    def __len__(self) -> int:
        return self.images.size(0)

    def subset(self, index: list[int]) -> CaptionSet:
        return CaptionSet(self.images[index], [self.refs[i] for i in index], [self.names[i] for i in index])


# ------------------------------------------------------------------------------------------ images
def _open(path: str | Path | bytes, channels: int, size: tuple[int, int] | None = None
          ) -> tuple[np.ndarray, tuple[int, int]]:
    """(C, h, w) float32 in [-1, 1] of an image file (or its bytes: an upload), resized (bicubic) to size = (w, h) if
    given, and its original (width, height). QKVError if the file is missing or not a readable image."""
    import io

    from PIL import Image, UnidentifiedImageError

    if isinstance(path, bytes):
        where, source = "the image", io.BytesIO(path)
    else:
        path = where = source = Path(path)
        if not path.is_file():
            raise QKVError(f"{path}: no such image file")
    try:
        with Image.open(source) as im:
            original = im.size
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise QKVError(f"{where}: not a readable image ({type(e).__name__}: {e})") from None
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)  # (C, h, w)
    return np.clip(np.ascontiguousarray(arr), -1, 1), original


def read_image(path: str | Path | bytes, size: int, channels: int = 3) -> tuple[Tensor, tuple[int, int]]:
    """One image file -> ((C, size, size) float32 in [-1, 1], its original (width, height)).

    Any size is resized (bicubic; the aspect ratio is not kept). QKVError if it is missing or unreadable."""
    arr, original = _open(path, channels, (size, size))
    return torch.from_numpy(arr), original


def read_clip(path: str | Path | bytes, frames: int, size: int, channels: int = 3) -> tuple[Tensor, tuple[int, int]]:
    """A clip stored as one strip of `frames` square frames side by side (what `write_image` writes for a clip)
    -> ((F, C, size, size) in [-1, 1], the strip's (width, height)). QKVError if the strip is not F·H × H."""
    arr, (w, h) = _open(path, channels)
    if w != frames * h:
        where = "the image" if isinstance(path, bytes) else path
        raise QKVError(f"{where}: a clip is a strip of {frames} square frames side by side ({frames}·H × H pixels); "
                       f"this image is {w} × {h}")
    C = arr.shape[0]
    clip = torch.from_numpy(arr).view(C, h, frames, h).permute(2, 0, 1, 3)  # (F, C, h, h)
    if h != size:
        clip = torch.nn.functional.interpolate(clip, size=(size, size), mode="bicubic", antialias=True,
                                               align_corners=False).clamp(-1, 1)  # (F, C, size, size)
    return clip.contiguous(), (w, h)


def write_image(images: Tensor, path: str | Path) -> None:
    """Write one image (C, H, W), or one clip (F, C, H, W) as a strip of its frames side by side, as a PNG."""
    from qkv.data.images import save_grid

    frames = images if images.dim() == 4 else images[None]
    save_grid(frames, path, nrow=len(frames), scale=1, pad=0)


# ------------------------------------------------------------------------------------------ folders
def load_caption_folder(root: str | Path, size: int, channels: int = 3) -> CaptionSet:
    """The images and references that ``root/captions.jsonl`` lists, resized to size × size."""
    root = Path(root)
    if not root.is_dir():
        raise QKVError(f"caption data: {root} is neither {' nor '.join(PROCEDURAL)} nor a folder")
    index = root / CAPTIONS_FILE
    if not index.is_file():
        raise QKVError(f"{root}: no {CAPTIONS_FILE}; expected one line per image: "
                       '{"image": "a.png", "captions": ["a caption", "another"]}')
    raw = index.read_bytes()
    if not raw.strip():
        raise QKVError(f"{index}: no images listed (the file is empty)")
    text = decode_text(raw, index)  # binary, not UTF-8: one-line errors, as for every text file
    images, refs, names = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{index}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise QKVError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or "captions" not in row:
            raise QKVError(f'{where}: expected {{"image": "file.png", "captions": ["...", ...]}}')
        caps = row["captions"]
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise QKVError(f"{where}: captions must be a non-empty list of strings")
        caps = [" ".join(c.split()) for c in caps]
        if any(not c for c in caps):
            raise QKVError(f"{where}: an empty caption for {row['image']}")
        path = root / row["image"]
        if not path.is_file():
            raise QKVError(f"{where}: the image {row['image']} does not exist ({path})")
        images.append(read_image(path, size, channels)[0])
        refs.append(caps)
        names.append(row["image"])
    return CaptionSet(torch.stack(images), refs, names)


def split_folder(data: CaptionSet, val_fraction: float, seed: int) -> tuple[CaptionSet, CaptionSet]:
    """(train, val): a seeded permutation; at least one image in each."""
    n = len(data)
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise QKVError(f"{n} captioned image(s) are too few to split into training and validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return data.subset(perm[n_val:]), data.subset(perm[:n_val])


# ------------------------------------------------------------------------------------------ procedural sets
def procedural_set(spec: SceneSpec, n: int, seed: list[int], counts: list[int] | None = None,
                   pairs: str = "seen") -> CaptionSet:
    """`n` rendered scenes (or clips) with their one caption each."""
    images, captions, _ = draw_scenes(spec, n, seed, counts, pairs)
    return CaptionSet(torch.from_numpy(images), [[c] for c in captions], [f"scene {i}" for i in range(n)])


# ------------------------------------------------------------------------------------------ batches
def encode_captions(tok, captions: list[str], max_len: int, pad: int, bos: int, eos: int,
                    where: str = "caption") -> tuple[Tensor, Tensor]:
    """Captions -> (tgt_in (B, T) = BOS + ids, padded; tgt_out (B, T) = ids + EOS, -100 at padding).
    QKVError if a caption needs more than `max_len` positions (its BOS or EOS included)."""
    rows = [tok.encode(c) for c in captions]
    T = max(len(r) for r in rows) + 1
    if T > max_len:
        long = max(range(len(rows)), key=lambda i: len(rows[i]))
        raise QKVError(f"{where} {captions[long]!r} is {len(rows[long]) + 1} tokens with its EOS; the model takes at "
                       f"most {max_len} (model.max_seq_len)")
    tgt_in = torch.full((len(rows), T), pad, dtype=torch.long)
    tgt_out = torch.full((len(rows), T), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        tgt_in[i, : len(r) + 1] = torch.tensor([bos, *r])
        tgt_out[i, : len(r) + 1] = torch.tensor([*r, eos])
    return tgt_in, tgt_out


class CaptionBatches(GeneratorBatches):
    """Random (image, caption) batches from one seeded generator; each DDP rank keeps its rows of the global batch.

    Procedural data (`spec` given): every row is a fresh scene, drawn from a seed taken from the generator, so the
    stream is endless and the generator's state is the data position (exact resume). A folder (`data` given): rows
    are images drawn with replacement, each with one of its references at random.
    """

    def __init__(self, tok, max_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 spec: SceneSpec | None = None, data: CaptionSet | None = None):
        if batch_size % world_size:
            raise QKVError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        if (spec is None) == (data is None):
            raise ValueError("give a scene spec or a caption set")
        self.tok, self.max_len, self.batch_size = tok, max_len, batch_size
        self.rank, self.world_size, self.spec, self.data = rank, world_size, spec, data
        self.pad, self.bos, self.eos = tok.pad_id, tok.bos_id, tok.eos_id
        self._start(seed)

    def next_batch(self) -> dict:
        g, B = self.generator, self.batch_size
        share = B // self.world_size
        mine = slice(self.rank * share, (self.rank + 1) * share)
        if self.spec is not None:
            seeds = torch.randint(0, 2**62, (B,), generator=g)[mine].tolist()  # (B,) drawn for all, kept for mine
            images, captions = [], []
            for s in seeds:
                rng = np.random.default_rng(s)
                objs = draw_objects(self.spec, int(self.spec.counts[rng.integers(0, len(self.spec.counts))]), rng)
                images.append(render(objs, self.spec, rng))
                captions.append(describe(objs))
            images = torch.from_numpy(np.stack(images))
        else:
            idx = torch.randint(len(self.data), (B,), generator=g)  # (B,)
            pick = torch.randint(0, 2**31 - 1, (B,), generator=g)  # which reference of each
            idx, pick = idx[mine].tolist(), pick[mine].tolist()
            images = self.data.images[idx]
            captions = [self.data.refs[i][p % len(self.data.refs[i])] for i, p in zip(idx, pick, strict=True)]
        tgt_in, tgt_out = encode_captions(self.tok, captions, self.max_len, self.pad, self.bos, self.eos)
        return {"images": images, "tgt_in": tgt_in, "tgt_out": tgt_out}
