"""Image datasets for diffusion: scikit-learn's digits, procedurally rendered shapes, or a folder of images.

Every source gives float32 images in [-1, 1] of shape (N, C, H, W), integer class labels and class names;
``shapes`` also gives a caption per image and its (shape, colour, position) attribute ids.

- ``digits``: ``sklearn.datasets.load_digits``, 1,797 greyscale 8×8 handwritten digits (UCI), ten classes,
  bundled with scikit-learn (no download). Pixel values 0 … 16 map to [-1, 1] by v / 8 − 1.
- ``shapes``: 32×32 RGB images qkv renders itself: one circle, square or triangle in red, green, blue or
  yellow, in one of the four quadrants, on black, with jittered size and position. Caption:
  ``"a red circle at the top left"``. 3 × 4 × 4 = 48 classes (label = combination index). The same
  ``seed`` gives the same images, so text-to-image prompt adherence can be measured against known answers.
- a folder path: ``ROOT/<class name>/<image files>`` (png, jpg, jpeg, bmp, gif, webp); class names are
  the sub-folder names in sorted order. Images of any size are **resized** to ``image_size`` × ``image_size``
  (default 32) with bicubic resampling — the aspect ratio is not preserved; crop beforehand if it matters.
  RGB unless ``channels = 1``. An empty folder or an unreadable image is an error naming the path.

``image_size`` resizes any source (e.g. digits to 16×16); by default each keeps its native size.
The train/validation split is a seeded random permutation (``val_fraction`` of the images validate).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.data.batching import GeneratorBatches
from qkv.errors import QKVError

BUILTIN = ("digits", "shapes")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (1.0, 0.15, 0.15), "green": (0.15, 0.9, 0.15), "blue": (0.2, 0.35, 1.0), "yellow": (1.0, 0.9, 0.1)}
POSITIONS = ("top left", "top right", "bottom left", "bottom right")


@dataclass
class ImageDataConfig:
    source: str = "digits"  # "digits", "shapes", or a folder with one sub-folder of images per class
    image_size: int | None = None  # resize to this (square); default: native (digits 8, shapes 32, folders 32)
    channels: int | None = None  # folders only: 1 (grey) or 3 (RGB, the default)
    val_fraction: float = 0.1  # share of the images held out for validation and evaluation
    seed: int = 0  # the split (and the shapes rendering)
    shapes_n: int = 12000  # shapes: how many images to render
    tokenizer: Literal["char", "bpe"] = "char"  # text conditioning: how captions become ids
    vocab_size: int = 300  # bpe only: the caption vocabulary (256 bytes + 4 specials + merges)

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.image_size is not None and not 4 <= self.image_size <= 256:
            raise ValueError(f"image_size must be in [4, 256], got {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.shapes_n < 10:
            raise ValueError(f"shapes_n must be at least 10, got {self.shapes_n}")


@dataclass
class ImageSet:
    images: Tensor  # (N, C, H, W) float32 in [-1, 1]
    labels: Tensor  # (N,) int64 class ids
    class_names: list[str]
    captions: list[str] | None = None  # shapes only
    attributes: Tensor | None = None  # shapes only: (N, 3) ids of (shape, colour, position)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.size(0)

    def subset(self, index: Tensor) -> ImageSet:
        caps = [self.captions[i] for i in index.tolist()] if self.captions is not None else None
        attrs = self.attributes[index] if self.attributes is not None else None
        return ImageSet(self.images[index], self.labels[index], self.class_names, caps, attrs, self.meta)


# ------------------------------------------------------------------------------------------ digits
def load_digits_set() -> ImageSet:
    """The 1,797 8×8 digits as (N, 1, 8, 8) in [-1, 1] with labels 0 … 9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0)[:, None]  # (N, 1, 8, 8)
    return ImageSet(images, torch.from_numpy(d.target.astype(np.int64)), [str(i) for i in range(10)])


# ------------------------------------------------------------------------------------------ shapes
def shape_caption(shape: int, colour: int, position: int) -> str:
    """Example: ``shape_caption(0, 0, 0)`` -> ``"a red circle at the top left"``."""
    return f"a {list(COLOURS)[colour]} {SHAPES[shape]} at the {POSITIONS[position]}"


