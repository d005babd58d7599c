"""Parallel data: reading (.gz/plain), bad input, Multi30k lookup, context truncation, token-count batching
with length bucketing, and exact resume of the batch sampler."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from qkv.config import from_dict
from qkv.data.translation import (
    TranslationBatches,
    TranslationDataConfig,
    collate,
    eval_batches,
    load_split,
    make_examples,
    multi30k_paths,
    parse_direction,
    read_lines,
    read_parallel,
)
from qkv.errors import QKVError

REPO = Path(__file__).resolve().parents[3]
PAD, BOS, EOS = 0, 1, 2


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(ln + "\n" for ln in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ------------------------------------------------------------------------------------------------ reading
def test_gzip_and_plain_read_the_same(tmp_path):
    lines = ["Ein Mann fährt Fahrrad.", "", "  Zwei Hunde.  "]
    plain = read_lines(_write(tmp_path / "a.txt", lines))
    assert plain == ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde."]  # blank line kept: it holds a place
    assert read_lines(_write(tmp_path / "a.txt.gz", lines, gz=True)) == plain
    (tmp_path / "crlf.txt").write_bytes(b"a b\r\nc\r\n")
    assert read_lines(tmp_path / "crlf.txt") == ["a b", "c"]


def test_mismatched_line_counts_name_both_counts(tmp_path):
    src = _write(tmp_path / "src.de", ["a", "b", "c"])
    tgt = _write(tmp_path / "tgt.en", ["x", "y"])
    with pytest.raises(QKVError) as e:
        read_parallel(src, tgt)
    msg = str(e.value)
    assert "3 lines" in msg and "has 2" in msg and "src.de" in msg and "tgt.en" in msg


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", gzip.compress(b"")])
def test_empty_file_is_an_error(tmp_path, content):
    (tmp_path / "e.txt").write_bytes(content)
    with pytest.raises(QKVError, match="empty"):
        read_lines(tmp_path / "e.txt")


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(QKVError, match="not found"):
        read_lines(tmp_path / "nope.txt")
    (tmp_path / "latin1.txt").write_bytes("Straße\n".encode("latin-1"))
    with pytest.raises(QKVError, match="not UTF-8"):
        read_lines(tmp_path / "latin1.txt")


def test_unknown_language_pair():
    assert parse_direction("fr-en") == ("fr", "en")
    with pytest.raises(QKVError, match="unknown language pair 'de-fr'; valid: de-en, fr-en, en-de, en-fr"):
        parse_direction("de-fr")
    with pytest.raises(QKVError, match="unknown language pair"):
        from_dict(TranslationDataConfig, {"direction": "xx-en"}, prefix="data.")


def test_config_needs_both_files():
    with pytest.raises(QKVError, match="both src and tgt"):
        from_dict(TranslationDataConfig, {"src": "a.txt"}, prefix="data.")
    with pytest.raises(QKVError, match="unknown parallel dataset"):
        from_dict(TranslationDataConfig, {"dataset": "wmt14"}, prefix="data.")


def test_multi30k_splits_and_directions(data_dir):
    for split, n in (("train", 29000), ("val", 1014), ("test_2016_flickr", 1000)):
        src, tgt = read_parallel(*multi30k_paths("de-en", split))
        assert len(src) == len(tgt) == n
    de, en = read_parallel(*multi30k_paths("de-en", "val"))
    en2, fr = read_parallel(*multi30k_paths("en-fr", "val"))
    assert en == en2 and de[0] != en[0] != fr[0]
    with pytest.raises(QKVError, match="unknown multi30k split"):
        multi30k_paths("de-en", "test2017")


def test_file_pairs_hold_out_validation(tmp_path):
    src = _write(tmp_path / "s.txt", [f"s{i}" for i in range(20)])
    tgt = _write(tmp_path / "t.txt.gz", [f"t{i}" for i in range(20)], gz=True)
    cfg = TranslationDataConfig(src=str(src), tgt=str(tgt), val_fraction=0.1)
    tr_s, tr_t, _ = load_split(cfg, "train")
    va_s, va_t, _ = load_split(cfg, "val")
    assert tr_s == [f"s{i}" for i in range(18)] and va_t == ["t18", "t19"]
    one = _write(tmp_path / "one.txt", ["x"])
    with pytest.raises(QKVError, match="at least 2"):
        load_split(TranslationDataConfig(src=str(one), tgt=str(one)), "train")


# ------------------------------------------------------------------------------------------------ examples
def test_truncation_to_the_context_is_counted():
    ex = make_examples([[7, 8, 9, 10, 11], [5], []], [[5], [6, 7, 8, 9, 10], [3]], max_seq_len=4, eos_id=EOS)
    assert ex.src == [[7, 8, 9, EOS], [5, EOS]] and ex.tgt == [[5], [6, 7, 8]]
    assert ex.truncated == 2 and ex.skipped == 1
    kept = make_examples([[]], [[3]], max_seq_len=4, eos_id=EOS, skip_empty=False)
    assert kept.src == [[EOS]] and kept.skipped == 0


def test_collate_pads_and_masks():
    b = collate([[5, 6, EOS], [7, EOS]], [[8, 9], [10]], PAD, BOS, EOS)
    assert b["src"].tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert b["src_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert b["tgt_in"].tolist() == [[BOS, 8, 9], [BOS, 10, PAD]]
    assert b["tgt_out"].tolist() == [[8, 9, EOS], [10, EOS, -100]]


# ------------------------------------------------------------------------------------------------ batching
def _random_examples(n: int, seed: int = 0):
    """Pairs whose lengths are correlated, as translations' are: target length = source length ± 2."""
    rng = np.random.default_rng(seed)
    n_src = rng.integers(1, 30, n)
    n_tgt = np.maximum(1, n_src + rng.integers(-2, 3, n))
    src = [list(rng.integers(3, 50, k)) for k in n_src]
    tgt = [list(rng.integers(3, 50, k)) for k in n_tgt]
    return make_examples(src, tgt, 64, EOS)


