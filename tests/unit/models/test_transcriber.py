"""The transcriber: shapes, the padding invariant (a recording alone == in a padded batch), cached == uncached
decoding, the CTC head, and config errors."""

import pytest
import torch

from qkv.data.transcribing import collate
from qkv.models.transcriber import Transcriber, TranscriberConfig, states_of


def small(**kw) -> Transcriber:
    torch.manual_seed(0)
    cfg = dict(vocab_size=20, d_model=32, n_heads=2, n_encoder_layers=2, n_decoder_layers=1, dropout=0.0,
               max_frames=400, max_seq_len=16)
    return Transcriber(TranscriberConfig(**(cfg | kw))).eval()


def test_the_stem_halves_the_frame_rate():
    m = small()
    for frames in (2, 3, 50, 51):
        mel = torch.randn(2, 80, frames)
        assert m.encode(mel).shape == (2, states_of(frames), 32)
        assert states_of(frames) == (frames + 1) // 2


def test_a_recording_gives_the_same_states_and_logits_alone_and_in_a_padded_batch():
    m = small()
    g = torch.Generator().manual_seed(1)
    mels = [torch.randn(80, n, generator=g) for n in (37, 120, 64)]
    batch = collate(mels)
    mask = m.memory_mask(batch["frames"], batch["mel"].size(-1))
    tgt = torch.randint(3, 20, (3, 5), generator=g)
    together = m(batch["mel"], mask, tgt).logits
    for i, mel in enumerate(mels):
        alone = collate([mel])
        one = m(alone["mel"], m.memory_mask(alone["frames"], alone["mel"].size(-1)), tgt[i : i + 1]).logits
        torch.testing.assert_close(together[i : i + 1], one, atol=1e-5, rtol=1e-5)


def test_padding_would_leak_without_the_stem_mask():
    """The invariant above is not free: feeding the padded batch without its mask changes the short row."""
    m = small()
    mels = [torch.randn(80, 40), torch.randn(80, 120)]
    batch = collate(mels)
    alone = collate(mels[:1])
    full = m.encode(batch["mel"])[0, : states_of(40)]  # no mask: every state counts as real
    ref = m.encode(alone["mel"])[0]
    assert (full - ref).abs().max() > 1e-4


def test_cached_decoding_equals_the_teacher_forced_pass():
    m = small()
    mel = torch.randn(1, 80, 60)
    mask = m.source_mask(mel)
    tgt = torch.randint(3, 20, (1, 6))
    full = m(mel, mask, tgt).logits
    memory = m.encode(mel, mask)
    cache = m.new_cache(1)
    steps = [m.decode(memory, mask, tgt[:, t : t + 1], cache) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_the_ctc_head_reads_every_encoder_state_and_uses_every_parameter():
    m = small(head="ctc", n_decoder_layers=0)
    mel = torch.randn(2, 80, 30)
    logits = m(mel, m.source_mask(mel)).logits
    assert logits.shape == (2, 15, 20)
    logits.sum().backward()
    unused = [n for n, p in m.named_parameters() if p.grad is None]
    assert unused == []  # DDP needs every parameter in the graph


def test_joint_ctc_attention_reads_both_heads_from_one_pass():
    """encoder_ctc=True: the decoder's logits are the plain forward's, and the CTC logits are the encoder states
    through the decoder's norm and output layer (every parameter gets a gradient from the joint loss)."""
    m = small()
    g = torch.Generator().manual_seed(2)
    batch = collate([torch.randn(80, n, generator=g) for n in (30, 52)])
    mask = m.memory_mask(batch["frames"], batch["mel"].size(-1))
    tgt = torch.randint(3, 20, (2, 5), generator=g)
    out = m(batch["mel"], mask, tgt, encoder_ctc=True)
    torch.testing.assert_close(out.logits, m(batch["mel"], mask, tgt).logits, atol=0, rtol=0)
    torch.testing.assert_close(out.ctc_logits, m.lm_head(m.dec_norm(m.encode(batch["mel"], mask))), atol=0, rtol=0)
    assert out.ctc_logits.shape == (2, 26, 20)
    (out.logits.sum() + out.ctc_logits.sum()).backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("kw, needle", [
    (dict(head="ctc"), "n_decoder_layers = 0"),
    (dict(head="ctc", n_decoder_layers=0, tie_embeddings=False), "tie_embeddings"),
    (dict(head="rnn"), "unknown head"),
    (dict(n_decoder_layers=0), "n_decoder_layers must be positive"),
    (dict(max_frames=0), "max_frames"),
])
def test_config_mistakes_are_named(kw, needle):
    with pytest.raises(ValueError, match=needle):
        TranscriberConfig(**kw)


def test_too_many_frames_or_the_wrong_mel_bins_are_refused():
    m = small()
    with pytest.raises(ValueError, match="longer than"):
        m.encode(torch.randn(1, 80, 401))
    with pytest.raises(ValueError, match="mel bins"):
        m.encode(torch.randn(1, 40, 10))
