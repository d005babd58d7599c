"""The captioner: the patch embedding and 2-D (and temporal) positions have known shapes and values; its
cross-attention over the patches passes translation's parity and padding checks; decoding is translation's
(greedy == beam 1, cached == uncached); the pooled baseline gives the decoder one key; save/load round-trips."""

import math

import pytest
import torch
import torch.nn.functional as F

from qkv.generation.seq2seq import SequenceDecoding, beam_search, greedy_decode
from qkv.models.captioner import Captioner, CaptionerConfig, patch_positions
from qkv.models.io import load_model, save_run
from qkv.nn.positional import sincos_2d, sinusoidal_table


def tiny(**kw) -> Captioner:
    torch.manual_seed(0)
    cfg = dict(image_size=16, patch_size=4, d_model=32, n_encoder_layers=2, n_decoder_layers=2, n_heads=4,
               vocab_size=30, max_seq_len=24, dropout=0.0)
    return Captioner(CaptionerConfig(**(cfg | kw))).eval()


def test_patch_embedding_is_a_linear_map_of_each_flattened_patch():
    m = tiny()
    x = torch.randn(2, 3, 16, 16)
    got = m.patchify(x)  # (B, P, C)
    assert got.shape == (2, 16, 32)
    patches = F.unfold(x, kernel_size=4, stride=4).transpose(1, 2)  # (B, P, 3·4·4), patches in reading order
    W = m.patch_embed.weight.reshape(32, -1)  # (C, 48)
    want = patches @ W.T + m.patch_embed.bias + sincos_2d(32, 4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert m.patch_dim == 48


def test_two_d_positions_have_the_sin_cos_values_of_row_and_column():
    pos = patch_positions(CaptionerConfig(image_size=16, patch_size=4, d_model=32))
    assert pos.shape == (16, 32)
    # patch (row 2, column 1): features 0..7 sin(row·ω), 8..15 cos(row·ω), 16..23 sin(col·ω), 24..31 cos(col·ω)
    omega = 1.0 / 10000 ** (torch.arange(8, dtype=torch.float64) / 8)
    r, c = 2, 1
    want = torch.cat([torch.sin(r * omega), torch.cos(r * omega), torch.sin(c * omega), torch.cos(c * omega)])
    torch.testing.assert_close(pos[r * 4 + c], want.float())
    assert pos[0, :8].abs().max() == 0 and (pos[0, 8:16] == 1).all()  # the top-left patch: sin 0, cos 0
    assert len({tuple(p.tolist()) for p in pos}) == 16  # every patch has its own position


def test_clip_positions_add_each_frames_sinusoid_to_the_same_grid():
    cfg = CaptionerConfig(image_size=16, patch_size=4, d_model=32, frames=3)
    pos = patch_positions(cfg)
    assert pos.shape == (48, 32) and cfg.n_patches == 48
    grid, time = sincos_2d(32, 4), sinusoidal_table(3, 32)
    for f in range(3):
        torch.testing.assert_close(pos[f * 16 : (f + 1) * 16], grid + time[f])
    m = tiny(frames=3)
    assert m.patchify(torch.randn(2, 3, 3, 16, 16)).shape == (2, 48, 32)
    x = torch.randn(1, 3, 3, 16, 16)
    # reversing the frames changes the memory: the temporal positions tell the order
    assert not torch.allclose(m.encode(x), m.encode(x.flip(1)))


def test_wrong_input_shapes_are_refused():
    with pytest.raises(ValueError, match="reads 1 frame"):
        tiny().patchify(torch.randn(1, 3, 20, 20))
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        CaptionerConfig(image_size=18, patch_size=4)
    with pytest.raises(ValueError, match="unknown memory"):
        CaptionerConfig(memory="mean")


@pytest.mark.parametrize("memory", ["patches", "pooled"])
def test_forward_shapes_and_loss(memory):
    m = tiny(memory=memory)
    x, tgt = torch.randn(2, 3, 16, 16), torch.randint(3, 30, (2, 7))
    out = tgt.clone()
    out[1, 4:] = -100
    logits, loss, _ = m(x, None, tgt, out)
    assert logits.shape == (2, 7, 30)
    want = F.cross_entropy(logits.flatten(0, 1), out.flatten(), ignore_index=-100)
    torch.testing.assert_close(loss, want)
    assert m.encode(x).shape == ((2, 16, 32) if memory == "patches" else (2, 1, 32))


def test_cross_attention_over_patches_reference_path_equals_fused_path():
    """Translation's parity check: the readable attention (weights kept) gives the fused kernel's logits."""
    m = tiny()
    x, tgt = torch.randn(3, 3, 16, 16), torch.randint(3, 30, (3, 6))
    memory, mask = m.encode(x), m.memory_mask(3)
    fused = m.decode(memory, mask, tgt)
    readable, maps = m._decoder(memory, mask, tgt, None, False, need_weights=True)
    torch.testing.assert_close(readable, fused, atol=1e-5, rtol=1e-5)
    for w in maps["cross"]:
        assert w.shape == (3, 4, 6, 16)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 6))


