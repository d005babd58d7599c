"""GPT: config validation, causality, KV-cache decoding, loss masking, dropout, and overfitting one batch."""

import pytest
import torch
import torch.nn.functional as F

from qkv.models import GPT, GPTConfig

V, T_MAX = 16, 16


def tiny(**overrides) -> GPTConfig:
    kwargs = dict(vocab_size=V, max_seq_len=T_MAX, d_model=32, n_layers=2, n_heads=4)
    kwargs.update(overrides)
    return GPTConfig(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# config validation


def test_d_model_not_divisible_by_n_heads_raises():
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by n_heads \(4\)"):
        tiny(d_model=30)


def test_explicit_d_head_lifts_divisibility_requirement():
    model = GPT(tiny(d_model=30, d_head=8))
    assert model.blocks[0].attn.q_proj.out_features == 4 * 8
    logits, _ = model(torch.randint(0, V, (1, 5)))
    assert logits.shape == (1, 5, V)


@pytest.mark.parametrize(
    "field", ["vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "d_head", "d_ff"]
)
@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_sizes_raise(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value})


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_dropout_out_of_range_raises(dropout):
    with pytest.raises(ValueError, match="dropout"):
        tiny(dropout=dropout)


@pytest.mark.parametrize(
    "field,value", [("pos_encoding", "alibi"), ("activation", "silu"), ("norm", "batchnorm")]
)
def test_unknown_option_strings_raise(field, value):
    # before the fix, pos_encoding="alibi" built a position-blind model and activation="silu" ran GELU
    with pytest.raises(ValueError, match=f"unknown {field} '{value}'"):
        tiny(**{field: value})


def test_rope_needs_even_head_dim():
    with pytest.raises(ValueError, match="even head dim"):
        tiny(d_model=36, n_heads=4, pos_encoding="rope")  # head dim 9


def test_tie_weights_shares_storage():
    tied = GPT(tiny(tie_embeddings=True))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert tied.lm_head.weight.data_ptr() == tied.tok_emb.weight.data_ptr()
    untied = GPT(tiny(tie_embeddings=False))
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    assert untied.num_params() - tied.num_params() == V * 32  # the shared matrix is counted once


def test_tied_weights_get_gradient_from_both_uses():
    model = GPT(tiny())
    idx = torch.randint(0, V, (2, 6))
    _, loss = model(idx, idx)
    loss.backward()
    unused = torch.ones(V, dtype=torch.bool)
    unused[idx.unique()] = False
    # rows of tokens that never appear as inputs still get a gradient, through lm_head
    assert unused.any() and (model.tok_emb.weight.grad[unused].abs().sum(-1) > 0).all()


# ---------------------------------------------------------------------------------------------------------
# forward contract


def test_sequence_longer_than_context_raises():
    model = GPT(tiny())
    model(torch.randint(0, V, (1, T_MAX)))  # exactly the context length is fine
    with pytest.raises(ValueError, match=rf"{T_MAX + 1}.*{T_MAX}"):
        model(torch.randint(0, V, (1, T_MAX + 1)))
    cache = model.new_cache(1)
    model(torch.randint(0, V, (1, 10)), cache=cache)
    with pytest.raises(ValueError, match=rf"{T_MAX + 1}.*{T_MAX}"):
        model(torch.randint(0, V, (1, 7)), cache=cache)  # 10 cached + 7 new


def test_loss_ignores_minus_100_targets():
    model = GPT(tiny())
    idx, targets = torch.randint(0, V, (3, 8)), torch.randint(0, V, (3, 8))
    targets[0, :3] = -100
    targets[2, 5:] = -100
    logits, loss = model(idx, targets)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])  # mean over the 19 remaining positions only
    torch.testing.assert_close(loss, expected)
    # and the ignored positions contribute no gradient to their logits
    logits.retain_grad()
    loss.backward()
    assert (logits.grad[~keep] == 0).all() and (logits.grad[keep] != 0).any()


def test_last_only_is_the_last_row():
    model = GPT(tiny())
    idx = torch.randint(0, V, (2, 7))
    full, _ = model(idx)
    last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, V)
    torch.testing.assert_close(last, full[:, -1:])


