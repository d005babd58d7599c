"""Procedural scenes and clips for captioning: shapes qkv draws itself, with the one caption a small grammar gives.

A **scene** is one to four objects on a 3 × 3 grid of cells, at most one per cell. An object is a size, a
colour, a shape and a cell; its phrase reads "a small red circle at the top left". The caption names the
objects in reading order of their cells (top row first, left to right) and joins them like a list:

    1 object    "a large blue square in the centre"
    2 objects   "a small red circle at the top left and a large green diamond on the right"
    3 objects   "a small red circle at the top left, a large yellow triangle at the top and a small blue square
                 at the bottom right"

so every scene has exactly one caption, and `parse_caption` reads any caption of the grammar back into its
objects (``parse_caption(describe(scene)) == scene``'s objects). That is what makes exact match and
per-attribute accuracy (count, shape, colour, size, position) measurable.

A **clip** is T frames of one object moving in a straight line across the image; its caption names the object
and the direction: "a small red circle moves from left to right". Left-to-right and right-to-left clips hold the
same frames in reverse order, so only the frames' temporal positions tell them apart.

**Held-out compositions.** `SceneSpec.holdout_pairs` names colour–shape pairs (e.g. "red triangle") that training
never shows: every colour and every shape is still seen, only not together. `SceneSpec.holdout_counts` names
object counts training never shows. The test sets (`caption_test_sets`) report seen and held-out compositions
apart.

Rendering: each object is drawn on a 2× finer grid and box-filtered down (anti-aliased edges), with its centre
jittered inside its cell, its size jittered within its size class and its brightness jittered, on black. The
images are float32 in [-1, 1], (N, 3, S, S) for scenes and (N, T, 3, S, S) for clips. The same seed draws the
same scenes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (1.0, 0.15, 0.15), "green": (0.15, 0.85, 0.15), "blue": (0.2, 0.35, 1.0),
           "yellow": (1.0, 0.9, 0.1)}
SIZES = {"small": (0.16, 0.19), "large": (0.25, 0.3)}  # half-extent as a fraction of a cell's side
# the nine cells in reading order, and how a caption places an object in each
PLACES = ("at the top left", "at the top", "at the top right", "on the left", "in the centre", "on the right",
          "at the bottom left", "at the bottom", "at the bottom right")
DIRECTIONS = ("from left to right", "from right to left", "from top to bottom", "from bottom to top")
ATTRIBUTES = ("count", "shape", "colour", "size", "position")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    place: str  # a phrase of PLACES (scenes) or DIRECTIONS (clips: where it moves)

    def phrase(self) -> str:
        """Example: ``SceneObject("circle", "red", "small", "at the top left").phrase()`` ->
        ``"a small red circle at the top left"``; a clip's object ``"a small red circle moves from left to right"``."""
        verb = "moves " if self.place in DIRECTIONS else ""
        return f"a {self.size} {self.colour} {self.shape} {verb}{self.place}"

    @property
    def pair(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class SceneSpec:
    """What scenes to draw. The defaults are the shapes-caption preset's."""

    image_size: int = 64  # pixels per side (divisible by 3 is not needed: cells are fractional)
    counts: list[int] = field(default_factory=lambda: [1, 2, 3])  # object counts training draws, uniformly
    holdout_pairs: list[str] = field(default_factory=lambda: ["red triangle", "green diamond", "blue circle"])
    holdout_counts: list[int] = field(default_factory=lambda: [4])  # counts only the held-out test set has
    frames: int = 1  # > 1: clips of this many frames, one moving object each (counts must be [1])

    def __post_init__(self):
        if not 16 <= self.image_size <= 256:
            raise ValueError(f"image_size must be in [16, 256], got {self.image_size}")
        for name in ("counts", "holdout_counts"):
            for c in getattr(self, name):
                if not 1 <= c <= len(PLACES):
                    raise ValueError(f"{name}: a scene holds 1 to {len(PLACES)} objects, got {c}")
        if not self.counts:
            raise ValueError("counts must name at least one object count")
        if set(self.counts) & set(self.holdout_counts):
            raise ValueError(f"counts {self.counts} and holdout_counts {self.holdout_counts} overlap")
        pairs = {f"{c} {s}" for c in COLOURS for s in SHAPES}
        for p in self.holdout_pairs:
            if p not in pairs:
                raise ValueError(f"holdout_pairs: unknown colour–shape pair {p!r}; e.g. 'red triangle' "
                                 f"(colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)})")
        if len(set(self.holdout_pairs)) >= len(pairs):
            raise ValueError("holdout_pairs holds out every colour–shape pair; training would have none")
        if self.frames < 1 or self.frames > 16:
            raise ValueError(f"frames must be in [1, 16], got {self.frames}")
        if self.frames > 1 and (self.counts != [1] or self.holdout_counts):
            raise ValueError("clips (frames > 1) hold one moving object: set counts = [1] and holdout_counts = []")


# ------------------------------------------------------------------------------------------ the grammar
def describe(objects: list[SceneObject]) -> str:
    """The caption of a scene: its objects' phrases in reading order of their cells, joined like a list."""
    objs = sorted(objects, key=_order)
    phrases = [o.phrase() for o in objs]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _order(o: SceneObject) -> int:
    return PLACES.index(o.place) if o.place in PLACES else DIRECTIONS.index(o.place)


def parse_caption(text: str) -> list[SceneObject] | None:
    """The objects a caption of the grammar names, in its order; None if it is not such a caption.

    Example: ``parse_caption("a small red circle at the top left and a large blue square on the right")``
    -> ``[SceneObject("circle", "red", "small", "at the top left"), SceneObject("square", "blue", "large",
    "on the right")]``.
    """
    words = text.strip().lower().replace(",", " , ").split()
    parts, cur = [], []
    for w in words:  # split at "," and "and": neither occurs inside an object's phrase
        if w in (",", "and"):
            parts.append(cur)
            cur = []
        else:
            cur.append(w)
    parts.append(cur)
    objects = []
    for p in parts:
        if len(p) < 5 or p[0] != "a" or p[1] not in SIZES or p[2] not in COLOURS or p[3] not in SHAPES:
            return None
        moves = p[4] == "moves"  # a clip's object: "moves" and a direction; a scene's: a place
        place = " ".join(p[5:] if moves else p[4:])
        if place not in (DIRECTIONS if moves else PLACES):
            return None
        objects.append(SceneObject(p[3], p[2], p[1], place))
    return objects


# ------------------------------------------------------------------------------------------ drawing
def _mask(shape: str, cx: float, cy: float, r: float, box: tuple[int, int, int, int],
          supersample: int = 2) -> np.ndarray:
    """Coverage in [0, 1] of one shape centred at (cx, cy) with half-extent r (pixels), over the pixels
    box = (y0, y1, x0, x1) of the image: (y1 − y0, x1 − x0)."""
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[0 : (y1 - y0) * supersample, 0 : (x1 - x0) * supersample].astype(np.float32)
    dx, dy = (xx + 0.5) / supersample + x0 - cx, (yy + 0.5) / supersample + y0 - cy  # from the centre, in pixels
    if shape == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif shape == "square":
        inside = (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    elif shape == "diamond":
        inside = np.abs(dx) + np.abs(dy) <= 1.15 * r
    else:  # triangle pointing up: apex (cx, cy − r), base from (cx − r, cy + r) to (cx + r, cy + r)
        inside = (dy <= r) & (2 * np.abs(dx) <= dy + r)
    h, w = y1 - y0, x1 - x0
    return inside.astype(np.float32).reshape(h, supersample, w, supersample).mean(axis=(1, 3))  # (h, w)


def _draw(canvas: np.ndarray, o: SceneObject, cx: float, cy: float, r: float, shade: float) -> None:
    """Paint object `o` onto canvas (3, S, S) in [0, 1], over what is there (only the pixels near it are touched)."""
    S = canvas.shape[-1]
    reach = 1.2 * r + 1
    y0, y1 = max(0, int(cy - reach)), min(S, int(np.ceil(cy + reach)))
    x0, x1 = max(0, int(cx - reach)), min(S, int(np.ceil(cx + reach)))
    if y1 <= y0 or x1 <= x0:
        return
    m = _mask(o.shape, cx, cy, r, (y0, y1, x0, x1))[None]  # (1, h, w)
    rgb = np.asarray(COLOURS[o.colour], dtype=np.float32)[:, None, None] * shade  # (3, 1, 1)
    window = canvas[:, y0:y1, x0:x1]  # (3, h, w), a view
    window *= 1 - m
    window += m * rgb


def render_scene(objects: list[SceneObject], size: int, rng: np.random.Generator) -> np.ndarray:
    """(3, size, size) float32 in [-1, 1]: each object in its cell, jittered by `rng`."""
    canvas = np.zeros((3, size, size), dtype=np.float32)
    cell = size / 3
    for o in objects:
        row, col = divmod(PLACES.index(o.place), 3)
        r = rng.uniform(*SIZES[o.size]) * cell * 1.5
        slack = max(0.0, cell / 2 - r)  # the centre moves so that the shape stays inside its cell
        cx = (col + 0.5) * cell + rng.uniform(-slack, slack) * 0.6
        cy = (row + 0.5) * cell + rng.uniform(-slack, slack) * 0.6
        _draw(canvas, o, cx, cy, r, rng.uniform(0.8, 1.0))
    return canvas * 2 - 1


def render_clip(obj: SceneObject, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, 3, size, size) float32 in [-1, 1]: `obj` crossing the image in its direction, evenly in time."""
    r = rng.uniform(*SIZES[obj.size]) * size / 3 * 1.5
    lo, hi = r + 1, size - r - 1
    across = rng.uniform(lo, hi)  # the row (or column) it travels along
    start, end = {"from left to right": (lo, hi), "from right to left": (hi, lo),
                  "from top to bottom": (lo, hi), "from bottom to top": (hi, lo)}[obj.place]
    shade = rng.uniform(0.8, 1.0)
    out = np.zeros((frames, 3, size, size), dtype=np.float32)
    for k in range(frames):
        along = start + (end - start) * k / (frames - 1)
        cx, cy = (along, across) if obj.place in DIRECTIONS[:2] else (across, along)
        _draw(out[k], obj, cx, cy, r, shade)
    return out * 2 - 1


# ------------------------------------------------------------------------------------------ drawing scenes
def draw_objects(spec: SceneSpec, count: int, rng: np.random.Generator, pairs: str = "seen") -> list[SceneObject]:
    """`count` objects in distinct cells (clips: one moving object). pairs: "seen" (no held-out colour–shape pair),
    "held-out" (at least one held-out pair) or "any"."""
    held = set(spec.holdout_pairs)
    seen = [(c, s) for c in COLOURS for s in SHAPES if f"{c} {s}" not in held]
    every = [(c, s) for c in COLOURS for s in SHAPES]
    held_list = [(c, s) for c in COLOURS for s in SHAPES if f"{c} {s}" in held]
    places = DIRECTIONS if spec.frames > 1 else PLACES
    cells = rng.choice(len(places), size=count, replace=False)
    pool = {"seen": seen, "any": every, "held-out": every}[pairs]
    chosen = [pool[i] for i in rng.integers(0, len(pool), size=count)]
    if pairs == "held-out":
        if not held_list:
            raise ValueError("no held-out colour–shape pairs to draw")
        chosen[rng.integers(0, count)] = held_list[rng.integers(0, len(held_list))]
    sizes = list(SIZES)
    return [SceneObject(s, c, sizes[rng.integers(0, len(sizes))], places[p])
            for (c, s), p in zip(chosen, cells, strict=True)]


def render(objects: list[SceneObject], spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """A scene (3, S, S) or, with spec.frames > 1, a clip (T, 3, S, S)."""
    if spec.frames > 1:
        return render_clip(objects[0], spec.frames, spec.image_size, rng)
    return render_scene(objects, spec.image_size, rng)


def draw_scenes(spec: SceneSpec, n: int, seed: int | list[int], counts: list[int] | None = None,
                pairs: str = "seen") -> tuple[np.ndarray, list[str], list[list[SceneObject]]]:
    """`n` scenes (or clips): (images (N, 3, S, S) or (N, T, 3, S, S) in [-1, 1], captions, objects).

    The count of each is drawn uniformly from `counts` (default: spec.counts). The same seed, the same scenes.
    """
    rng = np.random.default_rng(seed)
    counts = counts or spec.counts
    objs = [draw_objects(spec, int(counts[rng.integers(0, len(counts))]), rng, pairs) for _ in range(n)]
    images = np.stack([render(o, spec, rng) for o in objs]) if n else \
        np.zeros((0, 3, spec.image_size, spec.image_size), dtype=np.float32)
    return images, [describe(o) for o in objs], objs


def evaluation_groups(spec: SceneSpec, n: int) -> list[tuple[str, list[int], str]]:
    """The held-out test sets a spec defines: (name, counts, pairs) each; the caption task draws n of each."""
    noun = "clip" if spec.frames > 1 else "scene"
    groups = [(f"seen, {c} object{'s' * (c > 1)}" if spec.frames == 1 else f"seen {noun}s", [c], "seen")
              for c in spec.counts]
    if spec.holdout_pairs:
        groups.append((f"held-out colour–shape pairs ({', '.join(spec.holdout_pairs)})", spec.counts, "held-out"))
    for c in spec.holdout_counts:
        groups.append((f"held-out count: {c} objects", [c], "any"))
    return groups
