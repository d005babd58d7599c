"""What many test modules need, written once: the CLI driven in-process, the one-line-error check, a
picture check, made-up text for tests that need some text but no particular corpus, metrics and torchrun.

Importable from any test as ``from helpers import ...`` (pyproject puts tests/ on the import path).
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def preset(name: str) -> str:
    """The file of a training preset shipped in the package (`qkv.presets`), for ``--config``."""
    from qkv.presets import preset_path

    return str(preset_path(name))

# the downloaded datasets some tests need (`make test` fetches them)
CORPORA = ("tinyshakespeare", "multi30k", "fsdd", "humaneval")

_WORDS = ("the the the and and to of of a my in that is you not with me it for be his your this but he have as "
          "thou so will what her thy all no by do shall if are we thee our lord on good now sir come more they "
          "well love from how at which let o king hath man upon then there must would one am or than know make "
          "say like should may see here speak go life death heart eyes night day time world fair sweet great "
          "hand father mother son brother friend blood noble true honour grace heaven earth soul mind word "
          "gentle poor old young peace war crown queen prince duke house tongue reason nature fortune").split()
_SPEAKERS = ("ROMEO", "JULIET", "KING HENRY", "FIRST CITIZEN", "NURSE", "MENENIUS")


def english_text(n_chars: int, seed: int = 0) -> str:
    """Exactly `n_chars` of made-up play-like English (speakers, capitals, punctuation, blank lines), the same
    for the same seed: for tests that need some text, not a particular corpus.

        >>> english_text(40)
        'Friend war from to all must upon well du'
    """
    rng = random.Random(seed)
    parts, n = [], 0
    while n < n_chars:  # each turn adds at least one line
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 12))]
        line = " ".join(words).capitalize() + rng.choice(".,;!?:") + "\n"
        if rng.random() < 0.25:
            line = f"\n{rng.choice(_SPEAKERS)}:\n{line}" if parts else f"{rng.choice(_SPEAKERS)}:\n{line}"
        parts.append(line)
        n += len(line)
    return "".join(parts)[:n_chars]


def write_text(path: Path, n_chars: int, seed: int = 0) -> Path:
    """`english_text` written to `path` (UTF-8); the path, for ``--data PATH``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(english_text(n_chars, seed), encoding="utf-8")
    return path


def qkv(capsys, *argv, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """Run `qkv argv...` in-process (`qkv.cli.main.main`): (exit code, stdout, stderr)."""
    from qkv.cli.main import main

    capsys.readouterr()  # drop whatever earlier calls printed
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, *needles: str) -> None:
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert rc == 2, f"exit code {rc}, stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def assert_picture(path: Path, min_size: tuple[int, int] = (200, 150)) -> None:
    """A real PNG of a plausible size with more than one colour (a blank or empty figure fails)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1], im.size
        assert np.ptp(np.asarray(im.convert("L"))) > 0, f"{path} is a single colour"


def metrics(run: Path) -> list[dict]:
    """Every line of RUN/metrics.jsonl."""
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def made_up_pairs(folder: Path) -> list[str]:
    """Write 80 toy German-English sentence pairs (counting words) into `folder`: the ``--data.src``/``--data.tgt``
    arguments of a tiny translation run that needs any pairs, not a corpus."""
    words, english = "null eins zwei drei vier".split(), "zero one two three four".split()
    src = [" ".join(words[(i * 7 + j) % 5] for j in range(2 + i % 3)) + "." for i in range(80)]
    tgt = [" ".join(english[(i * 7 + j) % 5] for j in range(2 + i % 3)) + "." for i in range(80)]
    (folder / "s.de").write_text("\n".join(src) + "\n", encoding="utf-8")
    (folder / "t.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return ["--data.src", str(folder / "s.de"), "--data.tgt", str(folder / "t.en")]


# what differs between two runs that train the same thing: the clock and each process's memory
PER_PROCESS = {"tokens_per_s", "elapsed_s", "eval_s", "peak_mem_mb", "peak_mem_mb_per_rank"}


def assert_same_training(a_dir: Path, b_dir: Path, steps: int) -> None:
    """Two runs logged the same steps, losses, gradient norms and evaluations (within float tolerance: the
    processes sum in another order), and trained `steps` steps that moved the loss."""
    a, b = ([{k: v for k, v in r.items() if k not in PER_PROCESS} for r in metrics(d)] for d in (a_dir, b_dir))
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) > steps
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            if isinstance(v, float):
                assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), f"step {ra['step']}, {k}: {rb[k]} vs {v}"
            else:
                assert rb[k] == v, f"step {ra['step']}, {k}"
    losses = [r["loss"] for r in a if "loss" in r]
    assert len(losses) == steps and losses[-1] != losses[0]  # it trained: not two untouched models compared
    assert all(r["grad_norm"] > 0 for r in a if "grad_norm" in r)


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


def torchrun() -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def run_or_fail(cmd, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with a generous timeout that reports the child's output and elapsed time when hit
    (a loaded 2-core machine is slow, not wrong: the timeout only guards against a hang)."""
    t0 = time.perf_counter()
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-4000:]
        pytest.fail(f"{' '.join(map(str, cmd))} timed out after {time.perf_counter() - t0:.0f} s:\n"
                    f"{tail.decode(errors='replace') if isinstance(tail, bytes) else tail}")


# ------------------------------------------------------------------------------------------------ human evaluation
def toy_campaign(store, name: str = "demo", n_items: int = 20, systems: tuple[str, ...] = ("a", "b"),
                 raters: int = 3, seed: int = 0, references: bool = True) -> dict:
    """A translation campaign planned from synthetic items and outputs (no runs) and stored; its
    `Store.campaign` dict. Each system's outputs differ in wording, so BAD copies and metrics have text to use."""
    from qkv.humaneval.campaign import plan_campaign

    items = [(i, f"Ein Satz mit der Nummer {i} steht hier .",
              f"a sentence with the number {i} is here ." if references else None) for i in range(n_items)]
    outputs = [[f"{s} says the sentence number {i} stands right here ." for i in range(n_items)] for s in systems]
    plan = plan_campaign(name, "source-to-text", {"source": "toy"}, [(s, f"/runs/{s}") for s in systems], items,
                         outputs, raters, seed)
    store.add_campaign(plan)
    return store.campaign(name)


def rate_campaign(store, name: str, score, raters: list[str] | None = None) -> int:
    """Every rater (or those named) judges each of their tasks once through `Store.submit`, as the rater page
    would. `score(rater, system, item, bad) -> (accuracy, fluency)`; with two candidates the preference is the
    slot with the higher accuracy (tie if equal). The number of judgements submitted."""
    cands = {c["id"]: c for c in store.candidates(name)}
    n = 0
    for r in store.campaign(name)["raters"]:
        if raters is not None and r["name"] not in raters:
            continue
        rater = store.rater(r["token"])
        for pos in range(r["tasks"]):
            task = store.task(rater.id, pos)
            payload: dict = {"candidates": {}}
            for c in task["candidates"]:
                info = cands[c["id"]]
                acc, flu = score(rater.name, info["system"], info["item"], info["bad_of"] is not None)
                payload["candidates"][str(c["id"])] = {"accuracy": acc, "fluency": flu, "spans": []}
            if len(task["candidates"]) == 2:
                a, b = (payload["candidates"][str(c["id"])]["accuracy"] for c in task["candidates"])
                payload["preference"] = "A" if a > b else "B" if b > a else "tie"
            store.submit(rater.id, task["task_id"], payload)
            n += 1
    return n