def test_attention_maps_are_causal_distributions_and_do_not_change_hidden_states():
    model = GPT(tiny()).eval()
    idx = torch.randint(0, V, (2, 6))
    maps = model.attention_maps(idx)
    assert len(maps) == 2 and all(m.shape == (2, 4, 6, 6) for m in maps)
    for m in maps:
        assert (m.triu(diagonal=1) == 0).all()
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 4, 6))
    with_maps, _ = model.hidden_states(idx, need_weights=True)
    without, _ = model.hidden_states(idx)
    torch.testing.assert_close(with_maps, without, atol=1e-5, rtol=1e-5)


def test_dropout_is_random_in_train_mode_and_off_in_eval():
    model = GPT(tiny(dropout=0.2))
    idx = torch.randint(0, V, (2, 8))
    model.train()
    a, _ = model(idx)
    b, _ = model(idx)
    assert not torch.allclose(a, b)
    model.eval()
    c, _ = model(idx)
    d, _ = model(idx)
    assert torch.equal(c, d)
    no_dropout = GPT(tiny(dropout=0.0)).eval()
    no_dropout.load_state_dict(model.state_dict())
    torch.testing.assert_close(no_dropout(idx)[0], c)


# ---------------------------------------------------------------------------------------------------------
# causality


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_logits_at_i_do_not_see_tokens_after_i(pos_encoding):
    model = GPT(tiny(pos_encoding=pos_encoding)).eval()
    T = 8
    idx = torch.randint(0, V, (2, T))
    logits, _ = model(idx)
    for j in range(T):
        changed = idx.clone()
        changed[:, j] = (idx[:, j] + 1 + torch.randint(0, V - 1, (2,))) % V  # a different token at j
        new_logits, _ = model(changed)
        torch.testing.assert_close(new_logits[:, :j], logits[:, :j], atol=1e-5, rtol=1e-5)  # every i < j
        assert not torch.allclose(new_logits[:, j], logits[:, j], atol=1e-4)  # position j itself does see it


# ---------------------------------------------------------------------------------------------------------
# KV cache


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope", "none"])
def test_cache_prefill_then_single_steps_equal_full_forward(pos_encoding):
    model = GPT(tiny(pos_encoding=pos_encoding)).eval()
    B, T, k = 2, 12, 5
    idx = torch.randint(0, V, (B, T))
    full, _ = model(idx)
    cache = model.new_cache(B)
    with torch.no_grad():
        steps = [model(idx[:, :k], cache=cache)[0]]  # prefill: (B, k, V)
        for t in range(k, T):
            steps.append(model(idx[:, t : t + 1], cache=cache)[0])  # one token: (B, 1, V)
    assert cache.length == T
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope"])
def test_cache_multi_token_chunks_equal_full_forward(pos_encoding):
    """Chunks of several tokens after a prefill use the offset (bottom-right) causal mask."""
    model = GPT(tiny(pos_encoding=pos_encoding)).eval()
    B, T = 2, 14
    idx = torch.randint(0, V, (B, T))
    full, _ = model(idx)
    cache = model.new_cache(B, max_len=T)
    with torch.no_grad():
        pieces = [model(idx[:, s:e], cache=cache)[0] for s, e in [(0, 4), (4, 9), (9, 10), (10, 14)]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_last_only_decoding_matches_full_forward():
    model = GPT(tiny(pos_encoding="rope")).eval()
    idx = torch.randint(0, V, (1, 9))
    full, _ = model(idx)
    cache = model.new_cache(1)
    with torch.no_grad():
        model(idx[:, :6], cache=cache, last_only=True)
        for t in range(6, 9):
            last, _ = model(idx[:, t : t + 1], cache=cache, last_only=True)
            torch.testing.assert_close(last[:, 0], full[:, t], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# training


def test_tiny_gpt_overfits_one_batch():
    # measured: final loss 0.0160 (seed 0; 0.0157 / 0.0137 with seeds 1 / 2), ~0.4 s on a 2-core CPU;
    # threshold 0.05 leaves a 3x margin. Re-measure: run this test body with the loss printed.
    model = GPT(tiny())
    data = torch.randint(0, V, (2, T_MAX + 1))
    x, y = data[:, :-1], data[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    _, first = model(x, y)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first.item() > 2.0  # starts near ln(16) = 2.77
    assert loss.item() < 0.05, f"did not overfit one batch: loss {loss.item():.4f}"
