"""Seq2Seq's layers against PyTorch's: forward pass and gradients, fp32, atol 1e-5.

- an encoder layer of `Seq2Seq` vs ``nn.TransformerEncoderLayer(norm_first=True, batch_first=True)`` with a
  source padding mask;
- a decoder layer (causal self-attention, cross-attention, MLP) vs ``nn.TransformerDecoderLayer`` with a
  causal target mask and a memory padding mask;
- the whole encoder and decoder stacks (with their final norms) vs ``nn.TransformerEncoder`` /
  ``nn.TransformerDecoder`` built from those layers.

Weights are copied from ours into torch's (torch packs Q, K, V into one ``in_proj_weight``). Torch's
boolean masks mean "may NOT attend", so ``~mask`` is passed. Norm gains and biases are randomised first so
a swapped norm would show.
"""

import pytest
import torch
from torch import nn

from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig

B, S, T, C, H, FF = 2, 6, 5, 24, 3, 40


@pytest.fixture
def model() -> Seq2Seq:
    torch.manual_seed(0)
    m = Seq2Seq(Seq2SeqConfig(vocab_size=17, max_seq_len=16, d_model=C, n_heads=H, d_ff=FF, n_encoder_layers=2,
                              n_decoder_layers=2, dropout=0.0, activation="relu"))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:  # biases and norm parameters: away from their 0/1 init
                p.normal_(0.0, 0.5)
    return m


def _copy_mha(ours, theirs):
    theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
    theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    theirs.out_proj.weight.copy_(ours.o_proj.weight)
    theirs.out_proj.bias.copy_(ours.o_proj.bias)


def _copy_norm(ours, theirs):
    theirs.weight.copy_(ours.weight)
    theirs.bias.copy_(ours.bias)


def _copy_mlp(ours, theirs):
    theirs.linear1.weight.copy_(ours.mlp.up.weight)
    theirs.linear1.bias.copy_(ours.mlp.up.bias)
    theirs.linear2.weight.copy_(ours.mlp.down.weight)
    theirs.linear2.bias.copy_(ours.mlp.down.bias)


@torch.no_grad()
def torch_encoder_layer(blk) -> nn.TransformerEncoderLayer:
    ref = nn.TransformerEncoderLayer(C, H, FF, dropout=0.0, activation="relu", batch_first=True, norm_first=True)
    _copy_mha(blk.attn, ref.self_attn)
    _copy_mlp(blk, ref)
    _copy_norm(blk.norm1, ref.norm1)
    _copy_norm(blk.norm2, ref.norm2)
    return ref


@torch.no_grad()
def torch_decoder_layer(blk) -> nn.TransformerDecoderLayer:
    """Torch's pre-norm decoder layer: norm1 -> self-attn, norm2 -> cross-attn, norm3 -> MLP."""
    ref = nn.TransformerDecoderLayer(C, H, FF, dropout=0.0, activation="relu", batch_first=True, norm_first=True)
    _copy_mha(blk.attn, ref.self_attn)
    _copy_mha(blk.cross_attn, ref.multihead_attn)
    _copy_mlp(blk, ref)
    _copy_norm(blk.norm1, ref.norm1)
    _copy_norm(blk.norm_cross, ref.norm2)
    _copy_norm(blk.norm2, ref.norm3)
    return ref


def _src_mask() -> torch.Tensor:
    """(B, S) True at real tokens: lengths 6 and 3, built by hand."""
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[0, :6] = True
    mask[1, :3] = True
    return mask


def _causal_blocked(t: int) -> torch.Tensor:
    """Torch's convention: True above the diagonal = may not attend."""
    return torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)


def test_encoder_layer_matches_torch(model, fwd_bwd_close):
    blk = model.encoder[0]
    ref = torch_encoder_layer(blk)
    mask = _src_mask()
    keep = mask[:, :, None].float()  # compare real positions only (torch zeroes padded rows in some paths)
    fwd_bwd_close(
        lambda x: blk(x, causal=False, key_mask=mask)[0] * keep,
        lambda x: ref(x, src_key_padding_mask=~mask) * keep,
        [torch.randn(B, S, C)],
        param_grads=lambda: [
            (blk.attn.q_proj.weight.grad, ref.self_attn.in_proj_weight.grad[:C]),
            (blk.attn.v_proj.bias.grad, ref.self_attn.in_proj_bias.grad[2 * C :]),
            (blk.mlp.up.weight.grad, ref.linear1.weight.grad),
            (blk.norm1.weight.grad, ref.norm1.weight.grad),
            (blk.norm2.bias.grad, ref.norm2.bias.grad),
        ],
    )


