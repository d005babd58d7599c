"""What one topic of `qkv explain` gives back: an `Explanation` that prints, serialises and draws itself.

A topic is a function ``topic(run, opts) -> Explanation`` (`qkv.explain.TOPICS`). It computes everything it
shows from the run's real modules (hooks, `attention_reference`, the run's tokenizer), never from a copy of
the maths beside them; where it decomposes a module (Q/K/V, the heads, the output layer) it recomputes the
module's output from the printed parts and records the difference as a `check` (≤ 1e-5 in fp32, tested).

An Explanation is a list of blocks, in reading order:

- ``Text``: a paragraph or a line (the plain-language part, notes such as "cut to 32 tokens");
- ``Tensor``: a named tensor: its shape, dtype, a few rows of numbers and summary statistics;
- ``Table``: columns and rows (token tables, top-k lists, parameter tables);
- ``Check``: a decomposition recomputed, with its max abs difference against the module's output.

plus ``figures``: named pictures (`Figure`, drawn with matplotlib only when `--png` asks for them) and
``data``: any other numbers a page or notebook may want. `format_text()` is what the terminal prints;
`to_json()` carries every block, figure data included, so the terminal and `--json` cannot disagree (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qkv.errors import QKVError

ROWS = 4  # rows of a tensor printed
COLS = 8  # numbers per printed row
WINDOW = 32  # tokens kept from a long input (the output says so)
TOLERANCE = 1e-5  # what a recomputed decomposition may differ by, in fp32


@dataclass
class Options:
    """What the user asked: the input text (or source: a sentence, an image, a recording; or prompt), the layer and
    head, another run."""

    text: str | None = None  # the text a run reads (a GPT's input; the target of a pair; a chat conversation)
    src: str | None = None  # a source sentence (a run whose source is text)
    image: Any = None  # a source image: a file's path or bytes, or a (C, H, W) tensor (a run whose source is images)
    audio: Any = None  # a recording: a WAV file's path or bytes, or a waveform (N,) at 16 kHz (a run that reads audio)
    prompt: str | None = None  # a diffusion run's prompt (or a class label, as digits)
    layer: int | None = None
    head: int | None = None
    compare: Any = None  # a second loaded run (`heads --compare RUN_B`)
    seed: int = 0


# ------------------------------------------------------------------------------------------------ blocks
@dataclass
class Text:
    text: str
    kind: str = "text"

    def lines(self) -> list[str]:
        return [self.text]

    def to_json(self) -> dict:
        return {"kind": "text", "text": self.text}


@dataclass
class TensorBlock:
    name: str
    value: Tensor  # any shape; printed as rows of its last dimension
    note: str = ""
    row_labels: list[str] | None = None  # labels of the printed rows (tokens), when it is 2-D
    kind: str = "tensor"

    def _matrix(self) -> Tensor:
        v = self.value.detach().float().cpu()
        return v.reshape(1, -1) if v.dim() < 2 else v.reshape(-1, v.shape[-1])  # (rows, last dim)

    def stats(self) -> dict:
        """Mean, std, min, max and norm of the finite entries (a masked score is -inf; it is counted apart)."""
        v = self.value.detach().float().cpu().flatten()
        finite = v[torch.isfinite(v)]
        if finite.numel() == 0:
            return {"mean": None, "std": None, "min": None, "max": None, "norm": None, "non_finite": v.numel()}
        return {"mean": finite.mean().item(), "std": finite.std().item() if finite.numel() > 1 else 0.0,
                "min": finite.min().item(), "max": finite.max().item(), "norm": finite.norm().item(),
                "non_finite": v.numel() - finite.numel()}

    def lines(self) -> list[str]:
        shape = " × ".join(str(s) for s in self.value.shape) or "scalar"
        s = self.stats()
        head = f"{self.name}: shape ({shape}), {str(self.value.dtype).removeprefix('torch.')}"
        out = [head + (f" — {self.note}" if self.note else "")]
        if s["mean"] is not None:
            out.append(f"  mean {s['mean']:+.4f}  std {s['std']:.4f}  min {s['min']:+.4f}  max {s['max']:+.4f}"
                       + (f"  (over the finite entries; {s['non_finite']} are ±inf or nan)" if s["non_finite"] else ""))
        m = self._matrix()
        for i in range(min(ROWS, m.shape[0])):
            label = f"{self.row_labels[i]!s:>8} " if self.row_labels and i < len(self.row_labels) else f"  [{i}] "
            nums = " ".join(f"{x:+.4f}" for x in m[i, :COLS].tolist())
            out.append(f"  {label}{nums}{' …' if m.shape[1] > COLS else ''}")
        if m.shape[0] > ROWS:
            out.append(f"  … {m.shape[0] - ROWS} more rows")
        return out

    def to_json(self) -> dict:
        return {"kind": "tensor", "name": self.name, "shape": list(self.value.shape), "note": self.note,
                "dtype": str(self.value.dtype).removeprefix("torch."), "stats": _plain(self.stats()),
                "row_labels": self.row_labels, "values": _rounded(self.value)}


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    title: str = ""
    kind: str = "table"

    def lines(self) -> list[str]:
        cells = [[_cell(c) for c in row] for row in self.rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.columns)]
        numeric = [all(isinstance(r[i], int | float) for r in self.rows) for i in range(len(self.columns))]

        def fmt(row):
            return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True))

        out = [self.title] if self.title else []
        return out + ["  " + fmt(self.columns).rstrip()] + ["  " + fmt(r).rstrip() for r in cells]

    def to_json(self) -> dict:
        return {"kind": "table", "title": self.title, "columns": self.columns,
                "rows": [[_plain(c) for c in row] for row in self.rows]}


@dataclass
class Check:
    """A decomposition recomputed from the printed parts, against the module's own output."""

    what: str  # "softmax(QKᵀ/√d_k + mask) V, heads concatenated, through W_O  ==  attn(x)"
    max_abs_diff: float
    tolerance: float = TOLERANCE
    kind: str = "check"

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def lines(self) -> list[str]:
        return [f"check: {self.what}: max |difference| {self.max_abs_diff:.2e} "
                f"({'≤' if self.ok else '>'} {self.tolerance:.0e}{'' if self.ok else ' — MISMATCH'})"]

    def to_json(self) -> dict:
        return {"kind": "check", "what": self.what, "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance,
                "ok": self.ok}