def _padded_and_real(batches):
    padded = real = 0
    for b in batches:
        padded += b["src"].numel() + b["tgt_in"].numel()
        real += int(b["src_mask"].sum()) + int((b["tgt_out"] != -100).sum())
    return padded, real


def test_token_batches_respect_the_budget_and_cover_an_epoch():
    ex = _random_examples(500)
    data = TranslationBatches(ex, PAD, BOS, EOS, batch_tokens=300, pool_batches=10, seed=1)
    seen = []
    for _ in range(len(data)):
        b = data.next_batch()
        B = b["src"].size(0)
        assert B * max(b["src"].size(1), b["tgt_in"].size(1)) <= 300
        seen += [tuple(r[m].tolist()) for r, m in zip(b["src"], b["src_mask"], strict=True)]
    assert sorted(seen) == sorted(tuple(s) for s in ex.src)  # every pair exactly once per epoch
    assert data.epoch == 0


def test_length_bucketing_cuts_padding():
    ex = _random_examples(600)
    bucketed = TranslationBatches(ex, PAD, BOS, EOS, batch_sentences=20, pool_batches=30, seed=0)
    unsorted = TranslationBatches(ex, PAD, BOS, EOS, batch_sentences=20, pool_batches=1, seed=0)
    pb, rb = _padded_and_real([bucketed.next_batch() for _ in range(len(bucketed))])
    pu, ru = _padded_and_real([unsorted.next_batch() for _ in range(len(unsorted))])
    assert rb == ru
    # measured: 56% real tokens in random batches, 94% with pools of 30 batches sorted by length
    assert rb / pb > 0.85 and ru / pu < 0.7