def test_decoder_layer_matches_torch(model, fwd_bwd_close):
    blk = model.decoder[0]
    ref = torch_decoder_layer(blk)
    mask = _src_mask()
    fwd_bwd_close(
        lambda x, mem: blk(x, causal=True, memory=mem, memory_mask=mask)[0],
        lambda x, mem: ref(x, mem, tgt_mask=_causal_blocked(T), memory_key_padding_mask=~mask),
        [torch.randn(B, T, C), torch.randn(B, S, C)],
        param_grads=lambda: [
            (blk.attn.k_proj.weight.grad, ref.self_attn.in_proj_weight.grad[C : 2 * C]),
            (blk.cross_attn.q_proj.weight.grad, ref.multihead_attn.in_proj_weight.grad[:C]),
            (blk.cross_attn.k_proj.weight.grad, ref.multihead_attn.in_proj_weight.grad[C : 2 * C]),
            (blk.cross_attn.o_proj.bias.grad, ref.multihead_attn.out_proj.bias.grad),
            (blk.norm_cross.weight.grad, ref.norm2.weight.grad),
            (blk.norm2.weight.grad, ref.norm3.weight.grad),
            (blk.mlp.down.weight.grad, ref.linear2.weight.grad),
        ],
    )


def test_decoder_layer_padded_memory_is_ignored(model):
    """Garbage in padded memory rows changes nothing (checked against torch's layer too)."""
    blk = model.decoder[1]
    ref = torch_decoder_layer(blk)
    mask = _src_mask()
    x, mem = torch.randn(B, T, C), torch.randn(B, S, C)
    mem2 = mem.clone()
    mem2[1, 3:] = 100.0
    with torch.no_grad():
        ours = blk(x, causal=True, memory=mem2, memory_mask=mask)[0]
        torch.testing.assert_close(ours, blk(x, causal=True, memory=mem, memory_mask=mask)[0])
        torch.testing.assert_close(
            ours, ref(x, mem2, tgt_mask=_causal_blocked(T), memory_key_padding_mask=~mask), atol=1e-5, rtol=1e-5
        )


def test_encoder_and_decoder_stacks_match_torch(model, fwd_bwd_close):
    """Embeddings aside, `encode` and `decode` are torch's TransformerEncoder/Decoder with a final norm."""
    enc = nn.TransformerEncoder(torch_encoder_layer(model.encoder[0]), 2, norm=nn.LayerNorm(C),
                                enable_nested_tensor=False)
    dec = nn.TransformerDecoder(torch_decoder_layer(model.decoder[0]), 2, norm=nn.LayerNorm(C))
    with torch.no_grad():
        enc.layers[1] = torch_encoder_layer(model.encoder[1])
        dec.layers[1] = torch_decoder_layer(model.decoder[1])
        _copy_norm(model.enc_norm, enc.norm)
        _copy_norm(model.dec_norm, dec.norm)
    mask = _src_mask()
    keep = mask[:, :, None].float()

    def ours(x_src, x_tgt):
        mem = x_src
        for blk in model.encoder:
            mem = blk(mem, causal=False, key_mask=mask)[0]
        mem = model.enc_norm(mem)
        y = x_tgt
        for blk in model.decoder:
            y = blk(y, causal=True, memory=mem, memory_mask=mask)[0]
        return mem * keep, model.dec_norm(y)

    def theirs(x_src, x_tgt):
        mem = enc(x_src, src_key_padding_mask=~mask)
        y = dec(x_tgt, mem, tgt_mask=_causal_blocked(T), memory_key_padding_mask=~mask)
        return mem * keep, y

    fwd_bwd_close(ours, theirs, [torch.randn(B, S, C), torch.randn(B, T, C)],
                  param_grads=lambda: [(model.enc_norm.weight.grad, enc.norm.weight.grad),
                                       (model.decoder[1].cross_attn.v_proj.weight.grad,
                                        dec.layers[1].multihead_attn.in_proj_weight.grad[2 * C :])])


def test_model_encode_decode_use_the_stacks(model):
    """`Seq2Seq.encode/decode` = embedding·√C + sinusoidal positions, then exactly the stacks above."""
    from qkv.nn.positional import sinusoidal_table

    mask = _src_mask()
    src = torch.randint(3, 17, (B, S)).masked_fill(~mask, 0)
    tgt = torch.randint(3, 17, (B, T))
    pe = sinusoidal_table(16, C)
    x = model.src_emb(src) * C**0.5 + pe[:S]
    for blk in model.encoder:
        x = blk(x, causal=False, key_mask=mask)[0]
    mem = model.enc_norm(x)
    y = model.tgt_emb(tgt) * C**0.5 + pe[:T]
    for blk in model.decoder:
        y = blk(y, causal=True, memory=mem, memory_mask=mask)[0]
    logits = model.dec_norm(y) @ model.src_emb.weight.T
    with torch.no_grad():
        torch.testing.assert_close(model.encode(src, mask), mem)
        torch.testing.assert_close(model(src, mask, tgt)[0], logits)
