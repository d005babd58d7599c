"""Attention maps for plots: cross-attention alignments of a translation and GPT self-attention."""

import pytest
import torch

from qkv.errors import QKVError
from qkv.evaluation.attention import gpt_self_attention, plot_attention, seq2seq_alignment
from qkv.generation.seq2seq import SequenceDecoding
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.tokenizers import train_bpe, train_char


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(["Ein Mann fährt Fahrrad.", "A man rides a bike."] * 20, vocab_size=300)


def test_alignment_has_one_row_per_produced_token(bpe, tmp_path):
    torch.manual_seed(0)
    m = Seq2Seq(Seq2SeqConfig(vocab_size=bpe.vocab_size, max_seq_len=32, d_model=32, n_heads=4,
                              n_encoder_layers=1, n_decoder_layers=2, dropout=0.0)).eval()
    cfg = SequenceDecoding(beam=2, max_len_a=0.0, max_len_b=6)
    amap = seq2seq_alignment(m, bpe, bpe, "Ein Mann fährt Fahrrad.", cfg, layer=0, head=None)
    src_ids = bpe.encode("Ein Mann fährt Fahrrad.")
    assert len(amap.cols) == len(src_ids) + 1 and amap.cols[-1] == "<eos>"
    assert amap.weights.shape == (len(amap.rows), len(amap.cols))
    torch.testing.assert_close(amap.weights.sum(-1), torch.ones(len(amap.rows)))
    assert "decoder layer 0" in amap.title and "mean over heads" in amap.title
    head = seq2seq_alignment(m, bpe, bpe, "Ein Mann fährt Fahrrad.", cfg, layer=-1, head=3)
    assert "decoder layer 1" in head.title and "head 3" in head.title
    out = plot_attention(amap, tmp_path / "a.png")
    from PIL import Image

    with Image.open(out) as im:  # a real picture: PNG, a plausible size, more than one colour
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 150
        assert len(set(im.convert("L").tobytes())) > 2
    with pytest.raises(QKVError, match="layer 2 is out of range"):
        seq2seq_alignment(m, bpe, bpe, "Ein Mann", cfg, layer=2)
    with pytest.raises(QKVError, match="head 4 is out of range"):
        seq2seq_alignment(m, bpe, bpe, "Ein Mann", cfg, head=4)
    with pytest.raises(QKVError, match="empty"):
        seq2seq_alignment(m, bpe, bpe, "  ", cfg)


def test_gpt_self_attention_is_the_chosen_layer_and_head():
    """The map is exactly layer 1, head 0 of the model's own attention weights (not another layer or head),
    causal, with rows that are distributions; the head mean is the mean of the heads."""
    tok = train_char("hello world")
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)  # layers and heads that differ visibly
    amap = gpt_self_attention(m, tok, "hello", layer=1, head=0)
    assert amap.weights.shape == (5, 5) and amap.rows == list("hello")
    with torch.no_grad():
        maps = m.attention_maps(torch.tensor([tok.encode("hello")]))  # n_layers × (1, H, T, T)
    torch.testing.assert_close(amap.weights, maps[1][0, 0])
    assert not torch.allclose(maps[1][0, 0], maps[0][0, 0]) and not torch.allclose(maps[1][0, 0], maps[1][0, 1])
    assert torch.all(amap.weights.triu(1) == 0)
    torch.testing.assert_close(amap.weights.sum(-1), torch.ones(5))
    mean = gpt_self_attention(m, tok, "hello", layer=-1)
    torch.testing.assert_close(mean.weights, maps[1][0].mean(0))
    with pytest.raises(QKVError, match="context"):
        gpt_self_attention(m, tok, "hello world hello world")


def test_token_labels_are_printable_and_one_line():
    from qkv.evaluation.attention import token_label

    tok = train_char("a b\n\t\r\x07")
    labels = {tok.id_to_token(i): token_label(tok, i) for i in range(tok.vocab_size)}
    assert labels[" "] == "▁" and labels["\n"] == "⏎" and labels["\t"] == "⇥" and labels["\r"] == "␍"
    assert labels["\x07"] == "\\x07"
    assert all(s.isprintable() for s in labels.values())