def test_epochs_differ_and_resume_is_exact():
    ex = _random_examples(200)
    a = TranslationBatches(ex, PAD, BOS, EOS, batch_tokens=400, seed=3)
    n = len(a)
    for _ in range(n + 3):  # into the second epoch
        a.next_batch()
    state = {k: v.clone() for k, v in a.state_dict().items()}
    assert int(state["epoch"]) == 1 and int(state["pos"]) == 3
    expected = [a.next_batch() for _ in range(n)]  # crosses into the third epoch
    b = TranslationBatches(ex, PAD, BOS, EOS, batch_tokens=400, seed=3)
    b.load_state_dict(state)
    for e, g in zip(expected, [b.next_batch() for _ in range(n)], strict=True):
        for k in e:
            assert torch.equal(e[k], g[k])
    plan0, plan1 = a._make_plan(0), a._make_plan(1)
    assert any(len(x) != len(y) or not np.array_equal(x, y) for x, y in zip(plan0, plan1, strict=False))


def test_ranks_share_the_rows_of_the_global_batches():
    """Under DDP every process follows the single-process plan and keeps every world-th row of each batch:
    the two ranks' rows of a step are exactly the batch one process trains on (30 batches of 10: no tail to
    merge)."""
    ex = _random_examples(300)
    one = TranslationBatches(ex, PAD, BOS, EOS, batch_sentences=10, seed=0)
    ranks = [TranslationBatches(ex, PAD, BOS, EOS, batch_sentences=10, seed=0, rank=r, world_size=2)
             for r in range(2)]
    for _ in range(len(one) + 3):  # into the second epoch
        whole, parts = one.next_batch(), [r.next_batch() for r in ranks]
        assert [p["src"].size(0) for p in parts] == [5, 5]
        assert sorted(_real(parts[0]) + _real(parts[1])) == sorted(_real(whole))


def test_token_batches_under_ddp_cover_an_epoch_with_no_empty_share():
    ex = _random_examples(300)
    ranks = [TranslationBatches(ex, PAD, BOS, EOS, batch_tokens=300, seed=0, rank=r, world_size=2) for r in range(2)]
    seen = []
    for _ in range(len(ranks[0])):
        parts = [r.next_batch() for r in ranks]
        assert all(p["src"].size(0) >= 1 for p in parts)
        seen += [x for p in parts for x in _real(p)]
    assert sorted(seen) == sorted(tuple(s) for s in ex.src)


def _real(b) -> list[tuple]:
    return [tuple(s[m].tolist()) for s, m in zip(b["src"], b["src_mask"], strict=True)]


def test_a_batch_smaller_than_the_processes_is_merged_not_emptied():
    ex = _random_examples(21)  # 21 pairs in batches of 10: the tail batch has 1 row
    ranks = [TranslationBatches(ex, PAD, BOS, EOS, batch_sentences=10, seed=0, rank=r, world_size=2) for r in range(2)]
    sizes = sorted(len(b) for b in ranks[0]._plan)
    assert sizes == [10, 11]  # the 1-row tail joined the batch before it
    seen = [x for _ in range(len(ranks[0])) for r in ranks for x in _real(r.next_batch())]
    assert sorted(seen) == sorted(tuple(s) for s in ex.src)  # still every pair once per epoch


def test_budget_smaller_than_longest_pair_is_an_error():
    with pytest.raises(QKVError, match="smaller than the longest pair"):
        TranslationBatches(_random_examples(50), PAD, BOS, EOS, batch_tokens=10)


def test_eval_batches_cover_every_pair_once():
    """Every (source, target) pair exactly once, as a pair: a duplicated pair and a dropped one of equal
    length would keep the token counts but not these multisets."""
    ex = _random_examples(120)
    pairs = []
    for b in eval_batches(ex, PAD, BOS, EOS, batch_tokens=200):
        for src, mask, tgt in zip(b["src"], b["src_mask"], b["tgt_out"], strict=True):
            pairs.append((tuple(src[mask].tolist()), tuple(tgt[tgt != -100].tolist())))
    assert sorted(pairs) == sorted((tuple(s), tuple(t) + (EOS,)) for s, t in zip(ex.src, ex.tgt, strict=True))
