"""The speedrun options of GPTConfig: each changes what it claims and nothing else.

ReLU², QK-norm, zero-initialised output projections, an untied head, value embeddings, the x0 shortcut with
per-layer residual scalars, and the logit soft-cap. Every option is off by default; a model with an option
at its neutral setting computes exactly what the plain model computes; cached decoding equals uncached with
every option on; a saved run with options reloads and generates identically.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from qkv.generation.lm import generate_ids
from qkv.generation.sampling import TokenSampling
from qkv.models import GPT, GPTConfig
from qkv.models.io import load_model, save_run
from qkv.models.presets import PRESETS
from qkv.nn.attention import MultiHeadAttention
from qkv.nn.mlp import MLP

V, T_MAX = 16, 16
OPTIONS = dict(activation="relu2", qk_norm=True, zero_init_proj=True, tie_embeddings=False, value_embeddings=True,
               x0_shortcut=True, logit_softcap=15.0)


def tiny(**overrides) -> GPTConfig:
    return GPTConfig(**{"vocab_size": V, "max_seq_len": T_MAX, "d_model": 32, "n_layers": 2, "n_heads": 4,
                        **overrides})


def idx(T: int = 10, B: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))  # (B, T)


def twin(**options) -> tuple[GPT, GPT]:
    """A plain model and one with `options`, sharing every tensor the plain one has."""
    torch.manual_seed(0)
    plain = GPT(tiny()).eval()
    other = GPT(tiny(**options)).eval()
    missing, unexpected = other.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    return plain, other


# ------------------------------------------------------------------------------------------------ defaults
def test_every_option_is_off_by_default_and_the_presets_use_none():
    defaults = GPTConfig()
    assert defaults.activation == "gelu" and defaults.tie_embeddings
    assert not (defaults.qk_norm or defaults.zero_init_proj or defaults.value_embeddings or defaults.x0_shortcut)
    assert defaults.logit_softcap is None
    for name, cfg in PRESETS.items():
        assert (cfg.qk_norm, cfg.zero_init_proj, cfg.value_embeddings, cfg.x0_shortcut, cfg.logit_softcap) == \
            (False, False, False, False, None), name


def test_nanogpt_cpu_recipe_config_has_no_speedrun_option():
    from qkv.presets import load_preset

    model = load_preset("shakespeare-char-cpu")["model"]
    assert not set(model) & {"qk_norm", "zero_init_proj", "value_embeddings", "x0_shortcut", "logit_softcap"}
    assert model.get("activation", "gelu") == "gelu" and model.get("tie_embeddings", True)


@pytest.mark.parametrize("value", [0.0, -15.0])
def test_softcap_must_be_positive(value):
    with pytest.raises(ValueError, match="logit_softcap must be positive"):
        tiny(logit_softcap=value)


# ------------------------------------------------------------------------------------------------ each option
def test_relu2_is_the_square_of_relu():
    torch.manual_seed(0)
    mlp = MLP(8, 32, "relu2", bias=True)
    x = torch.randn(3, 5, 8)
    want = mlp.down(F.relu(mlp.up(x)) ** 2)
    assert torch.allclose(mlp(x), want, atol=1e-6)
    assert not torch.allclose(mlp(x), MLP.forward(_with(mlp, "relu"), x), atol=1e-3)


def _with(mlp: MLP, activation: str) -> MLP:
    other = MLP(8, 32, activation, bias=True)
    other.load_state_dict(mlp.state_dict())
    return other


def test_qk_norm_normalises_queries_and_keys_per_head():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, qk_norm=True).eval()
    x = torch.randn(2, 7, 32)
    out, weights = attn(x, causal=True, need_weights=True)
    q = attn.q_proj(x).view(2, 7, 4, 8).transpose(1, 2)  # (B, H, T, D)
    k = attn.k_proj(x).view(2, 7, 4, 8).transpose(1, 2)  # (B, H, T, D)
    q, k = q / q.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt(), k / k.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    scores = (q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), -torch.inf)
    assert torch.allclose(weights, scores.softmax(-1), atol=1e-5)
    # the point of the norm: scaling W_Q and W_K changes nothing (without it, the softmax sharpens)
    fast, _ = attn(x, causal=True)
    with torch.no_grad():
        attn.q_proj.weight.mul_(10.0)
        attn.k_proj.weight.mul_(10.0)
        attn.q_proj.bias.mul_(10.0)
        attn.k_proj.bias.mul_(10.0)
    assert torch.allclose(attn(x, causal=True)[0], fast, atol=1e-4)
    plain = MultiHeadAttention(32, 4).eval()
    plain.load_state_dict(attn.state_dict())
    assert not torch.allclose(plain(x, causal=True)[0], fast, atol=1e-3)


def test_zero_init_projections_start_at_zero_so_every_block_starts_as_the_identity():
    torch.manual_seed(0)
    model = GPT(tiny(zero_init_proj=True)).eval()
    for block in model.blocks:
        assert torch.count_nonzero(block.attn.o_proj.weight) == 0
        assert torch.count_nonzero(block.mlp.down.weight) == 0
        assert torch.count_nonzero(block.attn.q_proj.weight) > 0  # only the output projections
    x = idx()
    embedded = model.tok_emb(x) + model.pos_emb(torch.arange(x.size(1)))  # (B, T, C)
    assert torch.allclose(model.hidden_states(x)[0], model.norm_f(embedded), atol=1e-6)
    plain = GPT(tiny()).eval()
    assert torch.count_nonzero(plain.blocks[0].attn.o_proj.weight) > 0


def test_untied_head_has_its_own_weight():
    torch.manual_seed(0)
    tied, untied = GPT(tiny()), GPT(tiny(tie_embeddings=False))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_params() - tied.num_params() == V * 32
    with torch.no_grad():
        untied.lm_head.weight.zero_()
    assert torch.count_nonzero(untied.tok_emb.weight) > 0


def test_value_embeddings_add_a_token_vector_to_the_values_and_nothing_else():
    plain, other = twin(value_embeddings=True)
    assert [tuple(e.weight.shape) for e in other.value_embs] == [(V, 32), (V, 32)]  # (V, H·D) per layer
    x = idx()
    assert not torch.allclose(other(x)[0], plain(x)[0], atol=1e-4)
    with torch.no_grad():
        for e in other.value_embs:
            e.weight.zero_()
    assert torch.equal(other(x)[0], plain(x)[0])
    assert other.num_params(non_embedding=True) == plain.num_params(non_embedding=True)


def test_x0_shortcut_scalars_start_at_one_and_a_tenth_and_at_one_and_zero_are_the_plain_model():
    plain, other = twin(x0_shortcut=True)
    assert other.resid_scales.tolist() == [1.0, 1.0]
    assert torch.allclose(other.x0_scales, torch.full((2,), 0.1))
    x = idx()
    assert not torch.allclose(other(x)[0], plain(x)[0], atol=1e-4)
    with torch.no_grad():
        other.x0_scales.zero_()
    assert torch.equal(other(x)[0], plain(x)[0])
    with torch.no_grad():
        other.resid_scales[1] = 0.0  # block 1 now reads only x0·0 = nothing of the residual stream
        other.x0_scales[1] = 1.0  # ... but the embedded input instead
    h = other.tok_emb(x) + other.pos_emb(torch.arange(x.size(1)))  # (B, T, C)
    want = other.norm_f(other.blocks[1](h, causal=True)[0])
    assert torch.allclose(other.hidden_states(x)[0], want, atol=1e-5)


def test_softcap_bounds_the_logits_and_is_tanh_of_the_plain_ones():
    plain, other = twin(logit_softcap=2.0)
    with torch.no_grad():
        for m in (plain, other):
            m.tok_emb.weight.mul_(50.0)  # raw logits far past the cap
    x = idx()
    raw, capped = plain(x)[0], other(x)[0]
    assert raw.abs().max() > 2.0
    assert capped.abs().max() <= 2.0  # tanh saturates to exactly ±1 in float32 past |x| ≈ 9
    assert torch.allclose(capped, 2.0 * torch.tanh(raw / 2.0), atol=1e-5)


# ------------------------------------------------------------------------------------------------ together
@pytest.mark.parametrize("option", [*OPTIONS, "all"])
def test_cached_decoding_equals_uncached_with_each_option(option):
    kw = OPTIONS if option == "all" else {option: OPTIONS[option]}
    torch.manual_seed(0)
    model = GPT(tiny(**kw)).eval()
    if kw.get("zero_init_proj"):  # at init every block is the identity: give the test something to compare
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    x = idx(T=12, B=1)
    full = model(x)[0]  # (1, T, V)
    cache = model.new_cache(1)
    steps = [model(x[:, :5], cache=cache)[0]] + [model(x[:, t : t + 1], cache=cache)[0] for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_a_saved_run_with_every_option_reloads_and_generates_identically(tmp_path):
    torch.manual_seed(0)
    model = GPT(tiny(**OPTIONS)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_run(tmp_path, model)
    loaded, cfg = load_model(tmp_path)
    assert cfg["model"] == dataclasses.asdict(model.config)
    assert type(loaded) is GPT and loaded.config == model.config
    x = idx()
    assert torch.equal(loaded(x)[0], model(x)[0])
    sampling = TokenSampling(temperature=1.0)

    def draw(m):
        return list(generate_ids(m, [1, 2, 3], 12, sampling, generator=torch.Generator().manual_seed(7)))

    assert draw(loaded) == draw(model)