Block = Text | TensorBlock | Table | Check


@dataclass
class Figure:
    """A picture: `draw(fig)` fills a matplotlib figure; `data` is what it draws (also in --json)."""

    name: str  # file stem: "tokens", "positions", "heads-layer0"
    title: str
    draw: Callable[[Any], None]
    data: dict = field(default_factory=dict)
    size: tuple[float, float] = (7.0, 5.0)


@dataclass
class Explanation:
    topic: str
    title: str
    run: str  # the run directory's name
    blocks: list[Block] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    # building
    def say(self, text: str) -> None:
        self.blocks.append(Text(text))

    def tensor(self, name: str, value: Tensor, note: str = "", rows: list[str] | None = None) -> None:
        self.blocks.append(TensorBlock(name, value.detach(), note, rows))

    def table(self, columns: list[str], rows: list[list[Any]], title: str = "") -> None:
        self.blocks.append(Table(columns, rows, title))

    def check(self, what: str, ours: Tensor, module: Tensor, tolerance: float = TOLERANCE) -> Check:
        # float64: exact for fp32 values and for integer counts past 2**24
        c = Check(what, (ours.detach().double() - module.detach().double()).abs().max().item(), tolerance)
        self.blocks.append(c)
        return c

    def figure(self, name: str, title: str, draw: Callable[[Any], None], data: dict | None = None,
               size: tuple[float, float] = (7.0, 5.0)) -> None:
        self.figures.append(Figure(name, title, draw, data or {}, size))

    @property
    def checks(self) -> list[Check]:
        return [b for b in self.blocks if isinstance(b, Check)]

    # output
    def format_text(self) -> str:
        out = [f"== {self.topic}: {self.title} ({self.run}) =="]
        for b in self.blocks:
            out += b.lines()
        return "\n".join(line.rstrip() for line in out)

    def to_json(self) -> dict:
        return {"topic": self.topic, "title": self.title, "run": self.run,
                "blocks": [b.to_json() for b in self.blocks],
                "figures": [{"name": f.name, "title": f.title, "data": _plain(f.data)} for f in self.figures],
                "data": _plain(self.data)}

    def render_pngs(self) -> list[tuple[str, bytes]]:
        """Every figure drawn with matplotlib: (file stem "<topic>-<name>", PNG bytes)."""
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = []
        for f in self.figures:
            fig = plt.figure(figsize=f.size)
            try:
                f.draw(fig)
                if f.title and not fig._suptitle:
                    fig.suptitle(f.title)
                fig.tight_layout()
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=110)
                out.append((f"{self.topic}-{f.name}", buf.getvalue()))
            finally:
                plt.close(fig)
        return out

    def write_pngs(self, folder: str | Path) -> list[Path]:
        """Every figure as folder/<topic>-<name>.png (each written atomically)."""
        from qkv.runs import atomic_write_bytes

        paths = []
        for stem, png in self.render_pngs():
            path = Path(folder) / f"{stem}.png"
            atomic_write_bytes(path, png)
            paths.append(path)
        return paths


