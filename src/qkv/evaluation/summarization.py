"""Judging summaries as the field does: ROUGE-1/2/L (`rouge-score`, Google's reimplementation of ROUGE-1.5.5) with
bootstrap confidence intervals, sacreBLEU and chrF++, and the baselines a model must beat.

ROUGE-N is the overlap of n-grams between a summary and its reference, ROUGE-L the longest common subsequence; each
is an F-measure of precision and recall, here with Porter stemming (``rouge_score.RougeScorer(..., use_stemmer=True)``,
the setting of most summarization papers). A corpus score is the mean of the sentence scores, ×100. The 95%
interval resamples the summaries with replacement (`n_boot` times, fixed seed) and takes the 2.5th and 97.5th
percentiles of the mean: two systems whose intervals do not overlap differ by more than which summaries happened
to be tested.

Baselines (`baselines`), scored in the same table:

    lead     the document's first sentence (text), or its first comment line, else its first line (code)
    name     the function's or entry's name split into words: "get_terminal_size" -> "get terminal size"
    nearest  the summary of the training document nearest by TF-IDF cosine (scikit-learn)
"""

from __future__ import annotations

import re

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_rows(hyps: list[str], refs: list[str]) -> np.ndarray:
    """(N, 3) ROUGE-1/2/L F-measures ×100 of each summary against its reference."""
    from rouge_score import rouge_scorer

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} summaries but {len(refs)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = [[s[t].fmeasure for t in ROUGE_TYPES] for s in (scorer.score(r, h) for h, r in zip(hyps, refs,
                                                                                              strict=True))]
    return 100.0 * np.asarray(rows, dtype=np.float64).reshape(len(hyps), len(ROUGE_TYPES))


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> np.ndarray:
    """(k, 2) percentile intervals of the mean of each column of `values` (N, k), resampling rows."""
    rng = np.random.default_rng(seed)
    n = len(values)
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, N)
    means = values[idx].mean(axis=1)  # (n_boot, k)
    tail = 100 * (1 - level) / 2
    return np.percentile(means, [tail, 100 - tail], axis=0).T  # (k, 2)


def summary_scores(hyps: list[str], refs: list[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """ROUGE-1/2/L with 95% intervals, sacreBLEU and chrF++ of `hyps` against `refs`."""
    from qkv.evaluation.translation import chrf_pp, sacre_bleu

    if not hyps:
        raise ValueError("no summaries to score")
    rows = rouge_rows(hyps, refs)
    ci = bootstrap_ci(rows, n_boot, seed)
    out = {t: {"score": float(rows[:, k].mean()), "ci95": [float(ci[k, 0]), float(ci[k, 1])]}
           for k, t in enumerate(ROUGE_TYPES)}
    out["bleu"] = sacre_bleu(hyps, refs).score
    out["chrf++"] = chrf_pp(hyps, refs).score
    out["n"] = len(hyps)
    return out


def intervals_apart(a: dict, b: dict) -> bool:
    """Whether two scores' 95% intervals ({"score", "ci95"}) do not overlap."""
    return a["ci95"][0] > b["ci95"][1] or b["ci95"][0] > a["ci95"][1]


def score_table(scores: dict[str, dict]) -> list[str]:
    """The lines of a table: one row per system (`summary_scores` each), ROUGE-1/2/L with their intervals, BLEU,
    chrF++."""
    lines = [f"  {'system':<9}{'ROUGE-1':>22}{'ROUGE-2':>22}{'ROUGE-L':>22}{'BLEU':>7}{'chrF++':>8}"]
    for name, s in scores.items():
        cells = "".join(f"{s[t]['score']:8.2f} [{s[t]['ci95'][0]:5.2f}, {s[t]['ci95'][1]:5.2f}]" for t in ROUGE_TYPES)
        lines.append(f"  {name:<9}{cells}{s['bleu']:7.2f}{s['chrf++']:8.2f}")
    return lines


# ------------------------------------------------------------------------------------------------ baselines
def lead(document: str, corpus: str) -> str:
    """The first sentence of a text, or the first comment of code (else its first line)."""
    if corpus == "code":
        for line in document.splitlines():
            if line.strip().startswith("#"):
                return line.strip().lstrip("#").strip()
        return document.strip().splitlines()[0].strip() if document.strip() else ""
    flat = " ".join(document.split())
    m = re.match(r"(.+?[.!?])(?:\s|$)", flat)
    return m[1] if m else flat


def name_words(name: str) -> str:
    """The last part of a dotted name, split at underscores and case changes: "get_terminal_size" -> "get terminal
    size", "TextWrapper.fill" -> "fill", "splitExt" -> "split ext"."""
    last = name.rsplit(".", 1)[-1]
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", last).replace("_", " ")
    return " ".join(words.lower().split())


def nearest_summaries(train_docs: list[str], train_summaries: list[str], docs: list[str]) -> list[str]:
    """For each document, the summary of the training document with the highest TF-IDF cosine."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(token_pattern=r"[A-Za-z_][A-Za-z0-9_]+|\d+", sublinear_tf=True)
    train = vec.fit_transform(train_docs)  # (N_train, vocab), rows L2-normalised
    sims = vec.transform(docs) @ train.T  # (N, N_train): cosines
    best = np.asarray(sims.argmax(axis=1)).ravel()
    return [train_summaries[i] for i in best]


def baselines(docs: list[str], names: list[str] | None, corpus: str, train_docs: list[str],
              train_summaries: list[str]) -> dict[str, list[str]]:
    """name -> the baseline's summary of each document (``name`` only when the names are known)."""
    out = {"lead": [lead(d, corpus) for d in docs]}
    if names is not None:
        out["name"] = [name_words(n) for n in names]
    if train_docs:
        out["nearest"] = nearest_summaries(train_docs, train_summaries, docs)
    return out
