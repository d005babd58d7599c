"""The translation task's losses against plain references: the label-smoothed loss is PyTorch's
``F.cross_entropy(label_smoothing=ε)``, its NLL output is the ε = 0 loss, and the corpus loss is the mean
over every target token of a per-sentence loop (padding present)."""

import pytest
import torch
import torch.nn.functional as F

from qkv.data.translation import make_examples
from qkv.evaluation.translation import corpus_loss
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.training.losses import smoothed_loss

PAD, BOS, EOS = 0, 1, 2


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_smoothed_loss_is_torch_label_smoothing(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    targets = torch.randint(0, 11, (3, 7), generator=g)
    targets[0, 5:] = -100
    targets[2, 1:] = -100
    loss, nll, n = smoothed_loss(logits, targets, eps)
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, label_smoothing=eps)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100))
    assert n == int((targets != -100).sum()) == 7 + 5 + 1


def test_corpus_loss_is_the_token_mean_of_a_per_sentence_loop():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=13, max_seq_len=12, d_model=16, n_encoder_layers=1, n_decoder_layers=1,
                                  n_heads=2, dropout=0.0)).eval()
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(3, 13, (int(n),), generator=g).tolist() for n in torch.randint(1, 9, (9,), generator=g)]
    tgt = [torch.randint(3, 13, (int(n),), generator=g).tolist() for n in torch.randint(1, 9, (9,), generator=g)]
    ex = make_examples(src, tgt, 12, EOS)
    total, count = 0.0, 0
    with torch.no_grad():
        for s, t in zip(ex.src, ex.tgt, strict=True):  # one sentence at a time: no padding at all
            logits = model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.bool), torch.tensor([[BOS, *t]])).logits
            total += F.cross_entropy(logits[0], torch.tensor(t + [EOS]), reduction="sum").item()
            count += len(t) + 1
    loss, n = corpus_loss(model, ex, PAD, BOS, EOS)
    assert n == count
    assert loss == pytest.approx(total / count, rel=1e-5)
