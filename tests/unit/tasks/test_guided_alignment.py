"""Guided alignment (`qkv.tasks.guided_alignment`, ``train.alignment_weight``): the targets and the loss against
hand-made links and attention, the links of dropped and truncated pairs, the batches that carry them, a toy
reversal task whose guided head learns its anti-diagonal links, the unchanged default path, and bad input.

The toy task: 240 sequences of 3–6 words from an 8-word vocabulary, the target the source reversed, the word links
i ↔ n−1−i given as a Pharaoh file (no eflomal): trained through the task's own data and batch path."""

import math
import random
import sys
from pathlib import Path

import pytest
import torch

from helpers import assert_user_error, metrics, preset, qkv
from qkv.config import from_dict
from qkv.data.alignment import Alignments, read_alignment_file
from qkv.data.translation import TranslationBatches, collate, encode_lines, make_examples
from qkv.errors import QKVError
from qkv.evaluation.alignment import alignment_scores
from qkv.tasks.guided_alignment import Guide, alignment_loss, alignment_targets, example_links, guided_loss
from qkv.tasks.runner import run_task
from qkv.tasks.translate import TranslateRunConfig
from qkv.tokenizers import train_bpe
from qkv.training.losses import smoothed_loss

WORDS = "ka lo mi nu pe ri so tu".split()
LAYER, HEAD = 0, 0  # the defaults for a 2-layer decoder: the penultimate layer, head 0


