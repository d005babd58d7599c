"""qkv.nn against PyTorch's own implementations: forward pass and every gradient, fp32, atol 1e-5.

- `attention_reference` vs ``F.scaled_dot_product_attention`` (no mask, causal, padding, cross shapes);
- `MultiHeadAttention` vs ``nn.MultiheadAttention(batch_first=True)`` with copied weights;
- `TransformerBlock` (no cross-attention) vs ``nn.TransformerEncoderLayer(norm_first=True)``;
- `LayerNorm` / `RMSNorm` vs ``nn.LayerNorm`` / ``nn.RMSNorm``.

Torch's masks mean the opposite of ours: in ``nn.MultiheadAttention`` a True in ``attn_mask`` or
``key_padding_mask`` means "may NOT attend", so the tests pass ``~mask``.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qkv.nn import LayerNorm, MultiHeadAttention, RMSNorm, TransformerBlock, attention_reference

B, H, D = 2, 3, 8
C = H * D


def _lengths_mask(lengths: list[int], t: int) -> torch.Tensor:
    """(B, t) bool, True at the first lengths[b] positions; built by hand, independent of qkv.nn.masks."""
    mask = torch.zeros(len(lengths), t, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    return mask


def _tril(t_q: int, t_k: int) -> torch.Tensor:
    """(Tq, Tk) bool, query i sees key j iff j <= i + (Tk - Tq): the bottom-right-aligned causal triangle."""
    i = torch.arange(t_q)[:, None]
    j = torch.arange(t_k)[None, :]
    return j <= i + (t_k - t_q)


# ---------------------------------------------------------------------------------------------------------
# attention_reference vs F.scaled_dot_product_attention

# (name, Tq, Tk, mask builder -> bool mask broadcastable to (B, H, Tq, Tk) or None)
ATTENTION_CASES = [
    ("no_mask", 5, 5, lambda tq, tk: None),
    ("causal", 5, 5, lambda tq, tk: _tril(tq, tk)),
    ("padding", 5, 5, lambda tq, tk: _lengths_mask([5, 3], tk)[:, None, None, :]),
    ("causal_padding", 5, 5, lambda tq, tk: _tril(tq, tk) & _lengths_mask([5, 3], tk)[:, None, None, :]),
    ("cross_no_mask", 3, 7, lambda tq, tk: None),
    ("cross_padding", 3, 7, lambda tq, tk: _lengths_mask([7, 2], tk)[:, None, None, :]),
    ("cross_causal_offset", 3, 7, lambda tq, tk: _tril(tq, tk)),  # 3 new queries after 4 cached keys
]


@pytest.mark.parametrize("name,t_q,t_k,make_mask", ATTENTION_CASES, ids=[c[0] for c in ATTENTION_CASES])
def test_attention_reference_matches_sdpa(fwd_bwd_close, name, t_q, t_k, make_mask):
    q, k, v = torch.randn(B, H, t_q, D), torch.randn(B, H, t_k, D), torch.randn(B, H, t_k, D)
    mask = make_mask(t_q, t_k)
    fwd_bwd_close(
        lambda q, k, v: attention_reference(q, k, v, mask)[0],
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        [q, k, v],
    )


def test_attention_reference_causal_matches_sdpa_is_causal(fwd_bwd_close):
    """SDPA building its own triangle (is_causal) is an independent reference for our mask."""
    q, k, v = (torch.randn(B, H, 6, D) for _ in range(3))
    fwd_bwd_close(
        lambda q, k, v: attention_reference(q, k, v, _tril(6, 6))[0],
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        [q, k, v],
    )


@pytest.mark.parametrize("name,t_q,t_k,make_mask", ATTENTION_CASES, ids=[c[0] for c in ATTENTION_CASES])
def test_attention_weights_are_distributions_with_exact_zeros(name, t_q, t_k, make_mask):
    q, k, v = torch.randn(B, H, t_q, D), torch.randn(B, H, t_k, D), torch.randn(B, H, t_k, D)
    mask = make_mask(t_q, t_k)
    _, weights = attention_reference(q, k, v, mask)
    assert weights.shape == (B, H, t_q, t_k)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, t_q), atol=1e-6, rtol=0)
    assert (weights >= 0).all()
    if mask is not None:
        blocked = ~mask.expand(B, H, t_q, t_k)
        assert blocked.any()
        assert (weights[blocked] == 0).all(), "masked positions must get exactly zero weight"
        assert (weights[~blocked] > 0).all()


# ---------------------------------------------------------------------------------------------------------
# MultiHeadAttention vs nn.MultiheadAttention


def _torch_mha_from(ours: MultiHeadAttention, bias: bool) -> nn.MultiheadAttention:
    """nn.MultiheadAttention with our weights: in_proj_weight rows are [q; k; v], out_proj is o_proj."""
    theirs = nn.MultiheadAttention(C, H, bias=bias, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.out_proj.weight.copy_(ours.o_proj.weight)
        if bias:
            theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
            theirs.out_proj.bias.copy_(ours.o_proj.bias)
    return theirs


def _mha_grad_pairs(ours: MultiHeadAttention, theirs: nn.MultiheadAttention, bias: bool):
    def pairs():
        w = theirs.in_proj_weight.grad
        out = [
            (ours.q_proj.weight.grad, w[:C]),
            (ours.k_proj.weight.grad, w[C : 2 * C]),
            (ours.v_proj.weight.grad, w[2 * C :]),
            (ours.o_proj.weight.grad, theirs.out_proj.weight.grad),
        ]
        if bias:
            b = theirs.in_proj_bias.grad
            out += [
                (ours.q_proj.bias.grad, b[:C]),
                (ours.k_proj.bias.grad, b[C : 2 * C]),
                (ours.v_proj.bias.grad, b[2 * C :]),
                (ours.o_proj.bias.grad, theirs.out_proj.bias.grad),
            ]
        return out

    return pairs


def _random_biases(module: nn.Module) -> None:
    """Both libraries initialise biases to 0; make them non-zero so a mis-copied bias shows up."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "reference"])
