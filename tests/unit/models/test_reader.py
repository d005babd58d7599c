"""The reader: both heads from one encoder pass equal each head alone, a passage's span logits are the same alone
and in a padded batch, and a loss on both heads trains every parameter (DDP's condition)."""

import torch

from qkv.models.reader import Reader, ReaderConfig, ReaderOutput


def small() -> Reader:
    torch.manual_seed(0)
    return Reader(ReaderConfig(vocab_size=30, d_model=32, n_heads=2, n_encoder_layers=2, n_decoder_layers=1,
                               dropout=0.0, max_seq_len=40)).eval()


def test_both_heads_from_one_pass_equal_each_head_alone():
    m = small()
    src, tgt = torch.randint(1, 30, (3, 20)), torch.randint(1, 30, (3, 5))
    out = m(src, None, tgt, spans=True)
    assert isinstance(out, ReaderOutput) and out.start_logits.shape == out.end_logits.shape == (3, 20)
    torch.testing.assert_close(out.logits, m(src, None, tgt).logits)
    start, end = m.span_logits(m.encode(src))
    torch.testing.assert_close(out.start_logits, start)
    torch.testing.assert_close(out.end_logits, end)
    w, b = m.span_head.weight, m.span_head.bias  # the head by hand: one linear map per position
    torch.testing.assert_close(out.start_logits, m.encode(src) @ w[0] + b[0])


def test_span_logits_are_the_same_alone_and_in_a_padded_batch():
    m = small()
    short, long = torch.randint(1, 30, (1, 12)), torch.randint(1, 30, (1, 20))
    batch = torch.zeros(2, 20, dtype=torch.long)
    batch[0, :12], batch[1] = short[0], long[0]
    mask = batch != 0
    start, end = m.span_logits(m.encode(batch, mask))
    alone_start, alone_end = m.span_logits(m.encode(short))
    torch.testing.assert_close(start[0, :12], alone_start[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(end[0, :12], alone_end[0], atol=1e-5, rtol=1e-5)


def test_a_loss_on_both_heads_trains_every_parameter():
    m = small().train()
    src, tgt = torch.randint(1, 30, (2, 16)), torch.randint(1, 30, (2, 4))
    out = m(src, None, tgt, spans=True)
    (out.logits.sum() + out.start_logits.sum() + out.end_logits.sum()).backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
