"""MultiHeadAttention: the reference path equals the fused path, masks mean what they say, caches are exact.

References against torch itself (SDPA, nn.MultiheadAttention) live in tests/parity/test_torch_parity.py.
"""

import pytest
import torch

from qkv.nn import LayerKVCache, MultiHeadAttention, causal_mask, padding_mask
from qkv.nn.attention import KVCache
from qkv.nn.masks import combine, key_padding_to_attn
from qkv.nn.positional import rope_angles

B, H, D = 2, 4, 6
C = H * D


# ---------------------------------------------------------------------------------------------------------
# masks


def test_causal_mask_is_bottom_right_aligned():
    assert causal_mask(3, 3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # 2 new queries after 3 cached keys: query 0 is position 3, sees keys 0..3
    assert causal_mask(2, 5).tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_padding_mask_and_combine():
    pm = padding_mask(torch.tensor([3, 1]), 4)
    assert pm.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert key_padding_to_attn(pm).shape == (2, 1, 1, 4)
    assert combine(None, None) is None
    both = combine(causal_mask(4, 4), None, key_padding_to_attn(pm))
    assert both.shape == (2, 1, 4, 4)
    assert both[0, 0].tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, False],
    ]


# ---------------------------------------------------------------------------------------------------------
# need_weights=True (attention_reference) vs the default F.scaled_dot_product_attention path


def _reference_vs_fast(fwd_bwd_close, mha: MultiHeadAttention, inputs, **kwargs):
    """The two code paths of one module: outputs, input grads and every parameter grad must agree."""
    fast = MultiHeadAttention(C, H, d_head=mha.d_head, d_context=mha.k_proj.in_features)
    fast.load_state_dict(mha.state_dict())

    def pairs():
        named = dict(fast.named_parameters())
        return [(p.grad, named[n].grad) for n, p in mha.named_parameters()]

    fwd_bwd_close(
        lambda *xs: mha(*xs, need_weights=True, **kwargs)[0],
        lambda *xs: fast(*xs, **kwargs)[0],
        inputs,
        pairs,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"causal": True},  # the plain causal case: SDPA's is_causal
        {"key_mask": padding_mask(torch.tensor([6, 4]), 6)},
        {"causal": True, "key_mask": padding_mask(torch.tensor([6, 4]), 6)},
        # a sliding window of 3 (key j >= query i - 2) on top of causal: a band, never an empty row
        {"attn_mask": torch.arange(6)[None, :] >= torch.arange(6)[:, None] - 2, "causal": True},
    ],
    ids=["none", "causal", "padding", "causal_padding", "window_causal"],
)
def test_self_attention_reference_path_equals_fast_path(fwd_bwd_close, kwargs):
    mha = MultiHeadAttention(C, H)
    _reference_vs_fast(fwd_bwd_close, mha, [torch.randn(B, 6, C)], **kwargs)


@pytest.mark.parametrize("with_mask", [False, True])
def test_cross_attention_reference_path_equals_fast_path(fwd_bwd_close, with_mask):
    mha = MultiHeadAttention(C, H, d_head=5, d_context=10)  # inner width 20 ≠ C, context width 10 ≠ C
    kwargs = {"key_mask": padding_mask(torch.tensor([7, 2]), 7)} if with_mask else {}
    _reference_vs_fast(fwd_bwd_close, mha, [torch.randn(B, 3, C), torch.randn(B, 7, 10)], **kwargs)


def test_rope_reference_path_equals_fast_path(fwd_bwd_close):
    mha = MultiHeadAttention(C, H)
    rope = rope_angles(torch.arange(5), D)
    _reference_vs_fast(fwd_bwd_close, mha, [torch.randn(B, 5, C)], causal=True, rope=rope)


def test_weights_shape_and_none_on_fast_path():
    mha = MultiHeadAttention(C, H)
    x, ctx = torch.randn(B, 3, C), torch.randn(B, 7, C)
    out, w = mha(x, ctx, need_weights=True)
    assert out.shape == (B, 3, C) and w.shape == (B, H, 3, 7)
    assert mha(x, ctx)[1] is None


def test_causal_weights_are_lower_triangular():
    mha = MultiHeadAttention(C, H)
    _, w = mha(torch.randn(B, 5, C), causal=True, need_weights=True)
    assert (w.triu(diagonal=1) == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, 5))