def reversal_pairs(folder: Path, n: int = 240, seed: int = 0) -> dict[str, Path]:
    """n reversal pairs ("ka lo mi" -> "mi lo ka") and their links ("0-2 1-1 2-0"), one file each."""
    rng = random.Random(seed)
    src, tgt, links = [], [], []
    for _ in range(n):
        k = rng.randint(3, 6)
        words = [rng.choice(WORDS) for _ in range(k)]
        src.append(" ".join(words))
        tgt.append(" ".join(reversed(words)))
        links.append(" ".join(f"{i}-{k - 1 - i}" for i in range(k)))
    files = {"src": folder / "s.txt", "tgt": folder / "t.txt", "links": folder / "a.txt"}
    for name, lines in (("src", src), ("tgt", tgt), ("links", links)):
        files[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def toy_config(files: dict[str, Path], weight: float, steps: int = 200, **train) -> TranslateRunConfig:
    return from_dict(TranslateRunConfig, {
        "data": {"src": str(files["src"]), "tgt": str(files["tgt"]), "vocab_size": 300, "bleu_val_pairs": 0},
        "model": {"d_model": 32, "d_ff": 64, "n_encoder_layers": 2, "n_decoder_layers": 2, "n_heads": 2,
                  "max_seq_len": 16, "dropout": 0.0},
        "train": {"max_steps": steps, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10, "eval_interval": steps,
                  "log_interval": 10, "progress": False, "device": "cpu", "threads": 1, "alignment_weight": weight,
                  "alignment_file": str(files["links"]), **train},
    })


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy task trained 200 steps with alignment_weight 0 and 1 (~3-5 s each): name -> (task, model, dir)."""
    folder = tmp_path_factory.mktemp("guided")
    files = reversal_pairs(folder)
    n = torch.get_num_threads()
    try:
        runs = {}
        for name, weight in (("plain", 0.0), ("guided", 1.0)):
            trained = run_task(toy_config(files, weight), folder / name, log=lambda msg: None)
            runs[name] = (trained, trained.model.eval(), folder / name)
    finally:
        torch.set_num_threads(n)
    return files, runs


# ------------------------------------------------------------------------------------------------ targets, loss
def test_targets_normalise_each_linked_row_and_leave_the_others_out():
    align = torch.tensor([[[1, 0, 1, 0],    # two links: 1/2 each
                           [0, 0, 0, 0],    # no link (an unaligned word, EOS, padding): excluded
                           [0, 1, 1, 1]]],  # three links: 1/3 each
                         dtype=torch.bool)  # (1, 3, 4)
    p, has_links = alignment_targets(align)
    torch.testing.assert_close(p, torch.tensor([[[0.5, 0, 0.5, 0], [0, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3]]]))
    assert has_links.tolist() == [[True, False, True]]


def test_loss_is_the_formula_on_a_hand_made_attention():
    # two sentences, 3 target rows, 4 source columns (the second sentence's last column is padding: a = 0)
    attn = torch.tensor([[[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]],
                         [[0.5, 0.4, 0.1, 0.0], [0.2, 0.2, 0.6, 0.0], [0.3, 0.3, 0.4, 0.0]]], requires_grad=True)
    links = {(0, 0, 0), (0, 2, 2), (0, 2, 3), (1, 0, 1), (1, 2, 0), (1, 2, 1), (1, 2, 2)}  # (b, t, s); rows
    align = torch.zeros(2, 3, 4, dtype=torch.bool)                                            # (0,1), (1,1) unlinked
    for b, t, s in links:
        align[b, t, s] = True
    # −(1/|R|) Σ_rows Σ_s p_ts log a_ts, p uniform over the row's links, by hand: 4 linked rows
    expected = -(math.log(0.7) + (math.log(0.3) + math.log(0.4)) / 2 + math.log(0.4)
                 + (math.log(0.3) + math.log(0.3) + math.log(0.4)) / 3) / 4
    total, rows = alignment_loss(attn, align)
    assert rows == 4
    assert (total / rows).item() == pytest.approx(expected, rel=1e-6)
    (total / rows).backward()  # ∂L/∂a_ts = −p_ts / (|R| a_ts): only linked cells move, padding stays finite
    grad = torch.zeros(2, 3, 4)
    for b, t, s in links:
        grad[b, t, s] = -(1 / int(align[b, t].sum())) / (4 * attn[b, t, s].item())
    torch.testing.assert_close(attn.grad, grad, rtol=1e-5, atol=1e-6)
    assert alignment_loss(attn, torch.zeros_like(align)) == (0.0, 0)  # no links: nothing to add


def test_the_guided_loss_adds_w_times_the_row_mean_to_the_translation_loss(toy):
    _, runs = toy
    trained, model, _ = runs["guided"]
    batch = trained.task.batches(trained.state, 16, 0, 1).next_batch()
    guide = Guide(0.3, LAYER, HEAD)
    loss, info = guided_loss(model, batch, guide, lambda lg, tg: smoothed_loss(lg, tg, 0.1))
    logits = model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits
    tok, nll, n = smoothed_loss(logits, batch["tgt_out"], 0.1)
    weights = model.cross_attention_maps(batch["src"], batch["src_mask"], batch["tgt_in"])[LAYER][:, HEAD]
    total, rows = alignment_loss(weights, batch["align"])
    assert rows == int(batch["align"].any(-1).sum()) > 0
    assert loss.item() == pytest.approx((tok + 0.3 * total / rows).item(), rel=1e-5)
    assert info["align_loss"] == (pytest.approx(total.item(), rel=1e-5), rows)
    assert info["nll"] == (pytest.approx(nll.item() * n, rel=1e-5), n)


# ------------------------------------------------------------------------------------------------ the links
def test_links_follow_dropped_and_truncated_pairs(tmp_path):
    src = ["ka lo mi", "", "nu pe ri so tu", "mi ka"]
    tgt = ["mi lo ka", "pe", "tu so ri pe nu", "ka mi"]
    (tmp_path / "a.txt").write_text("0-2 1-1 2-0\n\n0-4 1-3 2-2 3-1 4-0\n0-1 1-0\n", encoding="utf-8")
    ref = read_alignment_file(tmp_path / "a.txt", src, tgt)
    tok = train_bpe([" ".join(WORDS)] * 50 + src + tgt, vocab_size=300)
    ids_src, ids_tgt = encode_lines(tok, src), encode_lines(tok, tgt)
    assert [len(i) for i in ids_src] == [3, 0, 5, 2] and [len(i) for i in ids_tgt] == [3, 1, 5, 2]  # a word a token
    ex = make_examples(ids_src, ids_tgt, 4, tok.eos_id)  # 3 tokens a side (+ EOS on the source)
    assert ex.index == [0, 2, 3] and ex.skipped == 1 and ex.truncated == 1
    links = example_links(ref, ex, src, tgt, tok, tok)
    # pair 0: anti-diagonal; pair 2, cut to "nu pe ri" -> "tu so ri": only ri <-> ri survives; pair 3: crossed
    assert links == [[(0, 2), (1, 1), (2, 0)], [(2, 2)], [(0, 1), (1, 0)]]

    b = collate(ex.src, ex.tgt, tok.pad_id, tok.bos_id, tok.eos_id, links)
    assert b["align"].shape == (3, 4, 4) and b["align"].dtype == torch.bool  # (B, T + 1 for EOS, S + 1 for EOS)
    assert [tuple(x) for x in b["align"].nonzero().tolist()] == [(0, 0, 2), (0, 1, 1), (0, 2, 0), (1, 2, 2), (2, 0, 1),
                                                                 (2, 1, 0)]
    assert "align" not in collate(ex.src, ex.tgt, tok.pad_id, tok.bos_id, tok.eos_id)  # no links, no key

    shifted = Alignments(src[1:] + src[:1], tgt[1:] + tgt[:1], ref.sure, ref.possible)
    with pytest.raises(QKVError, match="is not of these training pairs") as e:
        example_links(shifted, ex, src, tgt, tok, tok)
    assert "\n" not in str(e.value)


def test_two_processes_get_the_links_of_their_own_rows(toy):
    _, runs = toy
    task = runs["guided"][0].state
    ex = task.train_ex
    one = TranslationBatches(ex, task.pad, task.bos, task.eos, batch_sentences=8, seed=3)
    two = [TranslationBatches(ex, task.pad, task.bos, task.eos, batch_sentences=8, seed=3, rank=r, world_size=2)
           for r in (0, 1)]
    for _ in range(5):
        whole, halves = one.next_batch(), [b.next_batch() for b in two]
        for r, half in enumerate(halves):
            rows = whole["align"][r::2]  # rank r's rows of the global batch, padded for the whole batch
            T, S = half["align"].shape[1:]
            assert torch.equal(half["align"], rows[:, :T, :S]) and not rows[:, T:].any() and not rows[:, :, S:].any()
            assert torch.equal(half["src"], whole["src"][r::2, :S])


# ------------------------------------------------------------------------------------------------ the toy task
def _mass_and_aer(trained, model, files) -> tuple[float, float]:
    """Held-out pairs (the validation tail): the guided head's mean attention mass on each linked row's linked
    source tokens, and its corpus AER (`qkv.evaluation.alignment`) against the given links."""
    task = trained.state
    n = len(task.data.train_src)
    ref = read_alignment_file(files["links"], *[p.read_text().splitlines() for p in (files["src"], files["tgt"])])
    held = Alignments(ref.src[n:], ref.tgt[n:], ref.sure[n:], ref.possible[n:], {"val": (0, len(ref) - n)})
    ex = task.val_ex
    b = collate(ex.src, ex.tgt, task.pad, task.bos, task.eos, example_links(held, ex, held.src, held.tgt,
                                                                              task.src_tok, task.tgt_tok))
    with torch.no_grad():
        a = model.cross_attention_maps(b["src"], b["src_mask"], b["tgt_in"])[LAYER][:, HEAD]  # (B, T, S)
    mass = float((a * b["align"]).sum() / b["align"].any(-1).sum())
    scores = alignment_scores(model, task.src_tok, task.tgt_tok, held)["scores"]
    aer = next(r["aer"] for r in scores if r["layer"] == LAYER and r["head"] == HEAD)
    return mass, aer


def test_guided_alignment_drives_the_chosen_head_toward_the_links(toy):
    files, runs = toy
    (plain_mass, plain_aer), (mass, aer) = (_mass_and_aer(*runs[k][:2], files) for k in ("plain", "guided"))
    # measured, (train seed, data seed) = (1337, 0) as here, (1, 1) ... (5, 5): mass plain 0.205 0.176 0.138 0.167
    # 0.180 0.204 -> guided 0.860 0.941 0.945 0.610 0.962 0.948; AER plain 0.704 0.778 0.698 0.703 0.962 0.714 ->
    # guided 0.000 0.000 0.000 0.234 0.000 0.000 (12 held-out pairs). Uniform attention over the 4-7 source
    # tokens puts ~0.2 on the one linked token. (python -c over `toy_config(files, w, seed=s)` + `_mass_and_aer`.)
    assert mass > 0.5 and mass > plain_mass + 0.3, (plain_mass, mass)
    assert aer < 0.35 and aer < plain_aer - 0.3, (plain_aer, aer)
    guided, plain = metrics(runs["guided"][2]), metrics(runs["plain"][2])
    assert any("train_align_loss" in r for r in guided) and not any("train_align_loss" in r for r in plain)
    assert runs["guided"][0].state.meta["alignment"]["layer"] == LAYER


def test_weight_zero_is_the_plain_translation_loss_bit_for_bit(toy):
    _, runs = toy
    trained, model, _ = runs["plain"]
    task, state = trained.task, trained.state
    model.train()
    try:
        batch = task.batches(state, 16, 0, 1).next_batch()
        assert set(batch) == {"src", "src_mask", "tgt_in", "tgt_out"}  # no links carried
        loss, info = task.loss(state, model, batch)
        logits = model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits
        ref, nll, n = smoothed_loss(logits, batch["tgt_out"], state.cfg.train.label_smoothing)
        assert torch.equal(loss, ref) and set(info) == {"tokens", "nll"}
        memory = model.encode(batch["src"], batch["src_mask"])
        assert torch.equal(logits, model.decode(memory, batch["src_mask"], batch["tgt_in"]))  # the fused path
        # asking for one layer's cross-attention changes only how that layer computes it
        logits_w, _, w = model(batch["src"], batch["src_mask"], batch["tgt_in"], cross_attention_layer=1)
        torch.testing.assert_close(logits_w, logits, rtol=1e-5, atol=1e-5)
        assert w.shape == (*batch["src"].shape[:1], 2, *batch["tgt_in"].shape[1:], batch["src"].shape[1])
        torch.testing.assert_close(w, model.cross_attention_maps(batch["src"], batch["src_mask"], batch["tgt_in"])[1])
        assert w.requires_grad
        with pytest.raises(ValueError, match=r"outside the decoder's layers 0\.\.1"):
            model(batch["src"], batch["src_mask"], batch["tgt_in"], cross_attention_layer=2)
    finally:
        model.eval()


def test_a_resumed_guided_run_trains_what_an_uninterrupted_one_trains(tmp_path):
    files = reversal_pairs(tmp_path)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    log = lambda msg: None  # noqa: E731
    run_task(toy_config(files, 0.5, steps=8, eval_interval=4, log_interval=1), straight, log=log)
    run_task(toy_config(files, 0.5, steps=4, eval_interval=4, log_interval=1), resumed, log=log)
    run_task(toy_config(files, 0.5, steps=8, eval_interval=4, log_interval=1), resumed, resume=True, log=log)
    a, b = metrics(straight), metrics(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "train_align_loss"):
            if k in ra:
                assert rb[k] == pytest.approx(ra[k], abs=1e-6), (ra["step"], k)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_settings_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    files = reversal_pairs(tmp_path, n=40)
    base = ["train", "--config", preset("multi30k-de-en"), "--out", tmp_path / "run", "--no-sample",
            "--data.src", files["src"], "--data.tgt", files["tgt"], "--data.vocab_size", "300",
            "--model.n_decoder_layers", "2", "--model.n_heads", "2", "--train.max_steps", "1",
            "--train.max_minutes", "none", "--train.schedule_by", "steps", "--train.progress", "false"]
    cases = [
        (["--train.alignment_weight", "-0.1"], ["train: alignment_weight must be a finite number >= 0"]),
        (["--train.alignment_weight", "0.1", "--train.objective", "mrt"], ["cannot be combined", "mrt"]),
        (["--train.alignment_weight", "0.1", "--train.alignment_layer", "2"], ["alignment_layer 2", "0..1"]),
        (["--train.alignment_weight", "0.1", "--train.alignment_head", "2"], ["alignment_head 2", "0..1"]),
    ]
    for extra, needles in cases:
        rc, _, err = qkv(capsys, *base, *extra)
        assert_user_error(rc, err, *needles)

    short = tmp_path / "short.txt"
    short.write_text("0-2 1-1 2-0\n" * 39, encoding="utf-8")
    rc, _, err = qkv(capsys, *base, "--train.alignment_weight", "0.1", "--train.alignment_file", short)
    assert_user_error(rc, err, "has 39 alignment lines but the data has 40 sentence pairs")

    monkeypatch.setitem(sys.modules, "eflomal", None)  # not installed: its import fails
    rc, _, err = qkv(capsys, *base, "--train.alignment_weight", "0.1")
    assert_user_error(rc, err, "pip install 'qkv[align]'")
    assert not (tmp_path / "run").exists()  # refused before anything was written