def test_cross_attention_ignores_padded_memory_and_captions_are_causal():
    """Translation's padding checks: masked keys appended to the memory change nothing, and a caption's padding
    (or anything after position t) does not reach position t."""
    m = tiny()
    x, tgt = torch.randn(2, 3, 16, 16), torch.randint(3, 30, (2, 6))
    memory, mask = m.encode(x), m.memory_mask(2)
    base = m.decode(memory, mask, tgt)
    padded = torch.cat([memory, torch.randn(2, 5, 32) * 10], dim=1)  # (B, P + 5, C)
    pmask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(m.decode(padded, pmask, tgt), base, atol=1e-5, rtol=1e-5)
    longer = torch.cat([tgt, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # 3 pad ids appended
    torch.testing.assert_close(m.decode(memory, mask, longer)[:, :6], base, atol=1e-5, rtol=1e-5)


def test_the_pooled_baseline_gives_every_word_one_key():
    m = tiny(memory="pooled")
    x, tgt = torch.randn(2, 3, 16, 16), torch.randint(3, 30, (2, 5))
    maps = m.attention_maps(x, m.memory_mask(2), tgt)["cross"]
    assert all(w.shape == (2, 4, 5, 1) and torch.equal(w, torch.ones_like(w)) for w in maps)
    # the pooled memory is the mean of the patch memory
    pm = tiny(memory="patches")
    pm.load_state_dict(m.state_dict())
    torch.testing.assert_close(m.encode(x), pm.encode(x).mean(1, keepdim=True))


@pytest.mark.parametrize("memory", ["patches", "pooled"])
def test_greedy_equals_beam_one_and_cached_equals_uncached(memory):
    m = tiny(memory=memory)
    x = torch.randn(5, 3, 16, 16)
    mask = m.memory_mask(5)
    cached = greedy_decode(m, x, mask, 1, 2, 0.0, 12)
    uncached = greedy_decode(m, x, mask, 1, 2, 0.0, 12, use_cache=False)
    beam1 = [h.tokens for h in beam_search(m, x, mask, 1, 2, SequenceDecoding(beam=1, max_len_a=0.0, max_len_b=12))]
    assert cached == uncached == beam1
    assert all(len(c) <= 12 for c in cached)


def test_init_and_parameter_count():
    m = tiny()
    cfg = m.config
    assert m.lm_head.weight is m.tgt_emb.weight
    per_block = 4 * (32 * 32 + 32) + 2 * 32 * 128 + 128 + 32 + 2 * 2 * 32  # attention, MLP, two norms
    per_dec = per_block + 4 * (32 * 32 + 32) + 2 * 32
    want = 48 * 32 + 32 + 30 * 32 + 2 * per_block + 2 * per_dec + 2 * 2 * 32
    assert m.num_params() == want
    assert m.num_params(non_embedding=True) == want - 30 * 32
    w = m.patch_embed.weight.reshape(32, -1)
    bound = math.sqrt(6 / (48 + 32))  # Xavier-uniform of the flattened patch map
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert cfg.memory_length == 16


def test_save_load_round_trip(tmp_path):
    m = tiny(frames=2)
    save_run(tmp_path, m)
    back, saved = load_model(tmp_path)
    assert saved["model_type"] == "captioner" and type(back) is Captioner and back.config == m.config
    x, tgt = torch.randn(1, 2, 3, 16, 16), torch.randint(3, 30, (1, 4))
    torch.testing.assert_close(back(x, None, tgt).logits, m(x, None, tgt).logits)
