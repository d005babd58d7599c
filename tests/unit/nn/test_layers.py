"""Positional encodings, norms, MLP and the residual block: formulas and invariants.

Parity of the norms and of the block against torch's modules is in tests/parity/test_torch_parity.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qkv.nn import (
    MLP,
    LayerNorm,
    RMSNorm,
    SinusoidalPositionalEncoding,
    TransformerBlock,
    apply_rope,
    make_norm,
    padding_mask,
    rope_angles,
    sinusoidal_table,
)

# ---------------------------------------------------------------------------------------------------------
# sinusoidal


@pytest.mark.parametrize("dim", [16, 7])  # odd widths: one more sine column than cosine columns
def test_sinusoidal_table_matches_formula(dim):
    table = sinusoidal_table(60, dim)
    assert table.shape == (60, dim)
    for pos in (0, 1, 5, 59):
        for col in range(dim):
            i = col // 2
            angle = pos / 10000 ** (2 * i / dim)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert table[pos, col].item() == pytest.approx(expected, abs=1e-5), (pos, col)


def test_sinusoidal_module_looks_up_rows_and_has_no_state():
    pe = SinusoidalPositionalEncoding(20, 8)
    torch.testing.assert_close(pe(torch.tensor([3, 0, 7])), sinusoidal_table(20, 8)[[3, 0, 7]])
    assert list(pe.parameters()) == [] and pe.state_dict() == {}


# ---------------------------------------------------------------------------------------------------------
# RoPE

D = 8


def _rope_at(x: torch.Tensor, pos: int) -> torch.Tensor:
    """Rotate one (D,) vector as if it sat at position `pos`."""
    cos, sin = rope_angles(torch.tensor([pos]), D)
    return apply_rope(x.view(1, 1, 1, D), cos, sin).view(D)


def test_rope_matches_pairwise_rotation_formula():
    """Pair (i, i + D/2) turns by pos · base^(-2i/D): written out with plain trigonometry."""
    x = torch.randn(2, 3, 5, D)
    positions = torch.tensor([0, 1, 4, 9, 30])
    out = apply_rope(x, *rope_angles(positions, D))
    half = D // 2
    expected = torch.empty_like(x)
    for t, pos in enumerate(positions.tolist()):
        for i in range(half):
            theta = pos / 10000.0 ** (2 * i / D)
            a, b = x[..., t, i], x[..., t, i + half]
            expected[..., t, i] = a * math.cos(theta) - b * math.sin(theta)
            expected[..., t, i + half] = a * math.sin(theta) + b * math.cos(theta)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("offset", [0, 2, 5])
def test_rope_dot_product_depends_only_on_relative_offset(offset):
    q, k = torch.randn(D), torch.randn(D)
    dots = [_rope_at(q, m + offset) @ _rope_at(k, m) for m in (0, 3, 11, 40)]
    for d in dots[1:]:
        torch.testing.assert_close(d, dots[0], atol=1e-5, rtol=1e-5)
    if offset:  # and it does depend on the offset (otherwise the property above is vacuous)
        assert not torch.allclose(dots[0], _rope_at(q, 0) @ _rope_at(k, 0), atol=1e-3)


def test_rope_preserves_norm_and_is_identity_at_position_zero():
    x = torch.randn(D)
    torch.testing.assert_close(_rope_at(x, 0), x)
    torch.testing.assert_close(_rope_at(x, 17).norm(), x.norm())


# ---------------------------------------------------------------------------------------------------------
# norms


def test_rmsnorm_formula():
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 4, 6) * 5
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_layernorm_is_centred_and_scaled():
    y = LayerNorm(16)(torch.randn(4, 16) * 7 + 3)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_make_norm():
    assert isinstance(make_norm("layernorm", 4), LayerNorm)
    assert "bias" not in make_norm("layernorm", 4, bias=False).state_dict()
    rms = make_norm("rmsnorm", 4, eps=1e-3)
    assert isinstance(rms, RMSNorm) and rms.eps == 1e-3
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'"):
        make_norm("batchnorm", 4)


# ---------------------------------------------------------------------------------------------------------
# MLP


@pytest.mark.parametrize(
    "activation,torch_act",
    [("gelu", nn.GELU()), ("gelu_tanh", nn.GELU(approximate="tanh")), ("relu", nn.ReLU())],
)
def test_mlp_matches_sequential(fwd_bwd_close, activation, torch_act):
    mlp = MLP(8, 32, activation)
    ref = nn.Sequential(nn.Linear(8, 32), torch_act, nn.Linear(32, 8))
    ref[0].load_state_dict(mlp.up.state_dict())
    ref[2].load_state_dict(mlp.down.state_dict())
    fwd_bwd_close(
        mlp,
        ref,
        [torch.randn(2, 5, 8)],
        lambda: [(mlp.up.weight.grad, ref[0].weight.grad), (mlp.down.bias.grad, ref[2].bias.grad)],
    )


def test_mlp_unknown_activation_raises():
    with pytest.raises(ValueError, match="unknown activation 'silu'"):
        MLP(8, 16, "silu")  # used to fall through to GELU silently


def test_mlp_acts_per_token():
    mlp = MLP(8, 16)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(mlp(x)[:, 2], mlp(x[:, 2]))


# ---------------------------------------------------------------------------------------------------------
# TransformerBlock


def test_block_is_pre_norm_residual():
    """x + attn(norm1(x)), then + mlp(norm2(.)): rebuilt by hand from the block's own parts."""
    block = TransformerBlock(16, 4, 32, norm="rmsnorm").eval()
    x = torch.randn(2, 5, 16)
    h = x + block.attn(block.norm1(x), causal=True)[0]
    expected = h + block.mlp(block.norm2(h))
    out, weights = block(x)
    torch.testing.assert_close(out, expected)
    assert weights == {"self": None}


def test_decoder_block_cross_attention_ignores_memory_padding():
    block = TransformerBlock(16, 4, 32, cross_attention=True).eval()
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    ref, w = block(x, memory=memory, need_weights=True)
    assert w["self"].shape == (2, 4, 3, 3) and w["cross"].shape == (2, 4, 3, 5)
    padded = torch.cat([memory, torch.randn(2, 4, 16)], dim=1)  # (2, 9, 16)
    out, w = block(x, memory=padded, memory_mask=padding_mask(torch.tensor([5, 5]), 9), need_weights=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert (w["cross"][..., 5:] == 0).all()


def test_block_gelu_matches_functional():
    # the default activation is exact GELU, not the tanh approximation
    block = TransformerBlock(8, 2, 16)
    x = torch.randn(3, 8)
    torch.testing.assert_close(block.mlp(x), block.mlp.down(F.gelu(block.mlp.up(x))))
