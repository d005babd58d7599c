"""How good are generated images? A classifier trained on real images reads the samples.

- **Classifier.** A small CNN trained here (seeded, seconds on CPU) on the *real training split*
  of the run's data; its accuracy on the held-out real split is reported so the figures below can be
  trusted only as far as the classifier can. Digits and image folders: one head (the class). Shapes:
  three heads — shape, colour and position.
- **Sample accuracy** (class-conditional runs): the share of samples asked to be class k that the
  classifier reads as k.
- **Prompt adherence** (shapes, text-conditional): the share of samples whose shape, colour *and*
  position (read by the classifier) all match the prompt; the three per-attribute accuracies too.
- **Fréchet distance** (Heusel et al. 2017, the formula of FID, https://arxiv.org/abs/1706.08500)
  between Gaussian fits of the classifier's penultimate features of the samples and of the held-out
  real images:  FD = ‖μ_s − μ_r‖² + Tr(Σ_s + Σ_r − 2 (Σ_s Σ_r)^½).  It is *not* FID (no Inception
  network; 8×8 digits have nothing in common with ImageNet); compare it only with itself, and with
  ``fd_real``, the same distance between the real training and held-out images (the floor that
  sampling noise alone gives for a comparable number of images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.data.images import ImageSet


class ImageClassifier(nn.Module):
    """[average-pool to ≤ 32×32] (conv-conv-maxpool) × 2 -> 64-d features -> one linear head per attribute.

    Any C and H = W ≥ 4. Above 16×16 the convolutions are half as wide, which keeps a 32×32 shapes
    classifier as cheap as the 8×8 digits one; the resolution itself matters (pooled to 16×16, circles and
    squares became confusable: 76% shape accuracy vs 100% at 32×32). The features keep a coarse spatial
    map (flattened, not globally pooled), so "where" and "what shape" both survive to the heads.
    """

    def __init__(self, in_channels: int, head_sizes: list[int], image_size: int = 8, d_features: int = 64):
        super().__init__()
        size = min(image_size, 32)
        w = 32 if size <= 16 else 16
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(size),
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * w * (size // 4) ** 2, d_features), nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(d_features, k) for k in head_sizes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)  # (B, d_features)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.features(x)
        return [head(h) for head in self.heads]  # per head: (B, K_head)


@dataclass
class Judge:
    """A trained classifier plus what it needs to read samples."""

    classifier: ImageClassifier
    head_names: list[str]  # e.g. ["class"] or ["shape", "colour", "position"]
    val_accuracy: dict[str, float]  # per head, on the held-out real images
    val_features: Tensor  # (N_val, d) features of the held-out real images
    train_features: Tensor  # (N, d) features of (up to 2,000) real training images, for fd_real

    @torch.no_grad()
    def read(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """(N, C, H, W) -> (per-head predicted ids (N,), features (N, d))."""
        self.classifier.eval()
        preds, feats = [], []
        for chunk in images.split(512):
            h = self.classifier.features(chunk)
            feats.append(h)
            preds.append([head(h).argmax(-1) for head in self.classifier.heads])
        return [torch.cat(p) for p in zip(*preds, strict=True)], torch.cat(feats)


def targets_of(data: ImageSet) -> tuple[list[str], Tensor, list[int]]:
    """(head names, (N, heads) target ids, classes per head) for a dataset."""
    if data.attributes is not None:
        return ["shape", "colour", "position"], data.attributes, [3, 4, 4]
    return ["class"], data.labels[:, None], [len(data.class_names)]


def train_judge(train: ImageSet, val: ImageSet, steps: int = 400, batch_size: int = 128, lr: float = 2e-3,
                seed: int = 0) -> Judge:
    """Train the classifier on the real training split (random ±1-pixel shifts as augmentation)."""
    names, y, sizes = targets_of(train)
    _, y_val, _ = targets_of(val)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = ImageClassifier(train.images.size(1), sizes, image_size=train.images.size(-1))
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    x_all = train.images
    clf.train()
    for step in range(steps):
        idx = torch.randint(len(train), (batch_size,), generator=g)
        x = x_all[idx]
        dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))  # ±1 pixel translation
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        loss = sum(F.cross_entropy(logits, y[idx, k]) for k, logits in enumerate(clf(x)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    judge = Judge(clf, names, {}, torch.empty(0), torch.empty(0))
    preds, judge.val_features = judge.read(val.images)
    judge.val_accuracy = {n: float((p == y_val[:, k]).float().mean()) for k, (n, p) in enumerate(zip(names, preds,
                                                                                                        strict=True))}
    _, judge.train_features = judge.read(train.images[:2000])
    return judge


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) between Gaussian fits of two (N, d) feature sets.

    Tr((Σ_a Σ_b)^½) is computed as Σ √λ_i over the eigenvalues of Σ_a^½ Σ_b Σ_a^½ (symmetric, PSD),
    which needs no non-symmetric matrix square root. Example: two equal sets give 0.
    """
    a64, b64 = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a64.mean(0), b64.mean(0)
    cov_a, cov_b = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # Σ_a^½
    lam = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    tr_sqrt = np.sqrt(np.clip(lam, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def score_samples(judge: Judge, samples: Tensor, wanted: Tensor) -> dict:
    """Figures for (N, C, H, W) samples that were asked to show `wanted` ((N, heads) target ids)."""
    preds, feats = judge.read(samples)
    hits = torch.stack([p == wanted[:, k] for k, p in enumerate(preds)], dim=1)  # (N, heads)
    out = {"n_samples": int(samples.size(0))}
    if len(judge.head_names) == 1:
        out["sample_accuracy"] = float(hits[:, 0].float().mean())
    else:
        out["prompt_adherence"] = float(hits.all(dim=1).float().mean())
        for k, name in enumerate(judge.head_names):
            out[f"{name}_accuracy"] = float(hits[:, k].float().mean())
    out["fd"] = frechet_distance(feats, judge.val_features)
    n = min(samples.size(0), judge.train_features.size(0))
    out["fd_real"] = frechet_distance(judge.train_features[:n], judge.val_features)
    return out


@torch.no_grad()
def denoising_loss(model, diffusion, images: torch.Tensor, cond: dict, seed: int = 0,
                    batch_size: int = 256) -> float:
    """The training objective, `DDPM.loss`, over held-out images, with t and ε from a fixed seed (comparable
    across evaluations)."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for lo in range(0, images.size(0), batch_size):
        x = images[lo : lo + batch_size].to(device)
        c = {k: v[lo : lo + batch_size].to(device) for k, v in cond.items()}
        loss, _ = diffusion.loss(model, x, c, generator=g)
        total += loss.item() * x.size(0)
    return total / images.size(0)