def test_mha_self_attention_causal_matches_torch(fwd_bwd_close, bias, need_weights):
    T = 6
    ours = MultiHeadAttention(C, H, bias=bias)
    _random_biases(ours)
    theirs = _torch_mha_from(ours, bias)
    not_allowed = ~_tril(T, T)  # torch: True = may NOT attend
    fwd_bwd_close(
        lambda x: ours(x, causal=True, need_weights=need_weights)[0],
        lambda x: theirs(x, x, x, attn_mask=not_allowed, need_weights=False)[0],
        [torch.randn(B, T, C)],
        _mha_grad_pairs(ours, theirs, bias),
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "reference"])
def test_mha_cross_attention_key_padding_matches_torch(fwd_bwd_close, bias, need_weights):
    Tq, Tk = 4, 7
    ours = MultiHeadAttention(C, H, bias=bias)
    _random_biases(ours)
    theirs = _torch_mha_from(ours, bias)
    key_mask = _lengths_mask([7, 3], Tk)  # ours: True = real token
    fwd_bwd_close(
        lambda x, ctx: ours(x, ctx, key_mask=key_mask, need_weights=need_weights)[0],
        lambda x, ctx: theirs(x, ctx, ctx, key_padding_mask=~key_mask, need_weights=False)[0],
        [torch.randn(B, Tq, C), torch.randn(B, Tk, C)],
        _mha_grad_pairs(ours, theirs, bias),
    )


def test_mha_weights_match_torch_per_head_weights():
    Tq, Tk = 4, 7
    ours = MultiHeadAttention(C, H)
    theirs = _torch_mha_from(ours, bias=True)
    x, ctx = torch.randn(B, Tq, C), torch.randn(B, Tk, C)
    key_mask = _lengths_mask([7, 3], Tk)
    _, w_ours = ours(x, ctx, key_mask=key_mask, need_weights=True)
    _, w_theirs = theirs(
        x, ctx, ctx, key_padding_mask=~key_mask, need_weights=True, average_attn_weights=False
    )
    torch.testing.assert_close(w_ours, w_theirs, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# TransformerBlock vs nn.TransformerEncoderLayer (pre-norm)


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_block_matches_torch_encoder_layer(fwd_bwd_close, activation):
    T, d_ff = 5, 4 * C
    ours = TransformerBlock(C, H, d_ff, activation=activation)
    _random_biases(ours)
    theirs = nn.TransformerEncoderLayer(
        C, H, dim_feedforward=d_ff, dropout=0.0, activation=activation, batch_first=True, norm_first=True
    )
    with torch.no_grad():
        attn = ours.attn
        theirs.self_attn.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        theirs.self_attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        theirs.self_attn.out_proj.weight.copy_(attn.o_proj.weight)
        theirs.self_attn.out_proj.bias.copy_(attn.o_proj.bias)
        for mine, torch_lin in ((ours.mlp.up, theirs.linear1), (ours.mlp.down, theirs.linear2)):
            torch_lin.weight.copy_(mine.weight)
            torch_lin.bias.copy_(mine.bias)
        for mine, torch_norm in ((ours.norm1, theirs.norm1), (ours.norm2, theirs.norm2)):
            mine.weight.normal_()
            torch_norm.weight.copy_(mine.weight)
            torch_norm.bias.copy_(mine.bias)
    key_mask = _lengths_mask([5, 4], T)

    def pairs():
        return [
            (ours.mlp.up.weight.grad, theirs.linear1.weight.grad),
            (ours.mlp.down.bias.grad, theirs.linear2.bias.grad),
            (ours.norm1.weight.grad, theirs.norm1.weight.grad),
            (ours.norm2.bias.grad, theirs.norm2.bias.grad),
            (ours.attn.q_proj.weight.grad, theirs.self_attn.in_proj_weight.grad[:C]),
            (ours.attn.o_proj.weight.grad, theirs.self_attn.out_proj.weight.grad),
        ]

    fwd_bwd_close(
        lambda x: ours(x, causal=True, key_mask=key_mask)[0],
        lambda x: theirs(x, src_mask=~_tril(T, T), src_key_padding_mask=~key_mask),
        [torch.randn(B, T, C)],
        pairs,
    )


# ---------------------------------------------------------------------------------------------------------
# Norms


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(fwd_bwd_close, bias):
    ours = LayerNorm(C, eps=1e-5, bias=bias)
    theirs = nn.LayerNorm(C, eps=1e-5, bias=bias)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
        if bias:
            ours.bias.normal_()
            theirs.bias.copy_(ours.bias)
    assert (ours.bias is None) == (theirs.bias is None)

    def pairs():
        out = [(ours.weight.grad, theirs.weight.grad)]
        if bias:
            out.append((ours.bias.grad, theirs.bias.grad))
        return out

    # an offset and scale on the input so centring and scaling both matter
    fwd_bwd_close(ours, theirs, [3.0 + 2.0 * torch.randn(B, 5, C)], pairs)


def test_rmsnorm_matches_torch(fwd_bwd_close):
    ours = RMSNorm(C, eps=1e-5)
    theirs = nn.RMSNorm(C, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    fwd_bwd_close(
        ours, theirs, [3.0 + 2.0 * torch.randn(B, 5, C)], lambda: [(ours.weight.grad, theirs.weight.grad)]
    )
