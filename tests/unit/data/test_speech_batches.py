"""Training batches of speech: every batch is drawn from one source and one length bucket (connected strings of one
digit count, or one length share of a source's recordings), the buckets cover the source, the sources and lengths
still mix over batches, and bucketing pads less than drawing every row at random."""

import numpy as np
import pytest
import torch

from qkv.data.audio import SAMPLE_RATE
from qkv.data.speech import fsdd_clips
from qkv.data.transcribing import ClipPool, ConnectedPool, Recording, SpeechBatches, SpeechDataConfig
from qkv.errors import QKVError
from qkv.tasks.speech import read_speech_data, speech_tokenizer
from speech_fixtures import fsdd_root


@pytest.fixture(scope="module")
def data():
    fsdd_root()  # a clear failure where FSDD is missing
    return read_speech_data(SpeechDataConfig(source="fsdd-digits+fsdd-connected"))


def _batches(data, cfg: SpeechDataConfig, n: int, seed: int = 0, rows: int = 8, rank: int = 0, world: int = 1):
    tok = speech_tokenizer(data.train_texts)
    pools = data.pools if cfg == SpeechDataConfig(source=cfg.source) else read_speech_data(cfg).pools  # the fixture's
    source = SpeechBatches(pools, cfg, tok, 64, 1000, rows, seed=seed, rank=rank, world_size=world)
    return [source.next_batch() for _ in range(n)], tok


def _texts(batch, tok) -> list[str]:
    return [tok.decode([i for i in row.tolist() if i >= 0 and i != tok.eos_id]).strip() for row in batch["tgt_out"]]


def test_each_batch_is_one_source_and_one_digit_count_and_all_of_them_come(data):
    batches, tok = _batches(data, SpeechDataConfig(source="fsdd-digits+fsdd-connected"), 120)
    single, counts = 0, set()
    for b in batches:
        words = {len(t.split()) for t in _texts(b, tok)}
        assert len(words) == 1, words  # one digit count per batch
        counts |= words
        single += int(b["mel"].size(-1) < 120)  # single FSDD digits are under 1.2 s
    assert counts == set(range(1, 8))
    assert 30 <= single <= 90  # about half the batches are single digits, half connected strings


def test_unbucketed_batches_mix_digit_counts_and_pad_more(data):
    cfg = SpeechDataConfig(source="fsdd-digits+fsdd-connected")
    flat = SpeechDataConfig(source="fsdd-digits+fsdd-connected", length_buckets=1)
    (bucketed, tok), (mixed, _) = _batches(data, cfg, 80), _batches(data, flat, 80)
    assert any(len({len(t.split()) for t in _texts(b, tok)}) > 1 for b in mixed)

    def padding(batches) -> float:
        return 1 - sum(int(b["frames"].sum()) for b in batches) / sum(b["mel"].size(0) * b["mel"].size(-1)
                                                                        for b in batches)
    assert padding(bucketed) < 0.65 * padding(mixed), (padding(bucketed), padding(mixed))


def test_clip_buckets_split_the_recordings_by_length_and_cover_them():
    rng = np.random.default_rng(0)
    items = [Recording(torch.zeros(int(rng.integers(400, 40000))), f"r{i}") for i in range(300)]
    pool = ClipPool(items, buckets=8)
    assert pool.buckets == 300 // ClipPool.MIN_BUCKET == 4  # no bucket under MIN_BUCKET recordings
    assert sorted(i for share in pool.members for i in share) == list(range(300))
    longest = [max(len(items[i].wave) for i in share) for share in pool.members]
    shortest = [min(len(items[i].wave) for i in share) for share in pool.members]
    assert all(longest[k] <= shortest[k + 1] for k in range(3))
    drawn = {len(pool.draw(np.random.default_rng(s), 3).wave) for s in range(200)}
    assert min(drawn) >= shortest[3]
    assert ClipPool(items[:50], buckets=8).buckets == 1
    with pytest.raises(QKVError, match="no training recordings"):
        ClipPool([])


def test_a_connected_bucket_is_its_digit_count_and_validation_draws_every_count(data):
    clips = fsdd_clips(fsdd_root())[:300]
    pool = ConnectedPool(clips, SpeechDataConfig(source="fsdd-connected", digits=[2, 5]))
    assert pool.buckets == 4
    for b in range(4):
        assert {len(pool.draw(np.random.default_rng(s), b).text.split()) for s in range(10)} == {2 + b}
    counts = {len(pool.draw(np.random.default_rng(s), None).text.split()) for s in range(60)}
    assert counts == {2, 3, 4, 5}
    assert all(pool.draw(np.random.default_rng(s), None).seconds < 10 * SAMPLE_RATE for s in range(3))


def test_two_ranks_take_their_halves_of_the_one_process_batch(data):
    cfg = SpeechDataConfig(source="fsdd-digits+fsdd-connected")
    (whole, tok), (r0, _), (r1, _) = (_batches(data, cfg, 6, seed=3), _batches(data, cfg, 6, seed=3, world=2),
                                    _batches(data, cfg, 6, seed=3, rank=1, world=2))
    for w, a, b in zip(whole, r0, r1, strict=True):
        assert _texts(w, tok) == _texts(a, tok) + _texts(b, tok)
        assert torch.equal(w["frames"], torch.cat([a["frames"], b["frames"]]))


def test_length_buckets_below_one_are_refused():
    with pytest.raises(ValueError, match="length_buckets must be at least 1"):
        SpeechDataConfig(length_buckets=0)
