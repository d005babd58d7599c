"""``loss.png``: training loss and validation loss against steps, read back from ``metrics.jsonl``."""

from __future__ import annotations

import io
from pathlib import Path

from qkv.runs import PLOT_FILE, atomic_write_bytes, read_metrics


def plot_losses(run_dir: Path, out: Path | None = None) -> Path | None:
    """Write the loss curves of a run to `out` (default run_dir/loss.png); None if nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(*zip(*train, strict=True), lw=1, alpha=0.8, label="train loss (batch)")
    curves = (("val_loss", "o-", "val loss (full pass)"), ("val_loss_sampled", "x--", "val loss (sampled)"))
    for key, style, label in curves:
        pts = [(r["step"], r[key]) for r in records if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, ms=4, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out or run_dir / PLOT_FILE)
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(out, png.getvalue())
    return out