def parse_caption(text: str) -> tuple[int, int, int] | None:
    """The (shape, colour, position) ids a caption names, or None if it is not a shapes caption."""
    words = text.strip().lower().split()
    if len(words) < 6 or words[0] not in ("a", "an") or words[3:5] != ["at", "the"]:
        return None
    colour, shape, position = words[1], words[2], " ".join(words[5:])
    if colour not in COLOURS or shape not in SHAPES or position not in POSITIONS:
        return None
    return SHAPES.index(shape), list(COLOURS).index(colour), POSITIONS.index(position)


def render_shape(shape: int, colour: int, position: int, size: int = 32, rng: np.random.Generator | None = None,
                 supersample: int = 2) -> np.ndarray:
    """One (3, size, size) float32 image in [0, 1]: the shape in its quadrant, jittered by `rng`.

    Drawn on a `supersample`× finer grid and box-filtered down, so edges are anti-aliased.
    """
    rng = rng or np.random.default_rng(0)
    s = size * supersample
    q = size / 4  # quadrant centres at 1/4 and 3/4 of the side
    cx = (3 * q if position in (1, 3) else q) + rng.uniform(-q / 4, q / 4)
    cy = (3 * q if position in (2, 3) else q) + rng.uniform(-q / 4, q / 4)
    r = rng.uniform(0.18, 0.24) * size  # half-extent of the shape
    yy, xx = (np.mgrid[0:s, 0:s].astype(np.float32) + 0.5) / supersample  # pixel centres in image units
    if SHAPES[shape] == "circle":
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    elif SHAPES[shape] == "square":
        h = r * 0.85
        inside = (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    else:  # triangle pointing up: apex (cx, cy − r), base from (cx − r, cy + r) to (cx + r, cy + r)
        inside = (yy <= cy + r) & (2 * np.abs(xx - cx) <= (yy - (cy - r)))
    mask = inside.astype(np.float32).reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    rgb = np.asarray(COLOURS[list(COLOURS)[colour]], dtype=np.float32) * rng.uniform(0.85, 1.0)
    return mask[None] * rgb[:, None, None]  # (3, size, size)


def render_shapes(n: int, seed: int = 0, size: int = 32) -> ImageSet:
    """`n` random shapes images (uniform over the 48 combinations) with captions; the same seed, the same set."""
    rng = np.random.default_rng(seed)
    attrs = np.stack([rng.integers(0, len(SHAPES), n), rng.integers(0, len(COLOURS), n),
                      rng.integers(0, len(POSITIONS), n)], axis=1)  # (n, 3)
    images = np.stack([render_shape(*a, size=size, rng=rng) for a in attrs])  # (n, 3, H, W)
    labels = attrs[:, 0] * 16 + attrs[:, 1] * 4 + attrs[:, 2]
    names = [shape_caption(s, c, p)[2:] for s in range(3) for c in range(4) for p in range(4)]
    return ImageSet(torch.from_numpy(images * 2 - 1), torch.from_numpy(labels.astype(np.int64)), names,
                    [shape_caption(*a) for a in attrs], torch.from_numpy(attrs.astype(np.int64)))


# ------------------------------------------------------------------------------------------ folders
def load_folder(root: str | Path, size: int = 32, channels: int = 3) -> ImageSet:
    """Images under ``root/<class>/``, resized to size × size; QKVError on an empty or unreadable folder."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise QKVError(f"image data: {root} is neither a dataset name ({', '.join(BUILTIN)}) nor a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {c: sorted(f for f in (root / c).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    classes = [c for c in classes if files[c]]
    if not classes:
        raise QKVError(f"{root}: no images found; expected {root}/<class name>/<image>.png (or .jpg, ...)")
    images, labels, sizes = [], [], set()
    for label, c in enumerate(classes):
        for f in files[c]:
            try:
                with Image.open(f) as im:
                    sizes.add(im.size)
                    im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BICUBIC)
                    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
            except (UnidentifiedImageError, OSError) as e:
                raise QKVError(f"{f}: not a readable image ({e})") from None
            images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            labels.append(label)
    meta = {"original_sizes": sorted(f"{w}x{h}" for w, h in sizes)[:10], "resized_to": size}
    return ImageSet(torch.from_numpy(np.stack(images)).clamp(-1, 1), torch.tensor(labels), classes, meta=meta)


# ------------------------------------------------------------------------------------------ entry point
def load_images(cfg: ImageDataConfig) -> tuple[ImageSet, ImageSet]:
    """(train, val) of the configured source, resized if asked, split by a seeded permutation."""
    if cfg.source == "digits":
        data = load_digits_set()
    elif cfg.source == "shapes":
        data = render_shapes(cfg.shapes_n, cfg.seed)
    else:
        data = load_folder(cfg.source, cfg.image_size or 32, cfg.channels or 3)
    if cfg.source in BUILTIN and cfg.channels not in (None, data.images.size(1)):
        raise QKVError(f"data.channels: {cfg.source} images have {data.images.size(1)} channel(s)")
    if cfg.image_size is not None and cfg.image_size != data.images.size(-1):
        data.images = resize(data.images, cfg.image_size)
    n = len(data)
    n_val = max(1, round(n * cfg.val_fraction))
    if n - n_val < 1:
        raise QKVError(f"{cfg.source}: {n} image(s) are too few to split into training and validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    return data.subset(perm[n_val:]), data.subset(perm[:n_val])


def resize(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size), bicubic with antialiasing, clamped to [-1, 1]."""
    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


def png_bytes(image: Tensor) -> bytes:
    """(C, H, W) in [-1, 1], or a clip (F, C, H, W) shown as its frames side by side -> PNG bytes (grey for
    1 channel)."""
    from PIL import Image

    if image.dim() == 4:
        image = torch.cat(list(image), dim=-1)  # (C, H, F·W)
    x = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()  # (C, H, W)
    arr = x[0].numpy() if x.size(0) == 1 else x.permute(1, 2, 0).numpy()  # (H, W) or (H, W, C)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(image: Tensor) -> str:
    """An image or a clip (`png_bytes`) as a ``data:image/png;base64,...`` URL: how a page or a rater's task
    shows an image."""
    import base64

    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8 in [0, 255]."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None,
              pad: int = 1) -> tuple[int, int]:
    """Write (N, C, H, W) images in [-1, 1] as one PNG grid (nrow per row; default ≈ √N) -> (width, height).

    Small images are enlarged by nearest-neighbour `scale` (default: to about 64 pixels per cell) so an
    8×8 digit stays visible. Rows × columns follow the input order.
    """
    from PIL import Image

    from qkv.runs import atomic_write_bytes

    n, c, h, w = images.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    ncol_rows = int(np.ceil(n / nrow))
    scale = scale or max(1, 64 // max(h, w))
    cells = to_uint8(images)  # (N, H, W, C)
    H, W = h * scale + pad, w * scale + pad
    grid = np.full((ncol_rows * H + pad, nrow * W + pad, c), 40, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        cell = cells[i].repeat(scale, axis=0).repeat(scale, axis=1)
        grid[pad + r * H : pad + r * H + h * scale, pad + col * W : pad + col * W + w * scale] = cell
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)  # mode L or RGB from the array's shape
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
    return img.size


# ------------------------------------------------------------------------------------------ batches
class ImageBatches(GeneratorBatches):
    """Random batches (with replacement) of images and their condition, from one seeded generator.

    next_batch() -> {"images": (B, C, H, W), + "labels" (B,) or "text"/"text_mask" (B, S), + with
    `n_timesteps`, the diffusion draws "t" (B,), "noise" (B, C, H, W) and, with `cond_dropout`, "cond_drop" (B,)}
    (`qkv.data.batch`). The whole global batch, its randomness included, is drawn from the generator and each
    DDP rank keeps its rows, so N processes train on exactly what one would; the generator's state is the data
    position, for exact resume.
    """

    def __init__(self, images: Tensor, cond: dict, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 n_timesteps: int | None = None, cond_dropout: float = 0.0):
        if batch_size % world_size:
            raise QKVError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.images, self.cond, self.batch_size = images, cond, batch_size
        self.rank, self.world_size, self.n_timesteps, self.cond_dropout = rank, world_size, n_timesteps, cond_dropout
        self._start(seed)

    def next_batch(self) -> dict:
        g, B = self.generator, self.batch_size
        idx = torch.randint(self.images.size(0), (B,), generator=g)
        batch = {"images": self.images[idx], **{k: v[idx] for k, v in self.cond.items()}}
        if self.n_timesteps is not None:
            batch["t"] = torch.randint(0, self.n_timesteps, (B,), generator=g)
            batch["noise"] = torch.randn(batch["images"].shape, generator=g, dtype=batch["images"].dtype)
            if self.cond and self.cond_dropout > 0:  # which images train unconditionally (classifier-free guidance)
                batch["cond_drop"] = torch.rand(B, generator=g) < self.cond_dropout
        share = B // self.world_size
        return {k: v[self.rank * share : (self.rank + 1) * share] for k, v in batch.items()}  # this rank's rows