# ---------------------------------------------------------------------------------------------------------
# padding invariance: pad keys, whatever they contain, change nothing for the real queries


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "reference"])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_ignores_appended_pad_tokens(need_weights, causal):
    mha = MultiHeadAttention(C, H).eval()
    T, n_pad = 5, 3
    x = torch.randn(B, T, C)
    ref, _ = mha(x, causal=causal, key_mask=torch.ones(B, T, dtype=torch.bool), need_weights=need_weights)
    for _ in range(2):  # two different random pad contents, both must be invisible
        padded = torch.cat([x, 100.0 * torch.randn(B, n_pad, C)], dim=1)  # (B, T + n_pad, C)
        key_mask = padding_mask(torch.full((B,), T), T + n_pad)
        out, _ = mha(padded, causal=causal, key_mask=key_mask, need_weights=need_weights)
        torch.testing.assert_close(out[:, :T], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "reference"])
def test_cross_attention_ignores_appended_pad_keys(need_weights):
    mha = MultiHeadAttention(C, H).eval()
    x, ctx = torch.randn(B, 4, C), torch.randn(B, 6, C)
    ref, _ = mha(x, ctx, need_weights=need_weights)
    padded_ctx = torch.cat([ctx, 100.0 * torch.randn(B, 3, C)], dim=1)  # (B, 9, C)
    out, w = mha(x, padded_ctx, key_mask=padding_mask(torch.tensor([6, 6]), 9), need_weights=need_weights)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    if need_weights:
        assert (w[..., 6:] == 0).all()


def test_padding_mask_per_row_lengths():
    """Rows with different lengths: each row equals the unpadded computation of that row alone."""
    mha = MultiHeadAttention(C, H).eval()
    lengths = [6, 2]
    x = torch.randn(B, 6, C)
    out, _ = mha(x, causal=True, key_mask=padding_mask(torch.tensor(lengths), 6))
    for b, n in enumerate(lengths):
        alone, _ = mha(x[b : b + 1, :n], causal=True)
        torch.testing.assert_close(out[b : b + 1, :n], alone, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# KV cache at the layer level


@pytest.mark.parametrize("use_rope", [False, True])
def test_self_attention_cache_chunks_equal_full_forward(use_rope):
    mha = MultiHeadAttention(C, H).eval()
    T = 7
    x = torch.randn(B, T, C)
    rope = (lambda s, e: rope_angles(torch.arange(s, e), D)) if use_rope else (lambda s, e: None)
    full, _ = mha(x, causal=True, rope=rope(0, T))
    cache = LayerKVCache.empty(B, H, 10, D)
    pieces = []
    for s, e in [(0, 3), (3, 4), (4, 7)]:  # prefill, one token, a 3-token chunk (offset causal mask)
        y, _ = mha(x[:, s:e], causal=True, rope=rope(s, e), cache=cache)
        pieces.append(y)
    assert cache.length == T
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cross_attention_cache_is_filled_once_and_reused():
    mha = MultiHeadAttention(C, H).eval()
    x, ctx = torch.randn(B, 2, C), torch.randn(B, 6, C)
    ref, _ = mha(x, ctx)
    cache = LayerKVCache.empty(B, H, 1, D)  # capacity is irrelevant: set_static replaces the buffers
    first, _ = mha(x, ctx, cache=cache)
    assert cache.static and cache.length == 6
    again, _ = mha(x, None, cache=cache)  # context no longer needed
    torch.testing.assert_close(first, ref)
    torch.testing.assert_close(again, ref)


def test_cache_overflow_raises():
    cache = LayerKVCache.empty(1, H, 3, D)
    cache.append(torch.zeros(1, H, 2, D), torch.zeros(1, H, 2, D))
    with pytest.raises(ValueError, match="4 positions > capacity 3"):
        cache.append(torch.zeros(1, H, 2, D), torch.zeros(1, H, 2, D))


def test_kv_cache_reorder_and_size():
    cache = KVCache.empty(2, 3, H, 5, D)
    assert cache.capacity == 5 and cache.length == 0
    assert cache.nbytes() == 2 * 2 * 3 * H * 5 * D * 4
    k = torch.arange(3.0)[:, None, None, None].expand(3, H, 1, D)
    for layer in cache.layers:
        layer.append(k, k)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.layers[1].k[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert cache.length == 1