# ------------------------------------------------------------------------------------------------ helpers
def window(ids: list[int], e: Explanation, limit: int = WINDOW) -> list[int]:
    """The first `limit` ids of a long input; says so in the output when it cuts."""
    if len(ids) > limit:
        e.say(f"(the input is {len(ids)} tokens; cut to the first {limit} for reading)")
        return ids[:limit]
    return ids


def pick(value: int | None, n: int, what: str, default: int) -> int:
    """A layer or head index: None gives `default`; negative counts from the end; out of range is an error."""
    if value is None:
        value = default
    if not -n <= value < n:
        raise QKVError(f"{what} {value} is out of range: this run has {n} {what}s (0 to {n - 1}, or -1 for the last)")
    return value % n


def heatmap(ax, weights: Tensor, rows: list[str], cols: list[str], xlabel: str, ylabel: str, title: str = "") -> None:
    """A labelled (rows × columns) heatmap on `ax`, values in [0, 1] unless the data says otherwise."""
    w = weights.detach().float().cpu().numpy()
    im = ax.imshow(w, cmap="Blues", aspect="auto", vmin=0.0, vmax=max(1e-9, float(w.max())))
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    return im


def signed_heatmap(ax, values: Tensor, rows: list[str], cols: list[str], xlabel: str, ylabel: str) -> None:
    """A (rows × columns) heatmap of signed numbers: blue negative, red positive, white zero, with a colour bar."""
    v = values.detach().float().cpu().numpy()
    limit = max(1e-9, float(abs(v).max()))
    im = ax.imshow(v, cmap="RdBu_r", aspect="auto", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.figure.colorbar(im, ax=ax)


def _rounded(t: Tensor):
    v = t.detach().cpu()
    v = v if not (v.is_floating_point() or v.is_complex()) else v.float()  # ids and masks stay integers
    if v.numel() > 4096:  # big tensors go to JSON as their first rows only
        v = v.reshape(-1, v.shape[-1])[: max(1, 4096 // max(1, v.shape[-1]))]
    return [_plain(x) for x in v.tolist()] if v.dim() else _plain(v.item())


def _plain(x):
    """JSON-safe: tensors to lists, floats to 6 significant digits, NaN/inf to None, tuples to lists."""
    if isinstance(x, Tensor):
        return _rounded(x)
    if isinstance(x, float):
        return None if not math.isfinite(x) else float(f"{x:.6g}")  # 6 significant digits: 2.4e-7 stays
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _plain(x.item())
    return x


def _cell(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def no_grad(fn):
    """Topics read tensors; they never train."""
    def wrapped(run, opts):
        with torch.no_grad():
            return fn(run, opts)
    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped
